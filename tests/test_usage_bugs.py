"""Mistakes a user makes, each answered with a line that helps: a misspelt override names
the field and the likely spelling; the 'not prepared' advice names the folder TFDS searched
(TFDS_DATA_DIR when set), so following it fixes the run."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(args, cwd, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_misspelt_override_is_one_readable_line(tmp_path):
    r = _main([f"--config={ROOT}/configs/simclr_augself.py:shapes", "--workdir=run",
               "--config.optimiser.base_lr=0.1"], cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("config error: config.optimiser: no such field; did you mean "
                                "'optimizer'?"), lines[-1]
    assert "\\n" not in lines[-1] and "\\'" not in lines[-1]
    assert not (tmp_path / "run").exists()


def test_a_misspelt_nested_override_names_its_section(tmp_path):
    r = _main([f"--config={ROOT}/configs/simclr_augself.py:shapes", "--workdir=run",
               "--config.optimizer.bse_lr=0.1"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        "config error: config.optimizer.bse_lr: no such field; did you mean 'base_lr'?")


def test_not_prepared_advice_names_the_tfds_data_dir_it_searched(tmp_path):
    data_dir = tmp_path / "tfds_here"
    data_dir.mkdir()
    r = _main([f"--config={ROOT}/configs/simclr_augself.py:stl10", "--workdir=run"],
              cwd=tmp_path, env={"TFDS_DATA_DIR": str(data_dir)})
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("config error: data.dataset: TFDS dataset 'stl10'"), line
    assert f"not prepared in {data_dir};" in line and f"--data_dir={data_dir} " in line
    assert "~/tensorflow_datasets" not in line

"""Each launch script's dry run prints the commands it would run; check them."""

import os
import shlex
import subprocess

import pytest

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")


def dry_run(script: str, *args: str, env: dict | None = None) -> list[list[str]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full_env.update(env or {})
    out = subprocess.run(["bash", os.path.join(LAUNCH, script), "--dry_run", *args],
                         capture_output=True, text=True, env=full_env, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("+ ")]
    assert lines, out
    return [shlex.split(line[2:]) for line in lines]


def test_tpu_vm_all_steps():
    cmds = dry_run("tpu_vm.sh", "--name=pod", "--zone=europe-west4-a", "--accelerator=v4-32",
                   "--bucket=gs://bkt", "--config=configs/moco_augself.py:imagenet100",
                   "--override=--config.optimizer.name=lars", "all")
    # Without --repo the checkout itself is archived and copied to every worker.
    assert ["git", "archive", "--format=tar.gz", "-o", "augself_jax.tar.gz", "HEAD"] in cmds
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert [c[4] for c in gcloud] == ["create", "scp", "ssh", "ssh", "ssh", "ssh", "scp",
                                      "delete"]
    create = gcloud[0]
    assert "--accelerator-type=v4-32" in create and "--zone=europe-west4-a" in create
    assert create[5] == "pod"
    ship, unpack, install, train, evaluate = gcloud[1:6]
    for c in (ship, unpack, install, train, evaluate):
        assert "--worker=all" in c
    assert ship[5:7] == ["augself_jax.tar.gz", "pod:~/"]
    assert "tar -xzf augself_jax.tar.gz" in unpack[-1]
    assert "pip install" in install[-1] and "requirements.txt" in install[-1]
    train_cmd = train[-1].removeprefix("--command=")
    assert "AUGSELF_DISTRIBUTED=1" in train_cmd
    inner = shlex.split(train_cmd.split("&&", 1)[1].split("2>&1")[0])
    assert inner[2:] == ["main.py", "--config=configs/moco_augself.py:imagenet100",
                         "--workdir=gs://bkt/runs/pod", "--config.optimizer.name=lars"]
    assert "evaluate.py" in evaluate[-1] and "--workdir=gs://bkt/runs/pod" in evaluate[-1]
    assert "--worker=0" in gcloud[6] and gcloud[6][5:7] == ["pod:~/train.log", "pod:~/evaluate.log"]
    assert "--quiet" in gcloud[7]


def test_tpu_vm_install_from_a_repository():
    cmds = dry_run("tpu_vm.sh", "--name=v", "--bucket=gs://b", "--repo=https://example.org/a.git",
                   "install")
    assert len(cmds) == 2 and all(c[4] == "ssh" and "--worker=all" in c for c in cmds)
    assert "git clone https://example.org/a.git augself_jax" in cmds[0][-1]
    assert "pip install" in cmds[1][-1]


def test_tpu_vm_single_step_needs_a_workdir():
    cmds = dry_run("tpu_vm.sh", "--workdir=gs://b/x", "delete")
    assert len(cmds) == 1 and cmds[0][4] == "delete"
    failed = subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "--dry_run", "train"],
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "--bucket" in failed.stderr


def test_gpu_single_node():
    cmds = dry_run("gpu_single_node.sh", "--gpus=0,1,2,3", "--config=configs/byol_augself.py",
                   "--workdir=/runs/b", "--", "--config.seed=3", env={"PYTHON": "py"})
    assert len(cmds) == 2
    for cmd, binary in zip(cmds, ("main.py", "evaluate.py"), strict=True):
        assert cmd[0] == "env" and "CUDA_VISIBLE_DEVICES=0,1,2,3" in cmd
        i = cmd.index("py")
        assert cmd[i + 1:] == [binary, "--config=configs/byol_augself.py", "--workdir=/runs/b",
                               "--config.seed=3"]
    assert len(dry_run("gpu_single_node.sh", "--no_eval")) == 1


def test_slurm_submits_then_runs_srun():
    submit = dry_run("slurm_multinode.sh", "--nodes=4", "--gpus_per_node=8", "--partition=gpu")
    assert len(submit) == 1 and submit[0][0] == "sbatch"
    assert {"--nodes=4", "--gpus-per-node=8", "--ntasks-per-node=1", "--partition=gpu"} <= set(
        submit[0])
    assert submit[0][-5].endswith("slurm_multinode.sh")  # resubmits itself with its flags
    assert submit[0][-4:] == ["--dry_run", "--nodes=4", "--gpus_per_node=8", "--partition=gpu"]
    inside = dry_run("slurm_multinode.sh", "--nodes=4", "--workdir=/w",
                     env={"SLURM_JOB_ID": "7", "PYTHON": "py"})
    assert [c[0] for c in inside] == ["srun", "srun"]
    for cmd, binary in zip(inside, ("main.py", "evaluate.py"), strict=True):
        assert "--nodes=4" in cmd and "AUGSELF_DISTRIBUTED=1" in cmd
        assert cmd[cmd.index("py") + 1:cmd.index("py") + 2] == [binary] and "--workdir=/w" in cmd


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_local_multiprocess(platform):
    cmds = dry_run("local_multiprocess.sh", "--num_processes=3", "--port=5555",
                   f"--platform={platform}", "--workdir=/tmp/w", "--", "--config.total_steps=4",
                   env={"PYTHON": "py"})
    assert cmds[0] == ["mkdir", "-p", "/tmp/w"]
    procs = cmds[1:]
    assert len(procs) == 3
    for i, cmd in enumerate(procs):
        tail = cmd[cmd.index("py") + 1:]
        assert tail == ["main.py", "--config=configs/simclr_augself.py:shapes", "--workdir=/tmp/w",
                        "--distributed", "--coordinator_address=localhost:5555",
                        "--num_processes=3", f"--process_id={i}", "--config.total_steps=4"]
        if platform == "cpu":
            assert "JAX_PLATFORMS=cpu" in cmd
        else:
            assert f"CUDA_VISIBLE_DEVICES={i}" in cmd

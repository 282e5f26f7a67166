"""The launch scripts, run the way a user and the cluster run them: from a temporary copy of
the checkout (a git repository of its own), from the checkout root, from launch/ and from
outside it, with the README's arguments and relative workdirs. Dry runs print the commands;
the Cloud TPU flow also runs for real against a fake `gcloud` that records its calls; SLURM's
batch step runs from a spool-like copy of the script, as SLURM itself runs it."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Cloud TPU docs (runtime versions; regions and zones): per generation, the runtime whose
# Python the worker script upgrades, and a zone that has that generation.
TPU_GENERATIONS = {"v4-32": ("tpu-ubuntu2204-base", "us-central2-b"),
                   "v5litepod-16": ("v2-alpha-tpuv5-lite", "us-west4-a"),
                   "v5p-32": ("v2-alpha-tpuv5", "us-east5-a"),
                   "v6e-16": ("v2-alpha-tpuv6e", "us-east5-b")}

# Records every call (one line each); `scp` lists the archive it ships; `ssh` fails while the
# command matches the regex FAKE_SSH_FAIL and fewer than FAKE_SSH_FAILURES failures were made;
# `describe` answers FAKE_TPU_STATE (node) or FAKE_QUEUED_STATE (queued resource).
FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "$*" >> "${FAKE_LOG}"
case "$*" in
  *" scp "*)
    for a in "$@"; do if [[ -f "${a}" ]]; then tar -tzf "${a}" > "${FAKE_LOG}.shipped"; fi; done ;;
  *" ssh "*)
    if [[ -n "${FAKE_SSH_FAIL:-}" && "$*" =~ ${FAKE_SSH_FAIL} ]]; then
      n=$(cat "${FAKE_LOG}.failures" 2>/dev/null || echo 0)
      if (( n < ${FAKE_SSH_FAILURES:-1} )); then
        echo $((n + 1)) > "${FAKE_LOG}.failures"; exit 1
      fi
    fi ;;
  *"queued-resources describe"*) echo "${FAKE_QUEUED_STATE:-ACTIVE}" ;;
  *" describe "*) echo "${FAKE_TPU_STATE:-READY}" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout's launch scripts and requirements, committed to its own repo."""
    root = tmp_path_factory.mktemp("checkout") / "augself_jax"
    shutil.copytree(REPO / "launch", root / "launch")
    shutil.copy(REPO / "requirements.txt", root / "requirements.txt")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *args], cwd=root, check=True)
    return root


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(extra)
    return env


def launch(cwd: Path, script: str, *args: str, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", script, *args], cwd=cwd, capture_output=True, text=True,
                          env=env or environment(), timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def commands(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("+ ")]
    assert lines, stdout
    return [shlex.split(line[2:]) for line in lines]


def remote(cmd: list[str]) -> str:
    """The command string an ssh line runs on the workers."""
    (command,) = [a.removeprefix("--command=") for a in cmd if a.startswith("--command=")]
    return command


def user_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0]


def readme_examples(script: str) -> list[list[str]]:
    """The arguments of every README example of launch/<script>, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Scale"):text.index("## Transfer evaluation")]
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == f"launch/{script}":
                examples.append(words[1:])
    assert examples, f"no launch/{script} example in the README's scale section"
    return examples


def readme_arguments(script: str) -> list[str]:
    """The arguments of the README's worked example (the first) for launch/<script>."""
    return readme_examples(script)[0]


@pytest.mark.parametrize("script", ["tpu_vm.sh", "slurm_multinode.sh"])
def test_every_readme_example_dry_runs_with_its_config(checkout, script):
    # The worked examples are checked in depth below; here every other one (the ImageNet-1k
    # commands) must at least dry-run and hand its --config to the trainer.
    for args in readme_examples(script):
        out = launch(checkout, f"launch/{script}", "--dry_run", *args).stdout
        for config in (a for a in args if a.startswith("--config=")):
            assert config in out, (args, out)
    assert any(a.endswith(":imagenet1k") for args in readme_examples(script) for a in args)


# -- Cloud TPU: dry runs ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["root", "launch", "outside"])
def test_tpu_vm_readme_dry_run(checkout, tmp_path, where):
    cwd, script = {"root": (checkout, "launch/tpu_vm.sh"),
                   "launch": (checkout / "launch", "tpu_vm.sh"),
                   "outside": (tmp_path, str(checkout / "launch/tpu_vm.sh"))}[where]
    args = readme_arguments("tpu_vm.sh")
    assert args[-1] == "all"
    cmds = commands(launch(cwd, script, "--dry_run", *args).stdout)
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    create, describe = gcloud[0], gcloud[1]
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create",
                          "simclr-in100"]
    assert {"--node-id=simclr-in100", "--accelerator-type=v4-32", "--spot",
            "--runtime-version=tpu-ubuntu2204-base", "--zone=us-central2-b"} <= set(create)
    assert describe[4] == "describe"  # waits for the queued resource to become ACTIVE
    ssh = [c for c in gcloud if c[4] == "ssh"]
    assert len(ssh) == 4  # unpack, install, train, evaluate
    for c in ssh:
        assert "--worker=all" in c and "--zone=us-central2-b" in c
        # A failure anywhere in a remote pipeline is the command's failure.
        assert remote(c).startswith("set -euo pipefail; ")
    assert remote(ssh[1]).endswith("bash augself_jax/launch/tpu_worker.sh install")
    for c, job, binary in ((ssh[2], "train", "main.py"), (ssh[3], "evaluate", "evaluate.py")):
        words = shlex.split(remote(c).split("; ", 1)[1])
        assert words[:6] == ["bash", "augself_jax/launch/tpu_worker.sh", "run", job,
                             "gs://my-bucket/runs/simclr-in100/logs", binary]
        assert words[6:] == ["--config=configs/simclr_augself.py:imagenet100",
                             "--workdir=gs://my-bucket/runs/simclr-in100",
                             "--config.data.data_dir=gs://my-bucket/tensorflow_datasets"]
    copy = [c for c in gcloud if c[1] == "storage"]
    assert copy == [["gcloud", "storage", "cp", "gs://my-bucket/runs/simclr-in100/logs/*",
                     "runs/simclr-in100/logs/"]]
    assert gcloud[-1][3:6] == ["queued-resources", "delete", "simclr-in100"]
    assert "--force" in gcloud[-1] and "--quiet" in gcloud[-1]


@pytest.mark.parametrize("accelerator", sorted(TPU_GENERATIONS))
def test_tpu_vm_runtime_and_zone_per_generation(checkout, accelerator):
    version, zone = TPU_GENERATIONS[accelerator]
    (create,) = commands(launch(checkout, "launch/tpu_vm.sh", "--dry_run", "--bucket=gs://b",
                                f"--accelerator={accelerator}", "create").stdout)
    assert create[3:5] == ["tpu-vm", "create"]
    assert {f"--version={version}", f"--zone={zone}",
            f"--accelerator-type={accelerator}"} <= set(create)
    (create,) = commands(launch(checkout, "launch/tpu_vm.sh", "--dry_run", "--bucket=gs://b",
                                f"--accelerator={accelerator}", "--zone=europe-west4-a",
                                "--version=custom", "create").stdout)
    assert "--zone=europe-west4-a" in create and "--version=custom" in create


def test_tpu_vm_overrides_data_dir_and_repository(checkout):
    cmds = commands(launch(checkout, "launch/tpu_vm.sh", "--dry_run",
                           "--workdir=gs://b/exp/1", "--data_dir=gs://d/tfds",
                           "--repo=https://example.org/a.git",
                           "--override=--config.optimizer.name=lars", "install", "train").stdout)
    assert [c[4] for c in cmds] == ["ssh", "ssh", "ssh"]
    assert "git clone https://example.org/a.git augself_jax" in remote(cmds[0])
    words = shlex.split(remote(cmds[2]).split("; ", 1)[1])
    assert words[4:] == ["gs://b/exp/1/logs", "main.py",
                         "--config=configs/simclr_augself.py:imagenet100",
                         "--workdir=gs://b/exp/1", "--config.data.data_dir=gs://d/tfds",
                         "--config.optimizer.name=lars"]


def test_tpu_vm_user_errors(checkout):
    tpu = ("launch/tpu_vm.sh", "--dry_run")
    user_error(launch(checkout, *tpu, "train", check=False), "--bucket")
    user_error(launch(checkout, *tpu, "--bucket=gs://b", check=False), "no step")
    user_error(launch(checkout, *tpu, "--workdir=runs/x", "train", check=False), "gs://")
    user_error(launch(checkout, *tpu, "--bucket=gs://b", "--accelerator=v9-8", "create",
                      check=False), "--accelerator=v9-8")
    user_error(launch(checkout, *tpu, "--bucket=gs://b", "--max_restarts=x", "train",
                      check=False), "--max_restarts")


# -- Cloud TPU: the real flow against a fake gcloud ----------------------------------------
@pytest.fixture
def fake_gcloud(tmp_path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"
    env = environment(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log),
                      AUGSELF_POLL_S="0")
    return env, log


def calls(log: Path) -> list[str]:
    """Each gcloud call, shortened to its subcommand and the step it runs on the workers."""
    out = []
    for line in log.read_text().splitlines():
        words = line.split()
        name = " ".join(words[2:4]) if words[0] == "compute" else " ".join(words[:2])
        if "tpu_worker.sh" in line:  # install, run JOB or wait JOB
            step = line.split("tpu_worker.sh ")[1].split()
            name += " " + " ".join(step[:1] if step[0] == "install" else step[:2])
        out.append(name)
    return out


@pytest.mark.parametrize("where", ["root", "launch", "outside"])
def test_tpu_vm_ships_the_whole_checkout(checkout, tmp_path, fake_gcloud, where):
    env, log = fake_gcloud
    cwd, script = {"root": (checkout, "launch/tpu_vm.sh"),
                   "launch": (checkout / "launch", "tpu_vm.sh"),
                   "outside": (tmp_path, str(checkout / "launch/tpu_vm.sh"))}[where]
    launch(cwd, script, "--bucket=gs://b", "install", env=env)
    shipped = set((log.parent / "gcloud.log.shipped").read_text().split())
    assert {"requirements.txt", "launch/tpu_worker.sh", "launch/common.sh"} <= shipped
    assert calls(log) == ["tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh install"]
    assert not (checkout / "augself_jax.tar.gz").exists()


def test_tpu_vm_failed_training_fails_and_deletes_the_tpu_it_created(checkout, fake_gcloud):
    env, log = fake_gcloud
    env.update(FAKE_SSH_FAIL="tpu_worker.sh (run|wait) train", FAKE_SSH_FAILURES="9")
    done = launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "all", env=env,
                  check=False)
    assert done.returncode == 1 and "train failed" in done.stderr
    # The workers are asked (3 times) whether the job failed or only the connection did.
    reattach = ["tpu-vm ssh wait train", "tpu-vm describe"] * 3
    assert calls(log) == ["tpu-vm create", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh install",
                          "tpu-vm ssh run train", "tpu-vm describe", *reattach,
                          "tpu-vm describe", "tpu-vm delete"]
    # Without delete among the steps, the TPU is left for a look at what went wrong.
    log.unlink()
    (log.parent / "gcloud.log.failures").unlink()
    done = launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "create", "train", env=env,
                  check=False)
    assert done.returncode == 1
    assert calls(log) == ["tpu-vm create", "tpu-vm ssh run train", "tpu-vm describe",
                          *reattach, "tpu-vm describe"]


def test_tpu_vm_reattaches_after_a_dropped_connection(checkout, fake_gcloud):
    env, log = fake_gcloud
    env.update(FAKE_SSH_FAIL="tpu_worker.sh run train", FAKE_SSH_FAILURES="1")
    launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "train", "evaluate", env=env)
    assert calls(log) == ["tpu-vm ssh run train", "tpu-vm describe", "tpu-vm ssh wait train",
                          "tpu-vm ssh run evaluate"]


def test_tpu_vm_preempted_spot_tpu_is_recreated_and_training_rerun(checkout, fake_gcloud):
    env, log = fake_gcloud
    env.update(FAKE_SSH_FAIL="tpu_worker.sh run train", FAKE_SSH_FAILURES="1",
               FAKE_QUEUED_STATE="ACTIVE", FAKE_TPU_STATE="PREEMPTED")
    launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "--spot", "all", env=env)
    install = ["tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh install"]
    create = ["queued-resources create", "queued-resources describe"]
    assert calls(log) == [*create, *install, "tpu-vm ssh run train",
                          "queued-resources describe", "tpu-vm describe",
                          "queued-resources delete", *create, *install, "tpu-vm ssh run train",
                          "tpu-vm ssh run evaluate", "storage cp", "queued-resources delete"]


def test_tpu_vm_failed_queued_request_is_deleted(checkout, fake_gcloud):
    env, log = fake_gcloud
    env.update(FAKE_QUEUED_STATE="FAILED")
    done = launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "--spot", "all", env=env,
                  check=False)
    assert done.returncode == 2 and "error: queued resource augself is FAILED" in done.stderr
    assert calls(log) == ["queued-resources create", "queued-resources describe",
                          "queued-resources delete"]


def test_tpu_vm_gives_up_after_max_restarts(checkout, fake_gcloud):
    env, log = fake_gcloud
    env.update(FAKE_SSH_FAIL="tpu_worker.sh run train", FAKE_SSH_FAILURES="9",
               FAKE_TPU_STATE="PREEMPTED")
    done = launch(checkout, "launch/tpu_vm.sh", "--bucket=gs://b", "--max_restarts=1", "all",
                  env=env, check=False)
    assert done.returncode == 1 and "preempted 1 times" in done.stderr
    made = calls(log)
    assert made.count("tpu-vm create") == 2 and made.count("tpu-vm ssh run train") == 2
    assert made[-1] == "tpu-vm delete" and "tpu-vm ssh run evaluate" not in made


# -- Cloud TPU: the worker side -------------------------------------------------------------
def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
    (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("system_python_ok", [False, True])
def test_tpu_worker_install_gets_python_311(checkout, tmp_path, system_python_ok):
    # The runtimes' python3 is 3.10: the version check exits 1 there.
    fake_tool(tmp_path / "bin", "python3", f"exit {0 if system_python_ok else 1}")
    env = environment(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", HOME=str(tmp_path))
    cmds = commands(launch(checkout, "launch/tpu_worker.sh", "--dry_run", "install",
                           env=env).stdout)
    python = "python3" if system_python_ok else "python3.11"
    packages = ["python3-venv"] if system_python_ok else ["python3.11", "python3.11-venv"]
    jax_pin = [r for r in (REPO / "requirements.txt").read_text().split() if r.startswith("jax==")]
    venv = str(tmp_path / "venv")
    assert cmds == [
        ["sudo", "apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"],
        ["sudo", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o",
         "DPkg::Lock::Timeout=600", "install", "-y", "-q", *packages],
        [python, "-m", "venv", venv],
        [f"{venv}/bin/pip", "install", "-q", "-U", "pip"],
        [f"{venv}/bin/pip", "install", "-q", "-r", "requirements.txt",
         jax_pin[0].replace("jax==", "jax[tpu]==")]]


@pytest.fixture
def worker(checkout, tmp_path) -> tuple[dict[str, str], Path]:
    """HOME with a fake venv whose python records its session and waits for RELEASE, and a
    fake gcloud that records the log upload."""
    home = tmp_path / "home"
    fake_tool(home / "venv" / "bin", "python",
              'echo "session $(ps -o sid= -p $$ | tr -d " ") args $*"\n'
              'echo started >> "$HOME/starts"\n'
              'while [[ ! -e "$HOME/RELEASE" ]]; do sleep 0.05; done\n'
              'exit "$(cat "$HOME/RELEASE")"')
    fake_tool(tmp_path / "bin", "gcloud", 'echo "$*" >> "$HOME/gcloud.log"')
    env = environment(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", HOME=str(home),
                      AUGSELF_POLL_S="0.05")
    return env, home


WORKER_RUN = ("launch/tpu_worker.sh", "run", "train", "gs://b/runs/x/logs", "main.py",
              "--workdir=gs://b/runs/x")


@pytest.mark.parametrize("status", [0, 3])
def test_tpu_worker_run_reports_status_and_uploads_log(checkout, worker, status):
    env, home = worker
    (home / "RELEASE").write_text(str(status))
    done = launch(checkout, *WORKER_RUN, env=env, check=False)
    assert done.returncode == status, done.stdout + done.stderr
    log = (home / "train.log").read_text()
    assert "args main.py --workdir=gs://b/runs/x" in log
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert (home / "gcloud.log").read_text().split() == [
        "storage", "cp", str(home / "train.log"), f"gs://b/runs/x/logs/train_{host}.log"]
    # Reattaching to the finished run reports its status and starts nothing.
    again = launch(checkout, "launch/tpu_worker.sh", "wait", "train", env=env, check=False)
    assert again.returncode == status
    assert (home / "starts").read_text().split() == ["started"]
    never = launch(checkout, "launch/tpu_worker.sh", "wait", "evaluate", env=env, check=False)
    assert never.returncode == 1


def test_tpu_worker_run_outlives_its_ssh_session(checkout, worker):
    env, home = worker
    # SIGHUP's default action, as in an ssh session, even when the tests themselves run
    # under `nohup` (an ignored SIGHUP is inherited and would keep the session alive).
    first = subprocess.Popen(["bash", *WORKER_RUN], cwd=checkout, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    log = home / "train.log"
    deadline = time.time() + 20
    while "session" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGHUP)  # the ssh session ends: its whole session is hung up
    first.wait(timeout=10)
    assert int(log.read_text().split()[1]) != first.pid  # the job runs in a session of its own
    os.kill(int((home / "train.pid").read_text()), 0)  # and is still running
    out = home / "second.out"
    with open(out, "w") as sink:
        second = subprocess.Popen(["bash", *WORKER_RUN], cwd=checkout, env=env,
                                  stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while "already running" not in out.read_text() and time.time() < deadline:
            time.sleep(0.05)
        (home / "RELEASE").write_text("0")  # only now may the job end
        assert second.wait(timeout=20) == 0, out.read_text()
    assert "already running" in out.read_text()
    assert (home / "starts").read_text().split() == ["started"]  # one run, attached twice


# -- SLURM --------------------------------------------------------------------------------
def submit(checkout: Path, cwd: Path, script: str) -> list[str]:
    """The sbatch line of a dry run (the first command it prints)."""
    sbatch = commands(launch(cwd, script, "--dry_run", *readme_arguments("slurm_multinode.sh"),
                             "--", "--config.seed=1").stdout)[0]
    return sbatch


def run_as_slurm(sbatch: list[str], spool: Path, submit_dir: Path) -> list[list[str]]:
    """What SLURM does with that sbatch line: run a copy of the script from its spool
    directory, in the --chdir directory, with the job's variables set."""
    script_at = next(i for i, a in enumerate(sbatch) if a.endswith("slurm_multinode.sh"))
    chdir = next(a.split("=", 1)[1] for a in sbatch if a.startswith("--chdir="))
    copy = spool / "job7" / "slurm_script"
    copy.parent.mkdir(parents=True)
    shutil.copy(sbatch[script_at], copy)
    env = environment(SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(submit_dir))
    # --dry_run here: the job's own commands are printed, not run.
    return commands(launch(Path(chdir), str(copy), "--dry_run", *sbatch[script_at + 1:],
                           env=env).stdout)


@pytest.mark.parametrize("where", ["root", "launch", "outside"])
def test_slurm_job_runs_from_a_spool_copy(checkout, tmp_path, where):
    cwd, script = {"root": (checkout, "launch/slurm_multinode.sh"),
                   "launch": (checkout / "launch", "slurm_multinode.sh"),
                   "outside": (tmp_path, str(checkout / "launch/slurm_multinode.sh"))}[where]
    sbatch = submit(checkout, cwd, script)
    assert sbatch[0] == "sbatch"
    assert {"--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=1", "--partition=gpu",
            "--exclusive", f"--chdir={checkout}"} <= set(sbatch)
    inside = run_as_slurm(sbatch, tmp_path / "spool", submit_dir=cwd)
    assert [c[0] for c in inside] == ["srun", "srun"]
    for cmd, binary in zip(inside, ("main.py", "evaluate.py"), strict=True):
        assert {"--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8",
                "AUGSELF_DISTRIBUTED=1"} <= set(cmd)
        assert cmd[cmd.index("python") + 1:] == [
            binary, "--config=configs/simclr_augself.py:imagenet100", "--workdir=runs/slurm",
            "--config.seed=1"]


def test_slurm_dry_run_shows_every_command_the_job_runs(checkout, tmp_path):
    # Outside a job, the dry run prints the sbatch line and then what the job will run:
    # the same commands the job prints when SLURM runs it.
    printed = commands(launch(checkout, "launch/slurm_multinode.sh", "--dry_run",
                              *readme_arguments("slurm_multinode.sh"), "--",
                              "--config.seed=1").stdout)
    sbatch, job = printed[0], printed[1:]
    assert sbatch[0] == "sbatch" and "--dry_run" not in sbatch  # the line can be run as is
    assert job == run_as_slurm(sbatch, tmp_path / "spool", submit_dir=checkout)
    assert [c[c.index("python") + 1] for c in job] == ["main.py", "evaluate.py"]
    no_eval = commands(launch(checkout, "launch/slurm_multinode.sh", "--dry_run",
                              "--no_eval").stdout)
    assert [c[0] for c in no_eval] == ["sbatch", "srun"]


def test_slurm_job_submitted_by_hand_finds_the_checkout_from_the_submit_dir(checkout, tmp_path):
    copy = tmp_path / "spool" / "slurm_script"
    copy.parent.mkdir()
    shutil.copy(checkout / "launch/slurm_multinode.sh", copy)
    inside = commands(launch(checkout, str(copy), "--dry_run", "--no_eval",
                             env=environment(SLURM_JOB_ID="7",
                                             SLURM_SUBMIT_DIR=str(checkout))).stdout)
    assert len(inside) == 1 and inside[0][0] == "srun"
    lost = launch(tmp_path, str(copy), "--dry_run",
                  env=environment(SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(tmp_path)),
                  check=False)
    user_error(lost, "--checkout")


def _initialize_as_slurm_task(monkeypatch, task_env: dict[str, str]) -> list[int]:
    """The devices JAX would give this task: app.py's call, completed the way
    jax.distributed.initialize completes it under SLURM."""
    import jax
    from jax._src import clusters

    from augself_jax import app

    for k in [k for k in os.environ if k.startswith("SLURM_") or k == "JAX_LOCAL_DEVICE_IDS"]:
        monkeypatch.delenv(k)
    for k, v in task_env.items():
        monkeypatch.setenv(k, v)
    seen = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
    app.maybe_initialize_distributed(True)
    *_, device_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        seen.get("coordinator_address"), seen.get("num_processes"), seen.get("process_id"),
        seen.get("local_device_ids"), None, 300)
    return list(device_ids)


def test_slurm_plan_gives_every_gpu_of_every_node_a_device(checkout, tmp_path, monkeypatch):
    sbatch = submit(checkout, checkout, "launch/slurm_multinode.sh")
    srun = run_as_slurm(sbatch, tmp_path / "spool", submit_dir=checkout)[0]
    flag = lambda cmd, name: int(next(a for a in cmd if a.startswith(f"--{name}=")).split("=")[1])
    nodes, tasks_per_node, gpus = (flag(srun, "nodes"), flag(srun, "ntasks-per-node"),
                                   flag(srun, "gpus-per-node"))
    assert (nodes, gpus) == (2, 8) and flag(sbatch, "gpus-per-node") == gpus
    driven = {}
    for node in range(nodes):
        for local in range(tasks_per_node):
            # What srun sets for each task of that step (one CUDA_VISIBLE_DEVICES per node).
            task = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-02]",
                    "SLURM_NTASKS": str(nodes * tasks_per_node),
                    "SLURM_PROCID": str(node * tasks_per_node + local),
                    "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node),
                    "SLURM_STEP_TASKS_PER_NODE": f"{tasks_per_node}(x{nodes})",
                    "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(gpus)))}
            for device in _initialize_as_slurm_task(monkeypatch, task):
                assert (node, device) not in driven, "two processes on one GPU"
                driven[(node, device)] = local
    assert sorted(driven) == [(n, g) for n in range(nodes) for g in range(gpus)]


# -- single node and local multi-process ------------------------------------------------------
def test_gpu_single_node(checkout):
    cmds = commands(launch(checkout, "launch/gpu_single_node.sh", "--dry_run", "--gpus=0,1,2,3",
                           "--config=configs/byol_augself.py", "--workdir=runs/byol", "--",
                           "--config.seed=3", env=environment(PYTHON="py")).stdout)
    assert len(cmds) == 2
    for cmd, binary in zip(cmds, ("main.py", "evaluate.py"), strict=True):
        assert cmd[0] == "env" and "CUDA_VISIBLE_DEVICES=0,1,2,3" in cmd
        i = cmd.index("py")
        assert cmd[i + 1:] == [binary, "--config=configs/byol_augself.py", "--workdir=runs/byol",
                               "--config.seed=3"]
    assert len(commands(launch(checkout, "launch/gpu_single_node.sh", "--dry_run",
                               "--no_eval").stdout)) == 1


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_local_multiprocess(checkout, platform):
    cmds = commands(launch(checkout, "launch/local_multiprocess.sh", "--dry_run",
                           "--num_processes=3", "--port=5555", f"--platform={platform}",
                           "--workdir=runs/mp", "--", "--config.total_steps=4",
                           env=environment(PYTHON="py")).stdout)
    assert cmds[0] == ["mkdir", "-p", "runs/mp"]
    procs = cmds[1:]
    assert len(procs) == 3
    for i, cmd in enumerate(procs):
        tail = cmd[cmd.index("py") + 1:]
        assert tail == ["main.py", "--config=configs/simclr_augself.py:shapes",
                        "--workdir=runs/mp", "--distributed",
                        "--coordinator_address=localhost:5555", "--num_processes=3",
                        f"--process_id={i}", "--config.total_steps=4"]
        if platform == "cpu":
            assert "JAX_PLATFORMS=cpu" in cmd
        else:
            assert f"CUDA_VISIBLE_DEVICES={i}" in cmd


def test_local_multiprocess_readme_command_runs_two_real_processes(shapes_data_dir, tmp_path):
    """The README's command for real, from a full copy of the checkout: two main.py processes
    joined by jax.distributed on localhost train one run. The one change is a shorter
    schedule (the README's --config.total_steps=50 becomes 2); the port and the dataset
    location come from the environment."""
    args = readme_arguments("local_multiprocess.sh")
    assert "--config.total_steps=50" in args and "--workdir=runs/mp" in args
    args = [a.replace("--config.total_steps=50", "--config.total_steps=2") for a in args]
    root = tmp_path / "checkout"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__",
                                                              ".*cache"))
    import socket

    with socket.socket() as s:  # a free port, so parallel runs cannot collide
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = environment(PORT=str(port), TFDS_DATA_DIR=shapes_data_dir, PYTHON=sys.executable)
    done = subprocess.run(["bash", "launch/local_multiprocess.sh", *args], cwd=root,
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = [(root / "runs" / "mp" / f"process_{i}.log").read_text() for i in range(2)]
    assert "done: 2 steps" in logs[0]  # process 0 reports and writes
    assert "done: 2 steps" not in logs[1]
    assert (root / "runs" / "mp" / "checkpoints" / "2").is_dir()
    for i, log in enumerate(logs):  # both joined one 2-process run over 2 devices
        assert f"jax.distributed: process {i} of 2, 2 global devices" in log, log[-2000:]

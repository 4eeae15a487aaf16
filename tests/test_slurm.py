"""run.py on a real SLURM cluster through hydra/launcher=submitit_slurm: sweeps, DDP tasks, two nodes,
requeue. The commands are the README's (the launcher derives CPUs and GPUs from the run's config).

Needs a cluster: `.ci/start_slurm.sh --nodes 2` starts a two-node one on this machine (as root); the
two-node tests skip on a single-node cluster.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.run_py import run_dirs, run_py
from tests.slurm_cluster import node_count, unavailable

ROOT = Path(__file__).resolve().parents[1]
CPU_SLURM = ["hydra/launcher=submitit_slurm", "debug=smoke"]  # debug=smoke trains on the CPU
# Three short epochs, deterministic, every test image: runs to compare across nodes, processes and a requeue.
COMPARED_RUN = ["trainer.max_epochs=3", "trainer.limit_train_batches=4", "trainer.limit_test_batches=null",
                "trainer.deterministic=true", "callbacks.early_stopping.patience=1000", "logger=none"]
TWO_NODES = ["strategy=ddp", "trainer.num_nodes=2", "trainer.devices=1"]
# One thread per task: what a task bound to its one CPU gets on a real cluster (this one does not bind
# them: TaskPlugin=task/none), and what Lightning gives each of two processes on a two-core machine.
# (Other thread counts sum in another order: the same training, with float differences.)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]
two_nodes = pytest.mark.skipif(0 < node_count() < 2,
                               reason="a one-node cluster: start two nodes with .ci/start_slurm.sh --nodes 2")
STARTED: list[tuple[subprocess.Popen, Path]] = []


@pytest.fixture(autouse=True)
def nothing_left_running():
    """After each test, end the sweeps it left running (a failure) and cancel their SLURM jobs."""
    yield
    while STARTED:
        process, project_root = STARTED.pop()
        if process.poll() is not None:
            continue
        process.kill()
        process.wait()
        jobs = [p.name for p in project_root.glob("outputs/*/multiruns/*/.submitit/*") if p.name.isdigit()]
        subprocess.run(["scancel", *jobs], capture_output=True)


def start_sweep(project_root: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python run.py -m` through the SLURM launcher, from the repository, outputs under `project_root`
    (`env`: more environment variables, which sbatch passes on to the jobs)."""
    command = [sys.executable, "run.py", "-m", *CPU_SLURM, *overrides]
    environment = {**os.environ, "PROJECT_ROOT": str(project_root), **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    STARTED.append((process, project_root))
    return process


def the_sweep_dir(project_root: Path) -> Path:
    """The directory of the one sweep started under `project_root`, once it exists."""
    multiruns = project_root / "outputs" / "classify" / "multiruns"
    wait_for(lambda: multiruns.is_dir() and any(multiruns.iterdir()), "the sweep's directory")
    (sweep_dir,) = multiruns.iterdir()
    return sweep_dir


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    """Wait for the sweep; return its output, failing with it if the sweep failed."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def job_logs(sweep_dir: Path) -> str:
    """Everything the SLURM tasks of the sweep printed."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").glob("*/*_log.*")))


def submitted_job_id(sweep_dir: Path) -> str:
    """The SLURM job id of a one-job sweep (submitit names a folder after it)."""
    def job_folders() -> list[str]:
        return [p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir()]

    wait_for(lambda: len(job_folders()) == 1, "the submitted job's folder")
    return job_folders()[0]


def wait_for(condition, what: str, timeout: float = 120) -> None:
    """Poll `condition()` until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_sweep_of_two_jobs_runs_on_slurm_and_is_summarised(tmp_path):
    # trainer.accelerator=auto (the default, which debug=smoke sets to cpu): this cluster has no GPU
    finish(start_sweep(tmp_path, "optimizer.lr=1e-3,1e-2", "trainer.accelerator=auto"))

    sweep_dir = the_sweep_dir(tmp_path)
    (script,) = (sweep_dir / ".submitit").glob("*/*_submission.sh")
    requests = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --cpus-per-task=1" in requests, "no loader workers: one CPU per task"
    assert not [line for line in requests if "gpu" in line or "gres" in line], requests
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["optimizer.lr"]) for row in rows) == [1e-3, 1e-2]
    assert all(row["status"] == "done" and float(row["test/acc"]) >= 0 for row in rows)
    assert "SLURM auto-requeueing enabled" in job_logs(sweep_dir), "Lightning saw the SLURM environment"


def test_gpu_request_that_this_cpu_cluster_refuses_is_one_clean_error(tmp_path):
    command = [sys.executable, "run.py", "-m", *CPU_SLURM, "trainer.accelerator=gpu"]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PROJECT_ROOT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    block = " ".join(done.stderr.replace("│", " ").split())
    assert "SLURM refused the job: sbatch: error: Invalid generic resource (gres) specification" in block
    assert "gpus_per_node=1" in block and "Change hydra.launcher.gpus_per_node" in block


@pytest.mark.slow
@pytest.mark.ddp
def test_two_task_job_trains_with_ddp_across_slurm_tasks(tmp_path):
    finish(start_sweep(tmp_path, "trainer=ddp"))

    sweep_dir = the_sweep_dir(tmp_path)
    logs = job_logs(sweep_dir)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert (sweep_dir / "0" / "metrics.json").is_file()


@pytest.mark.slow
def test_job_signalled_for_preemption_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    epochs, batches = 6, 6
    process = start_sweep(tmp_path, f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}",
                          "callbacks.early_stopping.patience=1000", "logger=none")
    sweep_dir = the_sweep_dir(tmp_path)
    run_dir = sweep_dir / "0"
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), "the first checkpoint")
    job_id = submitted_job_id(sweep_dir)

    subprocess.run(["scancel", "--signal=USR1", job_id], check=True)  # what SLURM sends before preempting
    wait_for(lambda: (run_dir / "hpc_ckpt_1.ckpt").exists(), "Lightning's requeue checkpoint")
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%t"], capture_output=True,
                                    text=True).stdout.strip() == "PD", "the job to be requeued")
    # SLURM holds a requeued job for two minutes; start it at once.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    finish(process)

    # Lightning saves hpc_ckpt_1 on USR1, but the epoch may end (writing last.ckpt) before SLURM stops
    # the job: the requeued job continues from whichever of the two is newer.
    restored = [f"Restoring states from the checkpoint path at {run_dir / name}"
                for name in ("hpc_ckpt_1.ckpt", "checkpoints/last.ckpt")]
    assert any(line in job_logs(sweep_dir) for line in restored)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (epochs - 1, epochs * batches)
    assert (run_dir / "metrics.json").is_file()


def task_logs(sweep_dir: Path) -> list[str]:
    """What each SLURM task of the sweep's one job printed (stdout and stderr), in task order."""
    (job_dir,) = [p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()]
    tasks = sorted({p.name.split("_")[1] for p in job_dir.glob("*_log.*")})
    return ["".join(p.read_text() for p in sorted(job_dir.glob(f"*_{task}_log.*"))) for task in tasks]


def assert_same_result(run_dir: Path, reference_dir: Path) -> None:
    """Equal final metrics and weights (within float tolerance) and the same steps in two runs; the costs
    (speed, memory, file sizes) describe the machine, not the result."""
    metrics, expected = ({k: v for k, v in json.loads((d / "metrics.json").read_text()).items()
                          if not k.startswith("cost/")} for d in (run_dir, reference_dir))
    assert metrics == pytest.approx(expected, rel=1e-5, abs=1e-7)
    last, expected_last = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)
                           for d in (run_dir, reference_dir))
    assert (last["epoch"], last["global_step"]) == (expected_last["epoch"], expected_last["global_step"])
    assert last["state_dict"].keys() == expected_last["state_dict"].keys()
    for key, weights in expected_last["state_dict"].items():
        torch.testing.assert_close(last["state_dict"][key], weights, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory of one uninterrupted job on two nodes, one CPU process each."""
    project_root = tmp_path_factory.mktemp("two_nodes")
    finish(start_sweep(project_root, *TWO_NODES, *COMPARED_RUN, env=ONE_THREAD))
    return the_sweep_dir(project_root)


@pytest.fixture(scope="module")
def one_node_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of the same training on one machine with two processes, without SLURM."""
    project_root = tmp_path_factory.mktemp("one_node")
    run_py(project_root, "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *COMPARED_RUN)
    (run_dir,) = run_dirs(project_root)
    return run_dir


@pytest.mark.slow
@pytest.mark.ddp
@two_nodes
def test_two_node_job_has_a_rank_on_each_node_and_trains_like_two_processes_on_one(
        two_node_run, one_node_run):
    logs = task_logs(two_node_run)
    node_and_member = {(re.search(r"JobEnvironment\(.*node=(\d)\(2\)", log).group(1),
                        re.search(r"GLOBAL_RANK: \d, MEMBER: (\d)/2", log).group(1)) for log in logs}
    assert node_and_member == {("0", "1"), ("1", "2")}, "world size 2: global rank 0 on node 0, 1 on node 1"
    assert "Starting with 2 processes" in logs[0]

    run_dir = two_node_run / "0"
    written = [p.relative_to(two_node_run) for p in two_node_run.rglob("metrics.json")]
    assert written == [Path("0/metrics.json")], "rank 0 alone writes the results"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == sorted(p.name for p in (one_node_run / "checkpoints").iterdir())
    assert_same_result(run_dir, one_node_run)


@pytest.mark.slow
@pytest.mark.ddp
@two_nodes
def test_two_node_job_requeued_mid_training_continues_from_its_checkpoint_to_the_same_result(
        tmp_path, two_node_run):
    process = start_sweep(tmp_path, *TWO_NODES, *COMPARED_RUN, env=ONE_THREAD)
    sweep_dir = the_sweep_dir(tmp_path)
    run_dir = sweep_dir / "0"
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), "the first epoch's checkpoint")
    job_id = submitted_job_id(sweep_dir)

    subprocess.run(["scontrol", "requeue", job_id], check=True)  # as preemption by a higher priority job
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%t"], capture_output=True,
                                    text=True).stdout.strip() == "PD", "the job to be requeued")
    assert not (run_dir / "metrics.json").exists(), "the job finished before it was requeued"
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    finish(process)

    last = run_dir / "checkpoints" / "last.ckpt"
    rank_zero_log = task_logs(sweep_dir)[0]
    assert f"SLURM restarted this job (1x): continuing from {last}" in rank_zero_log
    assert f"Restoring states from the checkpoint path at {last}" in rank_zero_log
    assert_same_result(run_dir, two_node_run / "0")

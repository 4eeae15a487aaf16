"""run.py on a real SLURM cluster through hydra/launcher=submitit_slurm: sweeps, DDP tasks, requeue.

Needs a cluster: `.ci/start_slurm.sh` starts a single-node one on this machine (as root).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CPU_SLURM = [
    "hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10", "debug=smoke",
]


def cluster_is_up() -> bool:
    """Whether sinfo answers (a controller is reachable)."""
    done = subprocess.run(["sinfo", "-h"], capture_output=True, text=True)
    return done.returncode == 0


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="sbatch not found: start a local cluster with .ci/start_slurm.sh (as root)"),
    pytest.mark.skipif(shutil.which("sbatch") is not None and not cluster_is_up(),
                       reason="sinfo cannot reach a SLURM controller: start one with .ci/start_slurm.sh"),
]


def start_sweep(project_root: Path, *overrides: str) -> subprocess.Popen:
    """`python run.py -m` through the SLURM launcher, from the repository, outputs under `project_root`."""
    command = [sys.executable, "run.py", "-m", *CPU_SLURM, *overrides]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PROJECT_ROOT": str(project_root)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


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


def test_sweep_of_two_jobs_runs_on_slurm_and_is_summarised(tmp_path):
    finish(start_sweep(tmp_path, "optimizer.lr=1e-3,1e-2"))

    sweep_dir = the_sweep_dir(tmp_path)
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["optimizer.lr"]) for row in rows) == [1e-3, 1e-2]
    assert all(row["status"] == "done" and float(row["test/acc"]) >= 0 for row in rows)
    assert "SLURM auto-requeueing enabled" in job_logs(sweep_dir), "Lightning saw the SLURM environment"


def test_two_task_job_trains_with_ddp_across_slurm_tasks(tmp_path):
    finish(start_sweep(tmp_path, "trainer=ddp"))

    sweep_dir = the_sweep_dir(tmp_path)
    logs = job_logs(sweep_dir)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert (sweep_dir / "0" / "metrics.json").is_file()


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

    restored = f"Restoring states from the checkpoint path at {run_dir / 'hpc_ckpt_1.ckpt'}"
    assert restored in job_logs(sweep_dir)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (epochs - 1, epochs * batches)
    assert (run_dir / "metrics.json").is_file()

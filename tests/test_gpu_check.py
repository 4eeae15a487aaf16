"""benchmarks/gpu_check.sh, the one script a lent GPU runs: its --dry-run takes every step on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHON": sys.executable, "PROJECT_ROOT": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("=== ")]
    assert len(steps) == 10 and "0 step(s) failed or overran" in done.stdout
    assert done.stdout.count("ratio ") >= 6  # every benchmark printed its ratio lines


def test_gpu_check_refuses_to_run_without_cuda_unless_dry_run(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("the refusal happens only without CUDA")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2 and "needs a CUDA device (or --dry-run)" in done.stderr

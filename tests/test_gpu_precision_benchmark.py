"""benchmarks/gpu_precision.py without CUDA: a clear skip (its --quick run is tests/test_readme.py's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_precision.py"


def run_script(*args: str) -> str:
    """The script's console output (it must exit successfully)."""
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip happens only without CUDA")
def test_full_benchmark_without_cuda_says_it_skipped():
    assert run_script().strip() == "skipped: no CUDA device"

"""benchmarks/gpu_precision.py without CUDA: a clear skip (its --quick run is tests/test_readme.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.run_py import python

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_precision.py"


def run_script(*args: str) -> str:
    """The script's console output (it must exit successfully)."""
    done = python(str(SCRIPT), *args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip happens only without CUDA")
def test_full_benchmark_without_cuda_says_it_skipped():
    assert run_script().strip() == "skipped: no CUDA device"

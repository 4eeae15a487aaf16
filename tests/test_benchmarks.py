"""Every benchmark script runs end to end in its --quick form and prints its ratio (no timing checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("script", "ratio_line"), [
    ("overhead.py", "ratio framework/plain [small CNN, digits]:"),
    ("startup.py", "ratio plain/framework [command to first step]:"),
    ("input_pipeline.py", "ratio datamodule/ImageFolder [training loader]:"),
    ("host_syncs.py", "ratio torch.optim.LBFGS/LBFGS [syncs per style evaluation]:"),
])
def test_benchmark_script_runs_quick_and_prints_its_ratio(script: str, ratio_line: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ratio_line in result.stdout

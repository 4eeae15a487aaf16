"""The segmentation benchmark script runs end to end in its --quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_segmentation_benchmark_quick_prints_both_throughputs_and_their_ratio():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "segmentation.py"), "--quick", "--repeats", "1",
         "--models", "unet", "--set", "model.base_width=4", "model.depth=2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run.py images/s" in result.stdout and "plain images/s" in result.stdout
    assert "│ unet" in result.stdout

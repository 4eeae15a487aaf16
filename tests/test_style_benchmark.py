"""The style-transfer benchmark script runs (a smoke test: no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import CONF_DIR


def test_style_benchmark_quick_run_prints_its_ratio_and_table():
    done = subprocess.run([sys.executable, "style_transfer.py", "--quick"],
                          cwd=CONF_DIR.parent / "benchmarks", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio (tutorial time / task=style time) at 32px" in done.stdout
    assert "framework" in done.stdout and "tutorial" in done.stdout

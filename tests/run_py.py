"""`python run.py ...` as a user types it, with outputs rooted in a temporary PROJECT_ROOT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "debug=smoke"


def run_py(project_root: Path, *args: str, cwd: Path = ROOT, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `run.py` with `args` and `debug=smoke`; with `check`, fail the test on a non-zero exit."""
    command = [sys.executable, str(ROOT / "run.py"), *args, SMOKE]
    environment = {**os.environ, "PROJECT_ROOT": str(project_root), "WANDB_SILENT": "true", **(env or {})}
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def run_dirs(project_root: Path, task: str = "classify") -> list[Path]:
    """The single-run directories of `task` under `project_root`, oldest first."""
    return sorted((project_root / "outputs" / task / "runs").iterdir())


def sweep_dirs(project_root: Path, task: str = "classify") -> list[Path]:
    """The multirun directories of `task` under `project_root`, oldest first."""
    return sorted((project_root / "outputs" / task / "multiruns").iterdir())

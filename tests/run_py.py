"""`python run.py ...` as a user types it, with outputs rooted in a temporary PROJECT_ROOT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Block until `path` exists (failing if `process` ends first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before writing {path}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)

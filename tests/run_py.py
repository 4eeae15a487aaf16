"""`python run.py ...` as a user types it, with outputs rooted in a temporary PROJECT_ROOT.

Commands run in an interpreter forked from tests/warm_python.py, which has imported torch, Lightning
and the other heavy libraries once, so that each command costs its own work rather than 4-5 s of
imports. Set VISIONLAB_TESTS_COLD=1 to start every command in a fresh interpreter instead.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "debug=smoke"
_server: subprocess.Popen | None = None


def warm_server() -> subprocess.Popen:
    """The running tests/warm_python.py server, started on first use and stopped at exit."""
    global _server
    if _server is None or _server.poll() is not None:
        log = tempfile.NamedTemporaryFile(prefix="warm_python_", suffix=".log", delete=False)
        _server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm_python.py")], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=1)
        _server.log_path = Path(log.name)
        atexit.register(stop, _server)
    return _server


def stop(server: subprocess.Popen) -> None:
    """End the server (it stops when its input closes) and remove its log."""
    server.stdin.close()
    server.wait(timeout=60)
    server.log_path.unlink(missing_ok=True)


def python(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` (a script and its arguments) run in `cwd` with `env`, its output captured."""
    command = [sys.executable, *args]
    environment = dict(os.environ if env is None else env)
    if os.environ.get("VISIONLAB_TESTS_COLD"):
        return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                              timeout=timeout)
    server = warm_server()
    with tempfile.TemporaryDirectory() as scratch:
        stdout, stderr = Path(scratch, "stdout"), Path(scratch, "stderr")
        request = {"script": args[0], "args": list(args[1:]), "cwd": str(cwd), "env": environment,
                   "stdout": str(stdout), "stderr": str(stderr), "timeout": timeout}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        line = server.stdout.readline()
        assert line, f"tests/warm_python.py stopped: {server.log_path.read_text()[-3000:]}"
        answer = json.loads(line)
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, answer["code"], stdout.read_text(), stderr.read_text())


def run_py(project_root: Path, *args: str, cwd: Path = ROOT, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `run.py` with `args` and `debug=smoke`; with `check`, fail the test on a non-zero exit."""
    environment = {**os.environ, "PROJECT_ROOT": str(project_root), "WANDB_SILENT": "true", **(env or {})}
    done = python(str(ROOT / "run.py"), *args, SMOKE, cwd=cwd, env=environment)
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

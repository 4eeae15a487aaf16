"""The UIs the README points at serve what the runs logged: `mlflow server` on the project's MLflow store,
read back over HTTP as a browser or client would. (An Optuna search's study is read back through
Optuna's own storage API in tests/test_sweeps.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.run_py import run_dirs, run_py


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(url: str, body: dict | None = None) -> bytes:
    """GET `url`, or POST `body` as JSON to it; the response body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Block until `url` answers (failing if the server exits first or takes longer than `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"the server exited with {server.returncode}: {log.read_text()[-3000:]}"
        try:
            http(url)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url}: no answer in {timeout} s: {log.read_text()[-3000:]}"
            time.sleep(1)


@pytest.mark.slow
def test_mlflow_server_on_the_projects_store_serves_a_runs_metrics_over_http(tmp_path):
    run_py(tmp_path, "logger=mlflow")
    run_dir = run_dirs(tmp_path)[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    store = tmp_path / "outputs" / "mlflow.db"
    port, log = free_port(), tmp_path / "mlflow_server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its own process group: its workers end with it
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/health", server, log)
        experiments = json.loads(http(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10}))
        (classify,) = [e for e in experiments["experiments"] if e["name"] == "classify"]
        found = json.loads(http(f"{base}/api/2.0/mlflow/runs/search",
                                {"experiment_ids": [classify["experiment_id"]]}))
        (run,) = found["runs"]
        served = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
        tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    assert served["hp/test/acc"] == pytest.approx(metrics["test/acc"])
    assert served["hp/best/val/acc"] == pytest.approx(metrics["best/val/acc"])
    assert tags["output_dir"] == str(run_dir)

"""Ctrl-C keeps the place: the first stops the run as SIGTERM does (stop checkpoint, resume command,
error.txt, closing summary) with exit code 130; the second stops it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from app import boundary
from tests.run_py import ROOT, run_dirs, wait_for


@pytest.mark.slow
def test_first_ctrl_c_saves_the_stop_point_prints_the_resume_command_and_exits_130(tmp_path):
    # long enough an epoch that the signal lands inside it, however fast the machine
    overrides = ["debug=smoke", "logger=none", "trainer.max_epochs=2", "trainer.limit_train_batches=400",
                 "data.batch_size=2"]
    environment = {**os.environ, "PROJECT_ROOT": str(tmp_path / "project")}
    with (tmp_path / "stdout").open("w") as out, (tmp_path / "stderr").open("w") as err:
        process = subprocess.Popen([sys.executable, "run.py", *overrides], cwd=ROOT, env=environment,
                                   stdout=out, stderr=err, text=True)
        try:
            wait_for(tmp_path / "project" / "outputs" / "classify" / "runs", process, timeout=300)
            run_dir = run_dirs(tmp_path / "project")[0]
            wait_for(run_dir / "checkpoints" / "last.ckpt", process, timeout=600)
            time.sleep(0.5)  # inside epoch 1
            process.send_signal(signal.SIGINT)
            process.wait(timeout=300)
        finally:
            process.kill()
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()

    assert process.returncode == 130, stderr[-3000:]
    assert "KeyboardInterrupt" not in stderr and "Traceback" not in stderr
    stopped = torch.load(run_dir / "checkpoints" / "stopped.ckpt", weights_only=False)
    assert stopped["epoch"] == 1 and stopped["global_step"] > 400, "saved where it stopped, inside epoch 1"
    assert f"Stopped by Ctrl-C (SIGINT) at epoch 1, step {stopped['global_step']}" in stderr
    command = stderr.split("Resume with:\n")[1].splitlines()[0].strip()
    assert command.endswith(f"hydra.run.dir={run_dir} ckpt_path={run_dir / 'checkpoints' / 'stopped.ckpt'}")
    assert (run_dir / "error.txt").read_text() == (
        "SIGTERMException: stopped by Ctrl-C (SIGINT); checkpoints/stopped.ckpt holds the stop point\n")
    assert "Run stopped by Ctrl-C (SIGINT)" in stdout + stderr and "stop point:" in stdout + stderr
    assert not (run_dir / "metrics.json").exists()


def test_the_second_ctrl_c_gets_sigints_default_action_which_ends_the_process_at_once():
    original = signal.getsignal(signal.SIGINT)
    with boundary.signals_stop_the_run():
        assert signal.getsignal(signal.SIGINT) is boundary.sigint_handler
        with pytest.raises(SIGTERMException):  # outside fit and test: the stop is raised at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL, "the next Ctrl-C terminates the process"
        assert boundary.stop_signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is original
    assert boundary.stop_signal == signal.SIGINT, "the boundary still knows which signal stopped the run"


def test_a_second_ctrl_c_stops_a_real_run_at_once(tmp_path):
    script = ("import os, signal, time\n"
              "from app.boundary import signals_stop_the_run\n"
              "with signals_stop_the_run():\n"
              "    signal.signal(signal.SIGTERM, lambda *_: None)  # a stop that takes its time, as in fit\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    print('stopping', flush=True)\n"
              "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "stopping\n"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        process.kill()

    assert process.returncode == -signal.SIGINT and time.monotonic() - started < 10

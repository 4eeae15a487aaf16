"""`python SCRIPT ARGS...` forked from an interpreter that has already imported the heavy libraries.

Run as a server by tests/run_py.py: it imports PRELOAD once, then for each request (a JSON line on
stdin: script, args, cwd, env, stdout and stderr files, timeout) forks a child that becomes what
`python SCRIPT ARGS` would be (argv, sys.path, cwd, environment, file descriptors 0-2), runs the
script as __main__ and exits with its exit code. The server answers with that code, killing the
child if it runs past its timeout. Only third-party libraries are preloaded: the project's modules
are imported by each child from the script's own folder, as a fresh interpreter would.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import runpy
import signal
import sys
import time
import traceback

import numpy

PRELOAD = (
    "numpy", "PIL.Image", "torch", "torchvision", "torchmetrics", "pytorch_lightning", "hydra",
    "omegaconf", "rich", "matplotlib.pyplot", "tensorboard", "sklearn.model_selection",
)


def exit_code(exit_: SystemExit) -> int:
    """The process exit code Python gives for an uncaught `SystemExit`."""
    if exit_.code is None or isinstance(exit_.code, int):
        return exit_.code or 0
    print(exit_.code, file=sys.stderr)
    return 1


def become(request: dict, fresh_path: list[str]) -> int:
    """Turn this forked child into `python script args` and run it; return its exit code."""
    random.seed()  # fresh interpreters draw their own unseeded random state; forked ones would share it
    numpy.random.seed()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], write),
                            (2, request["stderr"], write)):
        handle = os.open(path, flags, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *fresh_path]
    try:
        runpy.run_path(os.path.abspath(script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_code(exit_)
    except BaseException:  # noqa: BLE001 - an uncaught exception, as Python prints it
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


def wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The exit code of child `pid` and whether it was killed for running past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.02)


def serve() -> None:
    """Answer requests until stdin closes."""
    fresh_path = sys.path[1:]  # what a fresh interpreter has after the script's own folder
    for name in PRELOAD:
        __import__(name)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            code = 1
            try:
                code = become(request, fresh_path)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        code, timed_out = wait(pid, request["timeout"])
        replies.write(json.dumps({"code": code, "timed_out": timed_out}) + "\n")


if __name__ == "__main__":
    serve()

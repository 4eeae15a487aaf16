"""The error boundary of a run: the project's own errors as one block and exit code 2; SIGTERM (exit
code 143) and a first Ctrl-C (exit code 130) as a stop that keeps its place; a failed multirun job
reported so that the sweep goes on; a failed rank's error reported by rank 0; anything else keeps its
traceback."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from app.console import print_error, stopped_summary
from app.distributed_job import (
    DistributedJob,
    RankFailure,
    error_text,
    first_rank_failure,
    global_rank,
    record_rank_error,
)
from core.errors import VisionlabError

log = logging.getLogger("run")
SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}
stop_signal = signal.SIGTERM  # the signal that asked the run to stop: SIGTERM, or SIGINT (Ctrl-C)



def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (see `global_rank`)."""
    return global_rank() == 0


def is_signal_stop(error: BaseException) -> bool:
    """Whether Lightning stopped fitting or testing because of SIGTERM or a first Ctrl-C."""
    if "pytorch_lightning" not in sys.modules:
        return False
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)


def is_pruned(error: BaseException) -> bool:
    """Whether an Optuna search pruned this trial (optuna.TrialPruned, named so as not to import optuna)."""
    return type(error).__name__ == "TrialPruned"


def sigterm_handler(signum: int, frame: Any) -> None:
    """Stop the run with Lightning's SIGTERMException, unless Lightning's own handler is calling this one.

    During fit and test Lightning's handler calls the handler it found (this one) too, and stops at
    the end of the batch in progress; outside them (data checks, between fit and test) SIGTERM would
    otherwise kill the process without a word or an exit code of its own.
    """
    if signal.getsignal(signal.SIGTERM) is not sigterm_handler:
        return
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    raise SIGTERMException


def sigint_handler(signum: int, frame: Any) -> None:
    """The first Ctrl-C stops the run as SIGTERM does (at the end of the batch in progress, with
    `stopped.ckpt` and the resume command); the second stops it at once (SIGINT's default action)."""
    global stop_signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stop_signal = signal.SIGINT
    if "callbacks.stop_checkpoint" in sys.modules:
        from callbacks.stop_checkpoint import CheckpointOnSIGTERM

        CheckpointOnSIGTERM.stopped_by = SIGNAL_NAMES[signal.SIGINT]
    if is_rank_zero():
        print("\nCtrl-C: stopping at the end of the batch in progress and saving where it stopped; "
              "Ctrl-C again stops at once.", file=sys.stderr, flush=True)
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler):
        handler(signal.SIGTERM, frame)


@contextmanager
def signals_stop_the_run() -> Iterator[None]:
    """Within the block SIGTERM and a first Ctrl-C stop the run (signal handlers: main thread only)."""
    global stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop_signal = signal.SIGTERM
    previous = {signum: signal.signal(signum, handler)
                for signum, handler in ((signal.SIGTERM, sigterm_handler), (signal.SIGINT, sigint_handler))}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def rerun_only_this_job() -> None:
    """Make Lightning's DDP launcher start ranks > 0 on this multirun job, not on the whole sweep.

    The launcher re-runs `sys.argv` with `hydra.run.dir=<hydra.run.dir>`: inside a multirun that
    would start the sweep again, in another directory. Give it this job's overrides and directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    from app.overrides import command_line_overrides

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *command_line_overrides(), "hydra.mode=RUN"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def unwrapped(error: BaseException) -> BaseException:
    """The error as the user should see it: the exception a constructor raised, out of the
    InstantiationException that Hydra wraps it in; and a project error raised in a DataLoader worker
    with its own message, not the worker's traceback that PyTorch makes its message."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    message = str(error)
    from_worker = message.startswith("Caught ") and "\nOriginal Traceback" in message
    if isinstance(error, VisionlabError) and from_worker:
        name = f"{type(error).__module__}.{type(error).__qualname__}: "
        if name in message:
            own = type(error)(message.rpartition(name)[2].rstrip("\n"))
            own.__cause__ = error
            return own
    return error


def in_multirun() -> bool:
    """Whether this process runs a job of a multirun (a sweep), not a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_error(error: BaseException, output_dir: Path) -> None:
    """Write `error.txt` in the run directory: why the run failed or stopped, for sweep summaries."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = error_text(error)
    if is_signal_stop(error):
        saved = (output_dir / "checkpoints" / "stopped.ckpt").is_file()
        text = (f"{type(error).__name__}: stopped by {SIGNAL_NAMES[stop_signal]}"
                + ("; checkpoints/stopped.ckpt holds the stop point" if saved else ""))
    (output_dir / "error.txt").write_text(text + "\n")


def report(error: VisionlabError) -> None:
    """Print the project's error as one block (its traceback first with HYDRA_FULL_ERROR=1) and exit 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)
    print_error(error)
    raise SystemExit(2) from None


def composed_or_reported(compose_and_run: Callable[[], Any]) -> Any:
    """`compose_and_run()`, with Hydra's errors for a command line that does not compose reported as a
    ConfigError (`app.config_keys.composition_error`)."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    from app.config_keys import composition_error

    try:
        return compose_and_run()
    except (ConfigCompositionException, OverrideParseException) as error:
        overrides = get_args_parser().parse_known_args(sys.argv[1:])[0].overrides
        report(composition_error(error, overrides))


@contextmanager
def config_errors_reported() -> Iterator[None]:
    """Around Hydra's main: the project's errors raised before Hydra runs (argv rewriting), and Hydra's
    composition errors (an unknown group option or key, an override it cannot read), as one ConfigError
    block with exit code 2 instead of Hydra's message and exit code 1.

    Hydra composes the config inside `run_and_report`, which prints any exception and exits 1 before
    `main` could see it; this wraps what it runs for the duration (Hydra 1.3's `hydra._internal.utils`).
    """
    import hydra._internal.utils as hydra_utils

    hydra_report = hydra_utils.run_and_report
    hydra_utils.run_and_report = lambda func: hydra_report(lambda: composed_or_reported(func))
    try:
        yield
    except VisionlabError as error:
        report(error)
    finally:
        hydra_utils.run_and_report = hydra_report


def within_boundary(cfg: DictConfig, body: Callable[[DictConfig], Any]) -> Any:
    """`body(cfg)` inside the error boundary; what it returns, or None for a failed multirun job.

    The project's own errors print as one block (on global rank 0 only) and exit with code 2; a stop
    by SIGTERM exits with 143 and one by Ctrl-C with 130 (128 + the signal's number, as if it had
    killed the process); anything else keeps its traceback. A failed multirun job returns None after
    reporting its error, so that the sweep goes on to the other jobs and its summary runs (Hydra's
    sweepers stop at a job's exception); the summary marks the job failed and the sweep exits non-zero.
    Whatever happens, the run leaves no process group, launched rank or launcher variable behind.
    """
    job = DistributedJob()
    failed = True
    try:
        with signals_stop_the_run():
            result = body(cfg)
        failed = False
        return result
    except BaseException as raised:
        return failed_run(unwrapped(raised), Path(cfg.paths.output_dir), failed_at=time.time())
    finally:
        job.end(failed)


def failed_run(error: BaseException, output_dir: Path, failed_at: float) -> None:
    """Report `error` as the boundary does (see `within_boundary`); None for a failed multirun job."""
    stopped = is_signal_stop(error)  # Lightning's SIGTERMException is a SystemExit
    if isinstance(error, SystemExit | KeyboardInterrupt) and not stopped:
        raise error
    if not is_rank_zero():
        return failed_rank(error, output_dir, stopped)
    if is_pruned(error):  # not a failure: the Optuna search's pruner stopped a hopeless trial
        record_error(error, output_dir)
        log.info("%s", error)
        return None
    if stopped:
        record_error(error, output_dir)
        log.info(stopped_summary(output_dir, SIGNAL_NAMES[stop_signal]))
        raise SystemExit(128 + stop_signal) from None
    cause = first_rank_failure(output_dir, failed_at, error)
    if cause is not None:
        return rank_failed(cause, error, output_dir)
    record_error(error, output_dir)
    full_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"  # set by debug=anomaly, or the user
    if full_traceback:
        traceback.print_exception(error)
    if isinstance(error, VisionlabError):
        print_error(error)
    if in_multirun():
        if not isinstance(error, VisionlabError):
            log.error("This job failed; the sweep goes on.", exc_info=error)
        return None
    if isinstance(error, VisionlabError):
        raise SystemExit(2) from None
    if full_traceback:
        raise SystemExit(1) from None  # Hydra restores the environment, then would shorten it
    raise error


def failed_rank(error: BaseException, output_dir: Path, stopped: bool) -> None:
    """On a rank > 0: record the error for rank 0 to report, and exit (quietly for the project's errors,
    which rank 0 prints)."""
    if stopped:
        raise SystemExit(128 + stop_signal) from None
    if is_pruned(error):  # not a failure: rank 0 pruned the trial too, and reports it
        if in_multirun():
            return None
        raise SystemExit(0) from None
    record_rank_error(error, output_dir)
    if in_multirun():  # a SLURM task of a multirun job
        return None
    if isinstance(error, VisionlabError):
        raise SystemExit(2) from None
    raise error


def rank_failed(cause: RankFailure, own_error: BaseException, output_dir: Path) -> None:
    """On rank 0, which lost its peer: report the error of the rank that failed first, as its own."""
    (output_dir / "error.txt").write_text(cause.text() + "\n")
    project_error = cause.project_error()
    if project_error is not None:
        print_error(project_error, title=f"{cause.type_name} on rank {cause.rank}")
    else:
        own = error_text(own_error).splitlines()[0]
        log.error("Rank %d failed with %s: %s (its traceback is in its own output); rank 0 then stopped "
                  "with: %s", cause.rank, cause.type_name, cause.message, own)
    if in_multirun():
        return None
    raise SystemExit(2 if project_error is not None else 1) from None

"""The error boundary of a run: the project's own errors as one block and exit code 2, SIGTERM as exit
code 143 with `error.txt`, a failed multirun job reported so that the sweep goes on; anything else keeps
its traceback."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from app.console import print_error
from core.errors import VisionlabError

log = logging.getLogger("run")


def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (from RANK, LOCAL_RANK or SLURM_PROCID).

    Lightning's answer once it is imported (its strategies correct it); before that, the variables
    Lightning reads, so that a config error does not wait for Lightning to import.
    """
    if "pytorch_lightning" in sys.modules:
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        return rank_zero_only.rank == 0
    rank = next((os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if key in os.environ), "0")
    return int(rank) == 0


def is_sigterm_stop(error: BaseException) -> bool:
    """Whether Lightning stopped fitting or testing because the process received SIGTERM."""
    if "pytorch_lightning" not in sys.modules:
        return False
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)


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


@contextmanager
def sigterm_stops_the_run() -> Iterator[None]:
    """Within the block SIGTERM raises through `sigterm_handler` (signal handlers: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rerun_only_this_job() -> None:
    """Make Lightning's DDP launcher start ranks > 0 on this multirun job, not on the whole sweep.

    The launcher re-runs `sys.argv` with `hydra.run.dir=<hydra.run.dir>`: inside a multirun that
    would start the sweep again, in another directory. Give it this job's overrides and directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def unwrap_instantiation(error: BaseException) -> BaseException:
    """The exception a constructor raised, out of the InstantiationException that Hydra wraps it in."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def in_multirun() -> bool:
    """Whether this process runs a job of a multirun (a sweep), not a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_error(error: BaseException, output_dir: Path) -> None:
    """Write `error.txt` in the run directory: why the run failed, for sweep summaries."""
    stopped = is_sigterm_stop(error)
    if (isinstance(error, SystemExit | KeyboardInterrupt) and not stopped) or not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    message = str(error)
    if stopped:
        saved = (output_dir / "checkpoints" / "stopped.ckpt").is_file()
        message = "stopped by SIGTERM" + ("; checkpoints/stopped.ckpt holds the stop point" if saved else "")
    (output_dir / "error.txt").write_text(f"{type(error).__name__}: {message}\n")


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

    The project's own errors print as one block (on global rank 0 only) and exit with code 2; SIGTERM
    exits with 143 (128 + 15, as if the signal had killed the process); anything else keeps its
    traceback. A failed multirun job returns None after reporting its error, so that the sweep goes on
    to the other jobs and its summary runs (Hydra's sweepers stop at a job's exception); the summary
    marks the job failed and the sweep exits non-zero.
    """
    try:
        with sigterm_stops_the_run():
            return body(cfg)
    except BaseException as raised:
        error = unwrap_instantiation(raised)
        record_error(error, Path(cfg.paths.output_dir))
        if is_sigterm_stop(error):
            raise SystemExit(143) from None
        full_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"  # set by debug=anomaly, or the user
        if full_traceback and isinstance(error, Exception) and is_rank_zero():
            traceback.print_exception(error)
        if isinstance(error, VisionlabError) and is_rank_zero():
            print_error(error)
        if in_multirun() and isinstance(error, Exception):
            if not isinstance(error, VisionlabError):
                log.error("This job failed; the sweep goes on.", exc_info=error)
            return None
        if isinstance(error, VisionlabError):
            raise SystemExit(2) from None
        if full_traceback and isinstance(error, Exception):
            raise SystemExit(1) from None  # Hydra restores the environment, then would shorten it
        raise

"""A run (or one job of a multirun) over several processes: each starts from a clean distributed state
and its failure is reported from the rank that failed.

Lightning's DDP launcher starts ranks 1.. as `python run.py ...` processes, initialises a process group
and sets MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK and WORLD_SIZE in this process's environment.
Left behind, they poison the next job of a sweep: it would join the dead job's process group, and
believe its ranks were started for it (LOCAL_RANK set). `DistributedJob` ends all three with the job.

A rank > 0 that fails writes `error_rank<k>.txt` in the run directory and exits; rank 0 then loses its
peer at the next collective. Rank 0 reports the failure that came first: its own, or the rank's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from core.errors import VisionlabError

DISTRIBUTED_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def global_rank() -> int:
    """This process's global rank: Lightning's once it is imported (its strategies correct it), before
    that the variables Lightning reads (RANK, LOCAL_RANK, SLURM_PROCID), so that a config error does not
    wait for Lightning to import."""
    if "pytorch_lightning" in sys.modules:
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        return rank_zero_only.rank
    rank = next((os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if key in os.environ), "0")
    return int(rank)


def error_text(error: BaseException) -> str:
    """How `error.txt` states an error: `<type>: <message>`."""
    return f"{type(error).__name__}: {error}"


def rank_error_file(output_dir: Path, rank: int) -> Path:
    """Where rank `rank` > 0 records its error."""
    return output_dir / f"error_rank{rank}.txt"


def record_rank_error(error: BaseException, output_dir: Path) -> None:
    """On a rank > 0: write its error for rank 0 to report."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rank_error_file(output_dir, global_rank()).write_text(error_text(error) + "\n")


class RankFailure(NamedTuple):
    """A rank's recorded error: its rank, the error's type name and its message."""

    rank: int
    type_name: str
    message: str

    def project_error(self) -> VisionlabError | None:
        """The project's own error it was (to print as one block), or None for any other exception."""
        classes, found = [VisionlabError], {}
        while classes:
            cls = classes.pop()
            found[cls.__name__] = cls
            classes += cls.__subclasses__()
        cls = found.get(self.type_name)
        return cls(self.message) if cls is not None else None

    def text(self) -> str:
        """How `error.txt` states it: `<type> on rank <k>: <message>`."""
        return f"{self.type_name} on rank {self.rank}: {self.message}"


def first_rank_failure(output_dir: Path, failed_at: float, own_error: BaseException) -> RankFailure | None:
    """The error of a rank > 0 that failed before this process did at `failed_at` (the cause, when this
    process then lost its peer), or None when this process's own error came first or is the same."""
    own = error_text(own_error).strip()
    earlier = []
    for path in output_dir.glob("error_rank*.txt"):
        if path.stat().st_mtime <= failed_at and path.read_text().strip() != own:
            earlier.append((path.stat().st_mtime, path))
    if not earlier:
        return None
    _, path = min(earlier)
    type_name, _, message = path.read_text().strip().partition(": ")
    return RankFailure(int(path.stem.removeprefix("error_rank")), type_name, message)


def forget_rank_errors(output_dir: Path) -> None:
    """A requeued or resumed run starts afresh: earlier ranks' errors are history."""
    for path in output_dir.glob("error_rank*.txt"):
        path.unlink(missing_ok=True)


class DistributedJob:
    """The distributed state of one run: `end` ends the ranks it launched (waiting for them after a
    success, killing them after a failure), tears down the process group and restores the environment
    variables the launcher set."""

    def __init__(self) -> None:
        self.environment = {key: os.environ.get(key) for key in DISTRIBUTED_VARIABLES}

    def end(self, failed: bool) -> None:
        if "lightning_modules.strategies" in sys.modules:
            from lightning_modules.strategies import end_launched_ranks

            codes = end_launched_ranks(failed)
            if not failed and any(codes):
                import logging

                logging.getLogger("run").warning("A rank exited with code %s after rank 0 finished the run.",
                                                 max(codes, key=abs))
        elif "torch" in sys.modules:
            import torch.distributed

            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        for key, value in self.environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""Checkpoints written to a temporary file beside the target, synced, then renamed over it; read with errors
that name the file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from core.errors import CheckpointError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` comes from a full disk or an exhausted quota (torch hides the OSError in its chain)."""
    return any(
        (isinstance(e, OSError) and e.errno in DISK_FULL) or "No space left on device" in str(e)
        for e in error_chain(error)
    )


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint file, or raise CheckpointError naming it when it is missing or unreadable.

    `mmap=True` maps the tensors instead of reading them: a cheap look at what the file holds.
    """
    path = Path(path)
    if not path.is_file():
        siblings = sorted(p.name for p in path.parent.glob("*.ckpt")) if path.parent.is_dir() else []
        hint = f" That folder holds: {', '.join(siblings)}." if siblings else ""
        raise CheckpointError(f"No checkpoint file at {path}.{hint} Check ckpt_path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as error:
        if mmap:  # a legacy (not zip) file cannot be mapped, and a mapped read explains failures badly
            return read_checkpoint(path, map_location)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"Checkpoint {path} ({path.stat().st_size:,} bytes) cannot be read: {reason}. The file is "
            "truncated or corrupt (a copy that did not finish, or not a checkpoint at all). Use another "
            f"checkpoint of the run (in {path.parent}) or copy this one again."
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """A checkpoint path holds either the previous file or the complete new one, never half of one.

    Lightning's own writer stages the file in the system temporary folder and moves it into place,
    which is a plain, interruptible copy when outputs live on another filesystem (a cluster's shared
    disk); here the temporary file sits in the target folder, so the final rename is atomic. The
    file gets the permissions of any new file (the umask; mkstemp would leave it 0600), and a full
    disk is reported as such, the previous checkpoints untouched.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction handles it
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o666 & ~current_umask())
            os.replace(temporary, path)
        except BaseException as error:
            Path(temporary).unlink(missing_ok=True)
            if isinstance(error, Exception) and is_disk_full(error):
                free = shutil.disk_usage(path.parent).free
                raise CheckpointError(
                    f"No space left on the disk of {path.parent} ({free / 2**20:.0f} MiB free) while saving "
                    f"{path.name}; the checkpoints saved before are intact. Free some space (or write the "
                    "runs elsewhere with paths.log_dir=DIR), then resume with ckpt_path=last."
                ) from error
            raise

    def load_checkpoint(
        self, path: str | Path, map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_checkpoint(path, map_location)

"""A checkpoint where SIGTERM (a scheduler's time limit, `kill`) or a first Ctrl-C stopped training, and
how to resume."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnSIGTERM(pl.Callback):
    """Saves `<checkpoints>/stopped.ckpt` where SIGTERM (or a first Ctrl-C, which the application turns
    into the same stop) stopped fitting and prints the resume command.

    Lightning stops at the end of the batch in progress when it receives SIGTERM; without this the
    steps since the last end-of-epoch checkpoint would be lost. The file is not named `last*`, so
    `ckpt_path=last` still resumes from the end of the last complete epoch (which, unlike a
    mid-epoch checkpoint, repeats an uninterrupted run exactly). `resume_command` is the command line
    that resumes the run, without its `ckpt_path`.
    """

    stopped_by = "SIGTERM"  # the application sets "Ctrl-C (SIGINT)" when a first Ctrl-C asks for the stop

    def __init__(self, checkpoint_dir: str | Path, resume_command: str) -> None:
        self.path = Path(checkpoint_dir) / "stopped.ckpt"
        self.resume_command = resume_command

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
            resume = f"{self.resume_command} ckpt_path={shlex.quote(str(self.path))}"
            print(f"Stopped by {self.stopped_by} at {where}; saved {self.path}. Resume with:\n  {resume}",
                  file=sys.stderr, flush=True)

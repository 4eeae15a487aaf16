"""A callback that prints the wall-clock time of the first training step, for startup.py.

Add it to any run from the command line:
`python run.py +callbacks.first_step._target_=benchmarks.first_step.FirstStepTime`.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

MARKER = "first training step at"


class FirstStepTime(pl.Callback):
    """Print `MARKER <unix time>` when the first training batch starts."""

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 0:
            print(f"{MARKER} {time.time():.6f}", flush=True)

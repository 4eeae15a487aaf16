"""The composed run config inside every checkpoint, so that a checkpoint says how it was made."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

CHECKPOINT_KEY = "visionlab_config"


class RunConfigInCheckpoint(pl.Callback):
    """Stores the resolved config (a plain dict) under `checkpoint["visionlab_config"]`.

    Predicting, exporting and evaluating rebuild the network, the evaluation transform and the
    class names from it; a checkpoint of another network or task is named with it.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = self.config

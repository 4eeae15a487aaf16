"""The composed run config inside every checkpoint, so that a checkpoint says how it was made."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from core.contracts import CHECKPOINT_KEY, CLASSES_KEY, STYLES_KEY


class RunConfigInCheckpoint(pl.Callback):
    """Stores the resolved config (a plain dict) under `checkpoint["visionlab_config"]`, and the
    datamodule's class names under `checkpoint["visionlab_classes"]` (read from the data at training), and a
    style network's fixed styles' names under `checkpoint["visionlab_styles"]`.

    Predicting, exporting and evaluating rebuild the network, the evaluation transform and the
    class names from it; a checkpoint of another network or task is named with it.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = self.config
        classes = getattr(trainer.datamodule, "classes", None)
        if classes:
            checkpoint[CLASSES_KEY] = [str(name) for name in classes]
        styles = getattr(trainer.datamodule, "styles", None)
        if styles and not getattr(trainer.datamodule, "samples_styles", False):
            checkpoint[STYLES_KEY] = [str(name) for name, _ in styles]

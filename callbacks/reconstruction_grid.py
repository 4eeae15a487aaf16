"""The grid of `experiment=style_reconstructions` (Gatys et al. 2016, Figure 1) to every logger that takes
images."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from callbacks.figure_logging import log_image


class ReconstructionGrid(pl.Callback):
    """After each content image: `<name>/reconstructions`, its style and content reconstructions."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if isinstance(outputs, dict) and "grid" in outputs:
            log_image(trainer, f"{outputs['name']}/reconstructions", outputs["grid"])

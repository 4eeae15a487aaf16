"""Style transfer figures: loss curves per image (TensorBoard) and a strip of its progress (all loggers)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from callbacks.figure_logging import log_image, tensorboard_writer


def progress_strip(snapshots: list[torch.Tensor], result: torch.Tensor) -> torch.Tensor:
    """Snapshots (of any scale) and the result side by side, all at the result's size: (3, H, W*n)."""
    size = result.shape[-2:]
    frames = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in snapshots]
    frames = torch.cat([*frames, result.cpu()]).clamp(0, 1)
    return make_grid(frames, nrow=len(frames), padding=2, pad_value=1.0)


class StyleProgress(pl.Callback):
    """After each image: content/style/TV/total loss per evaluation, and the progress strip."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "history" not in outputs:
            return
        name = outputs["name"]
        writer = tensorboard_writer(trainer)
        if writer is not None:
            for evaluation, losses in enumerate(outputs["history"], start=1):
                for key, value in losses.items():
                    writer.add_scalar(f"{name}/loss_{key}", value, evaluation)
        strip = progress_strip([image for _, image in outputs["snapshots"]], outputs["result"])
        log_image(trainer, f"{name}/progress", strip, step=len(outputs["history"]))

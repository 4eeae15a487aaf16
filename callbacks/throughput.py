"""Steady-state images/s of training and prediction, measured from the batches' own ends."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

IMAGE_KEYS = ("images", "content")  # the predict loop's batches; task=style_net's (content crops)


def batch_images(batch: Any) -> int:
    """The number of images in a batch: `(images, targets)`, or a dict with one of `IMAGE_KEYS`."""
    if not isinstance(batch, dict):
        return int(batch[0].shape[0])
    images = next((batch[key] for key in IMAGE_KEYS if key in batch), None)
    return 0 if images is None else int(images.shape[0])


class Throughput(pl.Callback):
    """Images per second of training (steady state) and of prediction (every batch).

    The first training batch of an epoch pays for the loader's start and, in the first epoch, for
    memory allocation and kernel selection, so each training epoch is timed from the end of its first
    batch to the end of its last: what comes between (loading, forward, backward, optimizer step) is
    the steady state. A predict run often has a single batch, so it is timed from its start to its
    last batch's end (reading the images included). On CUDA the device is waited for at those two
    points only, not at every step.
    """

    def __init__(self) -> None:
        self.images = {"train": 0, "predict": 0}
        self.seconds = {"train": 0.0, "predict": 0.0}
        self._start: float | None = None
        self._end: float | None = None
        self._pending = 0

    def images_per_second(self, stage: str) -> float | None:
        """Steady-state images/s of `stage` (`train` or `predict`), or None when too few batches ran or
        their images could not be counted (never a rate of 0 for a run that did train)."""
        counted = self.seconds[stage] > 0 and self.images[stage] > 0
        return self.images[stage] / self.seconds[stage] if counted else None

    def _now(self, pl_module: pl.LightningModule, wait: bool) -> float:
        if wait and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _batch_end(self, stage: str, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                   last: float) -> None:
        if batch_idx == 0 and stage == "train":
            self._start, self._end, self._pending = self._now(pl_module, wait=True), None, 0
            return
        if self._start is None:
            return
        self._pending += batch_images(batch)
        self._end = self._now(pl_module, wait=batch_idx >= last)
        if batch_idx >= last:
            self._close(stage)

    def _close(self, stage: str) -> None:
        """Add the open interval (first batch's end to the last batch's end) to `stage`'s totals."""
        if self._start is not None and self._end is not None:
            self.seconds[stage] += self._end - self._start
            self.images[stage] += self._pending
        self._start = self._end = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._batch_end("train", pl_module, batch, batch_idx, trainer.num_training_batches - 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("train")  # an epoch cut short by max_steps ends before its last batch

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._end, self._pending = self._now(pl_module, wait=True), None, 0

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                             batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        last = trainer.num_predict_batches[dataloader_idx] - 1
        self._batch_end("predict", pl_module, batch, batch_idx, last)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("predict")

"""The best checkpoint on the monitored metric, where a later epoch that equals the best replaces it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that a score equal to the worst kept one replaces it.

    Accuracy on a small validation set ties often (144 digits: 2 errors at epoch 4 and at epoch 11),
    and Lightning keeps the first of equals. After a learning rate that anneals (one-cycle, cosine),
    the later of two equal scores is the better-trained network, and the one to test. With
    `save_top_k: 1` (conf/callbacks/default.yaml) that one is also `best_model_path`; with more,
    Lightning's `best_model_path` stays the first of equal best scores.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so that checkpoints of either class resume each other's best scores
        return ModelCheckpoint.__qualname__ + super().state_key.removeprefix(type(self).__qualname__)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        at_least = {"min": torch.le, "max": torch.ge}[self.mode]
        kept = at_least(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(kept))  # every process decides alike

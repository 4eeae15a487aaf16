"""Unstructured weight sparsity with Lightning's ModelPruning, on the network's convolution and linear
weights only: zeros under masks, which make no dense kernel faster (see README, "Compression")."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

PRUNED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def is_epoch(wanted: int, epoch: int) -> bool:
    """Whether `epoch` is `wanted` (ModelPruning's `apply_pruning` schedule; a partial pickles)."""
    return epoch == wanted


class WeightSparsity(ModelPruning):
    """`amount` of the network's conv/linear weights (global L1 magnitude: the smallest across layers)
    zeroed at the end of epoch `at_epoch`; the masks keep them zero while training goes on, and
    checkpoints hold the zeroed weights without masks. Biases and normalisation layers are left alone;
    the original weights are not rewound (no lottery ticket)."""

    def __init__(self, amount: float = 0.5, at_epoch: int = 0, pruning_fn: str = "l1_unstructured",
                 verbose: int = 1, **kwargs: Any) -> None:
        super().__init__(pruning_fn=pruning_fn, amount=amount, apply_pruning=partial(is_epoch, at_epoch),
                         use_lottery_ticket_hypothesis=False, use_global_unstructured=True,
                         parameter_names=["weight"], verbose=verbose, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        net = getattr(pl_module, "net", pl_module)
        self._parameters_to_prune = [(m, "weight") for m in net.modules() if isinstance(m, PRUNED_TYPES)]
        super().setup(trainer, pl_module, stage)

"""Segmentation losses as pure functions of (logits, target): cross-entropy, Dice and their weighted sum."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.errors import ConfigError


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """1 - mean over classes of (2|P∩G| + s) / (|P| + |G| + s), with softmax P, one-hot G.

    `logits` is (N, C, H, W), `target` (N, H, W); pixels equal to `ignore_index` count for nothing.
    """
    num_classes = logits.shape[1]
    valid = target != ignore_index
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
    one_hot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (cardinality + smooth)).mean()


class SegmentationLoss(nn.Module):
    """`ce_weight` x cross-entropy (optionally class-weighted) + `dice_weight` x Dice loss."""

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 0.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
        dice_smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ConfigError(f"Loss weights ce_weight={ce_weight}, dice_weight={dice_weight}: both must "
                             "be >= 0 and at least one > 0.")
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.dice_smooth = dice_smooth
        weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
            loss = loss + self.ce_weight * F.cross_entropy(
                logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, target, self.ignore_index, self.dice_smooth)
        return loss

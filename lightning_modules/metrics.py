"""Classification metrics whose definition differs from torchmetrics' defaults."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import MulticlassStatScores


class BalancedAccuracy(MulticlassStatScores):
    """Mean recall over the classes present in the targets: scikit-learn's `balanced_accuracy_score`.

    torchmetrics' macro accuracy also averages over classes that are only predicted, each counting as 0.
    The per-class true-positive and false-negative counts are metric states summed across processes.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, top_k=1, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        true_positives, _, _, false_negatives = self._final_state()
        support = true_positives + false_negatives
        present = support > 0
        return (true_positives[present].double() / support[present]).mean().float()

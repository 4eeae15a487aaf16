"""Segmentation losses: a weighted sum of smp's losses, cross-entropy and OHEM cross-entropy.

Every loss takes (logits (N, C, H, W), target (N, H, W)) and leaves `ignore_index` pixels out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from core.errors import ConfigError


class CrossEntropy(nn.Module):
    """torch's cross-entropy: mean over non-ignored pixels, each weighted by its true class's weight.

    A batch whose every pixel is ignored (a crop of void, a rotated-in corner) gives 0, as in
    MMSegmentation, not torch's 0/0 = NaN; computed without reading anything back to the host.
    """

    def __init__(self, ignore_index: int, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_losses = F.cross_entropy(logits, target, weight=self.class_weights, reduction="none",
                                       ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)
        labelled = target != self.ignore_index
        if self.class_weights is None:
            total_weight = labelled.sum()
        else:
            total_weight = (self.class_weights[torch.where(labelled, target, 0)] * labelled).sum()
        # torch's mean is 0/0 when no pixel has weight (all ignored, or classes weighted 0): here it is 0
        return pixel_losses.sum() / torch.where(total_weight > 0, total_weight, 1).to(pixel_losses.dtype)


class OhemCrossEntropy(CrossEntropy):
    """Online hard example mining: cross-entropy over the pixels whose true-class probability is
    below `threshold`, and at least the `min_kept` (per image) least confident ones.

    The pixel selection is MMSegmentation's `OHEMPixelSampler`; the loss is the (class-weighted)
    mean over the kept pixels, as in HRNet's `OhemCrossEntropy`.
    """

    def __init__(self, ignore_index: int, class_weights: torch.Tensor | None = None,
                 threshold: float = 0.7, min_kept: int = 100_000) -> None:
        super().__init__(ignore_index, class_weights)
        if not 0.0 < threshold <= 1.0 or min_kept < 0:
            raise ConfigError(f"task.loss_options.ohem_ce: threshold={threshold} must be in (0, 1] and "
                              f"min_kept={min_kept} >= 0.")
        self.threshold = threshold
        self.min_kept = min_kept

    def kept_pixels(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The (N, H, W) mask of pixels the loss keeps."""
        with torch.no_grad():
            valid = target != self.ignore_index
            safe_target = torch.where(valid, target, 0).unsqueeze(1)
            true_prob = logits.softmax(dim=1).gather(1, safe_target).squeeze(1)
            valid_probs = true_prob[valid].sort().values
            threshold = torch.tensor(self.threshold, device=logits.device, dtype=true_prob.dtype)
            if valid_probs.numel() > 0:
                kth = valid_probs[min(self.min_kept * target.shape[0], valid_probs.numel() - 1)]
                threshold = torch.maximum(threshold, kth)
            return valid & (true_prob < threshold)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kept = torch.where(self.kept_pixels(logits, target), target, self.ignore_index)
        return super().forward(logits, kept)


def _smp(loss_class: type[nn.Module], takes_class_weights: bool) -> Callable[..., nn.Module]:
    def build(ignore_index: int, class_weights: torch.Tensor | None, **options: Any) -> nn.Module:
        if takes_class_weights and class_weights is not None:
            options["class_weights"] = class_weights.tolist()
        return loss_class(mode=smp_losses.MULTICLASS_MODE, ignore_index=ignore_index, **options)

    return build


class SoftCrossEntropy(smp_losses.SoftCrossEntropyLoss):
    """smp's label-smoothed cross-entropy, averaged over the non-ignored pixels only.

    smp divides by every pixel, ignored ones included, so padding would shrink the loss.
    """

    def __init__(self, ignore_index: int, smooth_factor: float = 0.1) -> None:
        super().__init__(smooth_factor=smooth_factor, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_index).sum().clamp_min(1)
        return super().forward(logits, target) * (target.numel() / valid)


def _soft_ce(ignore_index: int, class_weights: torch.Tensor | None, **options: Any) -> nn.Module:
    return SoftCrossEntropy(ignore_index=ignore_index, **options)


def _ce(ignore_index: int, class_weights: torch.Tensor | None, **options: Any) -> nn.Module:
    return CrossEntropy(ignore_index, class_weights, **options)


def _ohem_ce(ignore_index: int, class_weights: torch.Tensor | None, **options: Any) -> nn.Module:
    return OhemCrossEntropy(ignore_index, class_weights, **options)


# name -> builder(ignore_index, class_weights, **options); class weights reach the losses that take them.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": _ce,
    "ohem_ce": _ohem_ce,
    "dice": _smp(smp_losses.DiceLoss, takes_class_weights=True),
    "jaccard": _smp(smp_losses.JaccardLoss, takes_class_weights=True),
    "tversky": _smp(smp_losses.TverskyLoss, takes_class_weights=True),
    "focal": _smp(smp_losses.FocalLoss, takes_class_weights=True),
    "lovasz": _smp(smp_losses.LovaszLoss, takes_class_weights=False),
    "soft_ce": _soft_ce,
}
CLASS_WEIGHTED = ("ce", "ohem_ce", "dice", "jaccard", "tversky", "focal")


class ZeroWithoutLabels(nn.Module):
    """`loss` on a batch (`per_image`: on each image, then averaged over the images) that has a labelled
    pixel; 0 with a zero gradient on one that has none, as in MMSegmentation, whose losses divide by the
    count of labelled pixels plus an epsilon. Without this, a crop that is all `ignore_index` (common on
    Cityscapes and ADE20K) would give 0/0 and stop training as if it had diverged.

    The loss is computed on a stand-in target (class 0 everywhere) and multiplied by 0, so that neither
    its value nor its gradient holds NaN, without asking the device whether the batch had a label.
    """

    def __init__(self, loss: nn.Module, ignore_index: int, per_image: bool = False) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            return torch.stack([self.labelled_only(logits[i:i + 1], target[i:i + 1])
                                for i in range(len(target))]).mean()
        return self.labelled_only(logits, target)

    def labelled_only(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = (target != self.ignore_index).any()
        stand_in = torch.where(labelled, target, torch.zeros_like(target))
        return self.loss(logits, stand_in) * labelled


class SegmentationLoss(nn.Module):
    """Weighted sum of named losses, e.g. `{"ce": 1.0, "dice": 0.5}`; see `LOSSES` for the names.

    `options[name]` are keyword arguments of that loss (smp's, or `threshold`/`min_kept` of
    `ohem_ce`, `label_smoothing` of `ce`); `class_weights` weight the losses in `CLASS_WEIGHTED`.
    """

    def __init__(
        self,
        losses: Mapping[str, float],
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        check_loss_weights(losses)
        options = options or {}
        weights = torch.tensor([float(w) for w in class_weights]) if class_weights is not None else None
        self.weights = {name: float(weight) for name, weight in losses.items() if weight}
        self.terms = nn.ModuleDict({
            name: _build(name, ignore_index, weights, dict(options.get(name) or {})) for name in self.weights
        })

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # smp's losses take softmax of the logits: not in float16
        return sum(weight * self.terms[name](logits, target) for name, weight in self.weights.items())


def _build(name: str, ignore_index: int, class_weights: torch.Tensor | None,
           options: dict[str, Any]) -> nn.Module:
    per_image = bool(options.pop("per_image", False)) if name == "lovasz" else False
    try:
        loss = LOSSES[name](ignore_index, class_weights, **options)
    except TypeError as err:
        raise ConfigError(f"task.loss_options.{name}: {err}. The options are the keyword arguments of "
                          f"that loss.") from err
    return ZeroWithoutLabels(loss, ignore_index, per_image)


def check_loss_weights(losses: Mapping[str, float]) -> None:
    """Raise a ConfigError unless `losses` names known losses with weights >= 0, at least one > 0."""
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        raise ConfigError(f"Unknown loss(es) {unknown} in task.losses. Choose from {list(LOSSES)}, e.g. "
                          "task.losses='{ce:1.0,dice:0.5}'.")
    if any(float(w) < 0 for w in losses.values()) or not any(float(w) > 0 for w in losses.values()):
        raise ConfigError(f"task.losses={dict(losses)}: weights must be >= 0, at least one of them > 0.")

"""Classification augmentation as torchvision's reference recipes build it (ClassificationPresetTrain/Eval).

The `augment` config group instantiates an `Augment`; each classification datamodule hands it
its own geometry (today's crops: pad-4 for CIFAR, resize + random crop for image folders, none
for the digits) and gets back transforms.v2 pipelines for training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from core.errors import ConfigError

POLICIES = ("none", "basic", "randaugment", "trivialaugment", "autoaugment", "augmix")
AUTOAUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # those tensor resizes support


@dataclass
class Geometry:
    """How one dataset's images reach the network's size.

    `random`: the training crop of `augment=basic` (and of every policy unless
    `random_resized_crop`); `fixed`: the deterministic resize/crop of evaluation, also the
    training geometry of `augment=none`; `hflip`: the data's own flip probability.
    """

    random: list[v2.Transform]
    fixed: list[v2.Transform]
    hflip: float


@dataclass
class Augment:
    """One training augmentation recipe; every field is a key of the `augment` config group."""

    policy: str = "basic"
    num_ops: int = 2                      # randaugment: torchvision's --auto-augment ra
    magnitude: int = 9                    # randaugment (--ra-magnitude)
    autoaugment_policy: str = "imagenet"  # autoaugment: imagenet | cifar10 | svhn
    severity: int = 3                     # augmix (--augmix-severity)
    random_resized_crop: bool = False     # RandomResizedCrop instead of the data's crop
    scale: Sequence[float] = (0.08, 1.0)
    ratio: Sequence[float] = (3 / 4, 4 / 3)
    hflip: float | None = None            # None: the data's own (0.5 for photos, 0 for digits)
    interpolation: str = "bilinear"       # --interpolation: nearest | bilinear | bicubic
    color_jitter: float = 0.0             # brightness = contrast = saturation strength
    random_erasing: float = 0.0           # --random-erase probability
    train_crop_size: int | None = None    # --train-crop-size; None: data.image_size
    eval_resize_size: int | None = None   # --val-resize-size; None: the data's (resize_size)
    eval_crop_size: int | None = None     # --val-crop-size; None: data.image_size

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"augment.policy={self.policy!r} is unknown: choose one of "
                              f"{', '.join(POLICIES)}.")
        if self.autoaugment_policy not in AUTOAUGMENT_POLICIES:
            raise ConfigError(f"augment.autoaugment_policy={self.autoaugment_policy!r} is unknown: "
                              f"choose one of {', '.join(AUTOAUGMENT_POLICIES)}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"augment.interpolation={self.interpolation!r} is unknown: use nearest, "
                              "bilinear or bicubic.")
        for key in ("random_erasing", "hflip"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"augment.{key}={value} is a probability: give a value in [0, 1].")

    @property
    def interpolation_mode(self) -> v2.InterpolationMode:
        """The torchvision interpolation mode of `interpolation`."""
        return v2.InterpolationMode[self.interpolation.upper()]

    def policy_transform(self) -> v2.Transform | None:
        """The automatic augmentation policy alone (on uint8 or float images), or None."""
        # Rotations and shears of tensors support only nearest and bilinear: bicubic becomes bilinear.
        nearest = self.interpolation == "nearest"
        interpolation = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
        if self.policy == "randaugment":
            return v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude, interpolation=interpolation)
        if self.policy == "trivialaugment":
            return v2.TrivialAugmentWide(interpolation=interpolation)
        if self.policy == "autoaugment":
            return v2.AutoAugment(v2.AutoAugmentPolicy(self.autoaugment_policy), interpolation=interpolation)
        if self.policy == "augmix":
            return v2.AugMix(severity=self.severity, interpolation=interpolation)
        return None

    def train_transform(
        self, geometry: Geometry, crop_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> v2.Compose:
        """Image (PIL, uint8 or float tensor) -> augmented, normalised float tensor."""
        steps: list[v2.Transform] = [v2.ToImage()]
        if self.random_resized_crop:
            steps.append(v2.RandomResizedCrop(crop_size, scale=tuple(self.scale), ratio=tuple(self.ratio),
                                              interpolation=self.interpolation_mode, antialias=True))
        else:
            steps += geometry.fixed if self.policy == "none" else geometry.random
        default_flip = 0.0 if self.policy == "none" else geometry.hflip
        flip = default_flip if self.hflip is None else self.hflip
        if flip > 0:
            steps.append(v2.RandomHorizontalFlip(flip))
        policy = self.policy_transform()
        if policy is not None:
            steps.append(policy)
        if self.color_jitter > 0:
            s = self.color_jitter
            steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        if self.random_erasing > 0:
            steps.append(v2.RandomErasing(self.random_erasing))
        return v2.Compose(steps)

    def eval_transform(self, geometry: Geometry, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
        """Deterministic: the data's resize and centre crop, then normalisation."""
        return v2.Compose([v2.ToImage(), *geometry.fixed, v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean, std)])

    def crop_sizes(self, image_size: int, resize_size: int | None) -> tuple[int, int | None, int]:
        """(train crop, eval resize, eval crop) with the data's sizes where these are unset."""
        return (self.train_crop_size or image_size,
                self.eval_resize_size if self.eval_resize_size is not None else resize_size,
                self.eval_crop_size or image_size)


def resize_and_crop(resize_size: int | None, crop_size: int | None, interpolation: v2.InterpolationMode,
                    random_crop: bool = False, padding: int | None = None) -> list[v2.Transform]:
    """Resize the shorter side (when `resize_size`), then a centre or random crop (when `crop_size`)."""
    steps: list[v2.Transform] = []
    if resize_size is not None:
        steps.append(v2.Resize(resize_size, interpolation=interpolation, antialias=True))
    if crop_size is not None:
        steps.append(v2.RandomCrop(crop_size, padding=padding) if random_crop else v2.CenterCrop(crop_size))
    return steps

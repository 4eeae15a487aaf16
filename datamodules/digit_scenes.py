"""Scenes of scikit-learn's handwritten digits: each digit's pixels labelled with its class, no download."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from core.errors import ConfigError
from datamodules.base import stratified_split
from datamodules.digits import load_digit_images
from datamodules.segmentation import SegmentationDataModule


def compose_scenes(
    digits: torch.Tensor,
    labels: torch.Tensor,
    count: int,
    image_size: int,
    digit_sizes: tuple[int, int],
    max_digits: int,
    seed: int,
    threshold: float = 0.35,
    noise: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` scenes (count, 1, S, S) of 1..`max_digits` digits pasted at random, and their masks.

    A digit's pixels brighter than `threshold` get class `label + 1`; 0 is the background.
    Later digits are pasted over earlier ones. Deterministic for a given `seed`.
    """
    rng = np.random.default_rng(seed)
    images = torch.zeros(count, 1, image_size, image_size)
    masks = torch.zeros(count, image_size, image_size, dtype=torch.long)
    for scene in range(count):
        for _ in range(rng.integers(1, max_digits + 1)):
            index = int(rng.integers(len(digits)))
            size = int(rng.integers(digit_sizes[0], digit_sizes[1] + 1))
            digit = F.interpolate(digits[index][None], size=size, mode="bilinear", align_corners=False)[0, 0]
            top, left = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
            region = (slice(top, top + size), slice(left, left + size))
            images[scene, 0][region] = torch.maximum(images[scene, 0][region], digit)
            masks[scene][region] = torch.where(digit > threshold, labels[index] + 1, masks[scene][region])
    if noise:
        generator = torch.Generator().manual_seed(seed)
        images += noise * torch.randn(images.shape, generator=generator)
    return images.clamp_(0, 1), masks


class RandomHorizontalFlip(Dataset):
    """(image, mask) pairs of `dataset`, both mirrored left-right with probability 0.5."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[index]
        return (image.flip(-1), mask.flip(-1)) if torch.rand(()) < 0.5 else (image, mask)


class DigitScenesDataModule(SegmentationDataModule):
    """Train, validation and test scenes from disjoint sets of digit images, all fixed by `split_seed`."""

    mean = (0.1,)
    std = (0.25,)

    def __init__(
        self,
        num_classes: int = 11,
        channels: int = 1,
        image_size: int = 32,
        digit_sizes: tuple[int, int] = (16, 16),
        max_digits: int = 2,
        train_scenes: int = 1500,
        val_scenes: int = 200,
        test_scenes: int = 200,
        hflip: bool = False,
        **options: object,
    ) -> None:
        if channels != 1:
            raise ConfigError("The digit scenes are grayscale: set data.channels=1.")
        super().__init__(num_classes, channels, image_size, hflip=hflip, **options)
        if self.rotation:
            raise ConfigError("data.rotation does not apply to the digit scenes, which are generated upright "
                              "without a transform: remove it (data.cutmix_alpha does apply).")
        self.digit_sizes = (int(digit_sizes[0]), int(digit_sizes[1]))
        if not 8 <= self.digit_sizes[0] <= self.digit_sizes[1] <= image_size:
            raise ConfigError(f"data.digit_sizes={list(digit_sizes)} must lie within [8, data.image_size].")
        self.max_digits = max_digits
        self.counts = {"train": train_scenes, "val": val_scenes, "test": test_scenes}

    def build_datasets(self) -> dict[str, Dataset]:
        self.classes = ["background", *(str(d) for d in range(10))]
        self.check_num_classes()
        images, labels = load_digit_images()
        rest, test = stratified_split(labels.tolist(), 0.2, self.split_seed)
        train, val = stratified_split(labels[rest].tolist(), 0.1, self.split_seed)
        pools = {"train": rest[train], "val": rest[val], "test": test}
        datasets = {}
        for offset, (split, pool) in enumerate(pools.items()):
            scenes, masks = compose_scenes(images[pool], labels[pool], self.counts[split], self.image_size,
                                           self.digit_sizes, self.max_digits, self.split_seed * 3 + offset)
            datasets[split] = TensorDataset((scenes - self.mean[0]) / self.std[0], masks)
        if self.hflip:  # mirrored digits as training data: what flip test-time augmentation shows the network
            datasets["train"] = RandomHorizontalFlip(datasets["train"])
        return datasets

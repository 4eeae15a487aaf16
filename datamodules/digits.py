"""scikit-learn's handwritten digits: 1797 real 8x8 scans that ship with the package."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset

from datamodules.base import ClassificationDataModule, stratified_split
from datamodules.errors import ConfigError


def load_digit_images(image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as float images in [0, 1] of shape (N, 1, image_size, image_size), and labels."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False)
    return images.clamp_(0, 1), torch.tensor(digits.target, dtype=torch.long)


class DigitsDataModule(ClassificationDataModule):
    """A fixed stratified test split, a seeded validation split, the rest for training."""

    mean = (0.3,)
    std = (0.4,)

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 1,
        image_size: int = 28,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        **loader_options: object,
    ) -> None:
        if channels != 1:
            raise ConfigError("The digits are grayscale: set data.channels=1.")
        super().__init__(num_classes, channels, image_size, **loader_options)
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction

    def build_datasets(self) -> dict[str, Dataset]:
        images, labels = load_digit_images(self.image_size)
        images = (images - self.mean[0]) / self.std[0]
        self.classes = [str(d) for d in range(10)]
        rest, test = stratified_split(labels.tolist(), self.test_fraction, self.split_seed)
        train, val = stratified_split(labels[rest].tolist(), self.val_fraction, self.split_seed)
        train, val = rest[train], rest[val]
        return {
            split: TensorDataset(images[idx], labels[idx])
            for split, idx in (("train", train), ("val", val), ("test", test))
        }

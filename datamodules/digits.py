"""scikit-learn's handwritten digits: 1797 real 8x8 scans that ship with the package."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from core.errors import ConfigError
from datamodules.augment import Augment, Geometry, resize_and_crop
from datamodules.base import ClassificationDataModule, stratified_split


def load_digit_images(image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as float images in [0, 1] of shape (N, 1, image_size, image_size), and labels."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False)
    return images.clamp_(0, 1), torch.tensor(digits.target, dtype=torch.long)


class TransformedImages(Dataset):
    """In-memory images and labels, each image passed through `transform` when it is read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class DigitsDataModule(ClassificationDataModule):
    """A fixed stratified test split, a seeded validation split, the rest for training."""

    mean = (0.3,)
    std = (0.4,)

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 1,
        image_size: int = 16,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        translate: float = 0.125,
        augment: Augment | None = None,
        **loader_options: object,
    ) -> None:
        if channels != 1:
            raise ConfigError("The digits are grayscale: set data.channels=1.")
        if not 0 <= translate < 0.5:
            raise ConfigError(f"data.translate={translate}: a shift as a fraction of the side, in [0, 0.5).")
        self.translate = translate
        super().__init__(num_classes, channels, image_size, **loader_options)
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.augment = augment or Augment()

    def build_datasets(self) -> dict[str, Dataset]:
        images, labels = load_digit_images(self.image_size)
        augment = self.augment
        # augment=basic: random shifts, as a zero-padded random crop (cheap per image; a digit is no
        # digit mirrored); evaluation: the images as they are
        padding = round(self.translate * self.image_size)
        shifts = [v2.RandomCrop(self.image_size, padding=padding)] if padding else []
        geometry = Geometry(random=shifts, fixed=resize_and_crop(
            augment.eval_resize_size, augment.eval_crop_size, augment.interpolation_mode), hflip=0.0)
        train_tf = augment.train_transform(geometry, augment.train_crop_size or self.image_size,
                                           self.mean, self.std)
        eval_tf = augment.eval_transform(geometry, self.mean, self.std)
        self.classes = [str(d) for d in range(10)]
        rest, test = stratified_split(labels.tolist(), self.test_fraction, self.split_seed,
                                      "data.test_fraction", self.classes)
        train, val = self.split_validation(labels[rest].tolist(), self.val_fraction, "data.val_fraction")
        train, val = rest[train], rest[val]
        # Evaluation transforms are deterministic: applied once, to the whole split.
        return {"train": TransformedImages(images[train], labels[train], train_tf),
                "val": TensorDataset(eval_tf(images[val]).as_subclass(torch.Tensor), labels[val]),
                "test": TensorDataset(eval_tf(images[test]).as_subclass(torch.Tensor), labels[test])}

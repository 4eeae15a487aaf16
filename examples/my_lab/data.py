"""Your own datamodule: synthetic grayscale images of circles, squares and triangles, drawn from a seed.

Subclassing visionlab's ClassificationDataModule gives the loaders, the seeded stratified validation
split (or k-fold), the class-count check and the batch-size checks; a datamodule implements
`build_datasets` (the train, val and test datasets, and `self.classes`) and sets `mean` and `std`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from datamodules.base import ClassificationDataModule

SHAPES = ("circle", "square", "triangle")


def draw_shapes(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images (N, 1, size, size) in [0, 1] of one shape each, at a random place and scale on
    noise, and their labels (0 circle, 1 square, 2 triangle), drawn in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(SHAPES)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    images = rng.normal(0.2, 0.1, (count, size, size)).astype(np.float32)
    for image, label in zip(images, labels, strict=True):
        radius = rng.uniform(0.2, 0.35) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        if label == 0:
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        elif label == 1:
            inside = (abs(x - cx) <= 0.8 * radius) & (abs(y - cy) <= 0.8 * radius)
        else:  # apex up, base at the bottom
            inside = (y <= cy + radius) & (abs(x - cx) <= (y - (cy - radius)) / 2)
        image[inside] += 0.6
    images = torch.from_numpy(images.clip(0, 1)).unsqueeze(1)
    return images, torch.from_numpy(labels)


class ShapesDataModule(ClassificationDataModule):
    """`per_class` training images of each shape (less a held-out validation fraction) and a test set."""

    mean = (0.35,)
    std = (0.25,)

    def __init__(self, per_class: int = 100, test_per_class: int = 50, val_fraction: float = 0.2,
                 **options: object) -> None:
        super().__init__(**options)
        self.per_class = per_class
        self.test_per_class = test_per_class
        self.val_fraction = val_fraction

    def build_datasets(self) -> dict[str, Dataset]:
        self.classes = list(SHAPES)
        normalise = lambda images: (images - self.mean[0]) / self.std[0]  # noqa: E731
        images, labels = draw_shapes(self.per_class * len(SHAPES), self.image_size, self.split_seed)
        train = TensorDataset(normalise(images), labels)
        kept, held_out = self.split_validation(labels.tolist(), self.val_fraction, "data.val_fraction")
        test_images, test_labels = draw_shapes(self.test_per_class * len(SHAPES), self.image_size,
                                               self.split_seed + 1)
        return {"train": Subset(train, kept.tolist()), "val": Subset(train, held_out.tolist()),
                "test": TensorDataset(normalise(test_images), test_labels)}

"""MNIST through torchvision's reader and downloader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.datasets import MNIST

from datamodules.augment import Geometry, resize_and_crop
from datamodules.base import TorchvisionDataModule


class MNISTDataModule(TorchvisionDataModule):
    """60k training digits (minus a stratified validation hold-out) and the official 10k test set."""

    mean = (0.1307,)
    std = (0.3081,)
    layout = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"

    def make_dataset(self, train: bool, transform: Callable | None, download: bool = False) -> Any:
        return MNIST(self.root, train=train, transform=transform, download=download)

    def geometry(self) -> Geometry:
        """No crop or flip: digits resized only when `image_size` is not MNIST's 28."""
        augment = self.augment
        resize = self.image_size if self.image_size != 28 else None
        interpolation = augment.interpolation_mode
        fixed = resize_and_crop(augment.eval_resize_size or resize, augment.eval_crop_size, interpolation)
        return Geometry(random=resize_and_crop(resize, None, interpolation), fixed=fixed, hflip=0.0)

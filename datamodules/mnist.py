"""MNIST through torchvision's reader and downloader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision.datasets import MNIST
from torchvision.transforms import v2

from datamodules.base import TorchvisionDataModule
from datamodules.transforms import to_normalized_tensor


class MNISTDataModule(TorchvisionDataModule):
    """60k training digits (minus a stratified validation hold-out) and the official 10k test set."""

    mean = (0.1307,)
    std = (0.3081,)
    layout = "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"

    def make_dataset(self, train: bool, transform: Callable | None, download: bool = False) -> Any:
        return MNIST(self.root, train=train, transform=transform, download=download)

    def train_transform(self) -> Callable:
        return self.eval_transform()

    def eval_transform(self) -> Callable:
        steps = [to_normalized_tensor(self.mean, self.std)]
        if self.image_size != 28:
            steps.append(v2.Resize(self.image_size, antialias=True))
        return v2.Compose(steps)

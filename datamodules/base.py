"""What every datamodule shares: splits, loaders and the class-count check."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset


def stratified_split(
    labels: Sequence[int], held_out: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), holding out a fraction or a count of each class, fixed by `seed`."""
    indices = np.arange(len(labels))
    if held_out <= 0:
        return indices, indices[:0]
    kept, held_out = train_test_split(
        indices, test_size=held_out, random_state=seed, stratify=np.asarray(labels)
    )
    return np.sort(kept), np.sort(held_out)


class VisionDataModule(pl.LightningDataModule):
    """Subclasses implement `build_datasets` and set `classes`, `mean` and `std`."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        num_classes: int,
        channels: int,
        image_size: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = False,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.drop_last = drop_last
        self.split_seed = split_seed
        self.classes: list[str] = []
        self.datasets: dict[str, Dataset] | None = None

    def build_datasets(self) -> dict[str, Dataset]:
        """Return the `train`, `val` and `test` datasets, and set `self.classes`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = self.build_datasets()
            self.check_num_classes()

    def check_num_classes(self) -> None:
        """Fail clearly when the configured class count disagrees with the data."""
        if len(self.classes) != self.num_classes:
            shown = ", ".join(self.classes[:8]) + (", ..." if len(self.classes) > 8 else "")
            raise ValueError(
                f"data.num_classes={self.num_classes} but the {type(self).__name__} data has "
                f"{len(self.classes)} classes ({shown}). Set data.num_classes={len(self.classes)}."
            )

    def inference_preprocessing(self) -> dict[str, Any]:
        """How a new image becomes a network input (colour mode, resize, crop, mean, std), as JSON values.

        `datamodules.transforms.preprocessing_transform` turns it into the transform; exported
        models carry it in their `model.json`. Default: resize to the training size, normalise.
        """
        return {"mode": "L" if self.channels == 1 else "RGB", "resize": [self.image_size, self.image_size],
                "center_crop": None, "mean": list(self.mean[: self.channels]),
                "std": list(self.std[: self.channels])}

    def collate_fn(self, split: str) -> Callable | None:
        """How a split's samples become a batch; None: PyTorch's default stacking."""
        return None

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        assert self.datasets is not None, "setup() must run before the loaders are asked for"
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
            collate_fn=self.collate_fn(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


ClassificationDataModule = VisionDataModule  # the name classification datamodules know it by


class TorchvisionDataModule(ClassificationDataModule):
    """A torchvision dataset with official train/test splits; validation is held out of train."""

    layout: str  # where the files must be, for the error message when they are not

    def __init__(
        self, root: str, download: bool = False, val_size: int = 5000, **options: Any
    ) -> None:
        super().__init__(**options)
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = val_size

    def make_dataset(self, train: bool, transform: Callable | None, download: bool = False) -> Any:
        """The torchvision dataset of one official split."""
        raise NotImplementedError

    def train_transform(self) -> Callable:
        """Augmentation for training images."""
        raise NotImplementedError

    def eval_transform(self) -> Callable:
        """Deterministic transform for validation and test images."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download:
            self.make_dataset(train=True, transform=None, download=True)
            self.make_dataset(train=False, transform=None, download=True)

    def build_datasets(self) -> dict[str, Dataset]:
        try:
            train_view = self.make_dataset(train=True, transform=self.train_transform())
        except RuntimeError as err:
            raise FileNotFoundError(
                f"{type(self).__name__}: no dataset under {self.root} ({err}). Expected "
                f"{self.root}/{self.layout}. Set data.download=true to download it there, or "
                "point data.root at the folder that holds it."
            ) from err
        eval_view = self.make_dataset(train=True, transform=self.eval_transform())
        test = self.make_dataset(train=False, transform=self.eval_transform())
        self.classes = list(train_view.classes)
        kept, held_out = stratified_split(train_view.targets, self.val_size, self.split_seed)
        return {
            "train": Subset(train_view, kept.tolist()),
            "val": Subset(eval_view, held_out.tolist()),
            "test": test,
        }

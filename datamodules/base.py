"""What every datamodule shares: splits, loaders and the class-count check; the dataset root (and
download) of those read from files."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch.utils.data import DataLoader, Dataset, Subset

from core.contracts import Preprocessing
from core.errors import ConfigError, DataError, MissingDataError
from datamodules.augment import Augment, Geometry


def stratified_split(
    labels: Sequence[int], held_out: float | int, seed: int, key: str = "data.val_fraction",
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): a fraction (float) or a count (int) of each class held out, fixed by `seed`.

    When the data cannot be stratified (a class with one image, or fewer images held out or kept
    than there are classes), a seeded unstratified split is used, with a warning naming `key`
    values that would allow stratification.
    """
    indices = np.arange(len(labels))
    if held_out <= 0:
        return indices, indices[:0]
    total = len(labels)
    count = held_out if isinstance(held_out, int) else math.ceil(held_out * total)  # as scikit-learn
    if count >= total:
        raise DataError(
            f"{key}={held_out} holds out {count} of the {total} images, leaving none to train on. "
            f"Set {key} {'below ' + str(total) if isinstance(held_out, int) else 'between 0 and 1'}."
        )
    problem = stratification_problem(labels, count, key, held_out, classes)
    if problem is None:
        kept, held = train_test_split(indices, test_size=held_out, random_state=seed,
                                      stratify=np.asarray(labels))
    else:
        rank_zero_warn(f"{problem} Holding out {count} images at random (data.split_seed={seed}) "
                       "instead, not stratified: some classes may be missing from the held-out split.")
        held, kept = np.split(np.random.default_rng(seed).permutation(total), [count])
    return np.sort(kept), np.sort(held)


def stratification_problem(
    labels: Sequence[int], count: int, key: str, held_out: float | int, classes: Sequence[str] | None
) -> str | None:
    """Why holding out `count` of `labels` cannot keep every class on both sides, or None if it can."""
    sizes = np.bincount(np.asarray(labels))
    present = int((sizes > 0).sum())
    single = [int(label) for label in np.flatnonzero(sizes == 1)]
    if single:
        named = [classes[i] if classes else str(i) for i in single]
        return (f"A stratified split needs at least 2 images of every class, and {len(single)} "
                f"class(es) have one ({', '.join(named[:5])}{', ...' if len(single) > 5 else ''}).")
    if present <= count <= len(labels) - present:
        return None
    total = len(labels)
    if 2 * present > total:
        hint = f"no {key} can: that needs at least {2 * present} images"
    elif isinstance(held_out, int):
        hint = f"{key} from {present} to {total - present} would allow it"
    else:
        low = math.ceil(present / total * 1000) / 1000
        high = math.floor((total - present) / total * 1000) / 1000
        hint = f"{key} from {low} to {high} would allow it"
    return (f"{key}={held_out} holds out {count} of the {total} images and keeps {total - count}: "
            f"with {present} classes a stratified split (every class on both sides) is impossible; "
            f"{hint}.")


def stratified_fold(
    labels: Sequence[int], num_folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (training, validation) of fold `fold` of `num_folds` stratified folds shuffled by `seed`:
    the validation folds are disjoint and together cover every index."""
    labels = np.asarray(labels)
    smallest = np.bincount(labels).min(initial=len(labels)) if len(labels) else 0
    if smallest < num_folds:
        raise DataError(
            f"data.num_folds={num_folds}, but a class has only {smallest} training image(s): every class "
            f"needs at least one per fold. Lower data.num_folds to {max(2, smallest)} or less."
        )
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    train, val = list(folds.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train), np.sort(val)


def loader_workers(num_workers: int | str, local_processes: int = 1) -> int:
    """`data.num_workers` as a count. `auto`: the CPUs this process may run on (its affinity, which
    SLURM and containers restrict), shared among the node's training processes, less one for each
    process's own work; an explicit number is kept."""
    if num_workers == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, cpus // max(1, local_processes) - 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"data.num_workers={num_workers!r}: give a number of loader processes (0: load "
                          "in the training process) or data.num_workers=auto (the CPUs available, less one).")
    return num_workers
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def batches_per_process(samples: int, batch_size: int, world_size: int, split: str, drop_last: bool) -> int:
    """The fewest batches any process runs of a split of `samples` images.

    Training shards are padded to equal size (Lightning's DistributedSampler); evaluation shards are
    not (every sample is scored once), so the last processes may hold one sample fewer.
    """
    if split == "train":
        per_process = math.ceil(samples / world_size)
        return per_process // batch_size if drop_last else math.ceil(per_process / batch_size)
    return math.ceil(samples // world_size / batch_size)


def smallest_working_fraction(batches: int) -> float:
    """The smallest fraction, in thousandths, of `batches` batches that still selects one."""
    fraction = math.ceil(1000 / batches) / 1000
    while int(batches * fraction) < 1:  # float rounding
        fraction += 0.001
    return round(fraction, 3)


def check_batch_limits(trainer: pl.Trainer | None, batches: dict[str, int], batch_size: int) -> None:
    """Refuse a fractional `trainer.limit_<split>_batches` that selects no batch of a split on some process.

    Lightning would stop at the start of that loop, after a traceback; `batches` is each split's
    fewest batches per process (`batches_per_process`).
    """
    if trainer is None:
        return
    for split, count in batches.items():
        limit = getattr(trainer, f"limit_{split}_batches", 1.0)
        if not isinstance(limit, float) or limit <= 0 or count == 0 or int(count * limit) >= 1:
            continue
        key = f"trainer.limit_{split}_batches"
        processes = (f"each of the {trainer.world_size} processes runs as few as"
                     if trainer.world_size > 1 else "the run has")
        raise ConfigError(
            f"{key}={limit} selects no {SPLIT_NAMES[split]} batch: {processes} {count} {SPLIT_NAMES[split]} "
            f"batch(es) of {batch_size} images, and {limit} x {count} < 1. Set {key}="
            f"{smallest_working_fraction(count)} or more (a fraction), or a number of batches: {key}=1."
        )


class FilesUnderRoot:
    """Mixed into the datamodules of datasets read from files under `data.root` (`~` expanded) before
    their base class. `data.download=true` fetches the files there first (`fetch`, in `prepare_data`) for
    the datasets that have a download; the others refuse it."""

    def __init__(self, root: str, download: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.root = Path(root).expanduser()
        self.download = download
        if download and type(self).fetch is FilesUnderRoot.fetch:
            raise ConfigError(f"data.download=true: {type(self).__name__} has no download. Put the dataset "
                              f"under data.root ({self.root}) as its data config describes, and drop "
                              "data.download.")

    def prepare_data(self) -> None:
        if self.download:
            self.fetch()

    def fetch(self) -> None:
        """Download the dataset into `root` (`data.download=true`; once, on one process per node)."""
        raise NotImplementedError


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
        num_workers: int | str = 0,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = False,
        drop_last: bool = False,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.channels = channels
        self.image_size = image_size
        self.batch_size = batch_size
        loader_workers(num_workers)  # checked now, resolved when the trainer says how many processes share
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
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
            self.check_splits()

    def check_splits(self) -> None:
        """Refuse an empty split, a training set that drop_last would leave without one batch, and a
        fractional `trainer.limit_*_batches` that selects no batch of a split on some process."""
        assert self.datasets is not None
        for split, dataset in self.datasets.items():
            if len(dataset) == 0:
                raise DataError(f"{type(self).__name__}: the {split} split has no images. Check "
                                "data.root and the data keys that size the splits (data.val_fraction, "
                                "data.val_size, data.<split>_scenes).")
        world_size = self.trainer.world_size if self.trainer is not None else 1
        for split in ("val", "test"):
            if split in self.datasets and len(self.datasets[split]) < world_size:
                raise DataError(
                    f"The {split} split has {len(self.datasets[split])} image(s) for {world_size} processes: "
                    "each process scores its own share of it and needs at least one. Use fewer processes "
                    "(trainer.devices) or a larger split."
                )
        per_process = math.ceil(len(self.datasets["train"]) / world_size)
        if self.drop_last and per_process < self.batch_size:
            raise DataError(
                f"data.drop_last=true with data.batch_size={self.batch_size} drops every training "
                f"image: each of the {world_size} process(es) has {per_process} of the "
                f"{len(self.datasets['train'])}, less than one batch, so nothing would train. Set "
                f"data.batch_size={per_process} or less, or data.drop_last=false."
            )
        check_batch_limits(self.trainer, {
            split: batches_per_process(len(dataset), self.batch_size, world_size, split, self.drop_last)
            for split, dataset in self.datasets.items()
        }, self.batch_size)

    def check_num_classes(self) -> None:
        """Fail clearly when the configured class count disagrees with the data."""
        if len(self.classes) != self.num_classes:
            names = ", ".join(self.classes[:8]) + (", ..." if len(self.classes) > 8 else "")
            raise DataError(
                f"data.num_classes={self.num_classes} but the {type(self).__name__} data has "
                f"{len(self.classes)} classes ({names}). Set data.num_classes={len(self.classes)}."
            )

    def inference_preprocessing(self) -> Preprocessing:
        """How a new image becomes a network input (colour mode, resize, crop, mean, std).

        `datamodules.transforms.preprocessing_transform` turns it into the transform; exported
        models carry it in their `model.json`. Default: resize to the training size, normalise.
        """
        return Preprocessing(mode="L" if self.channels == 1 else "RGB", mean=self.mean[: self.channels],
                             std=self.std[: self.channels], resize=(self.image_size, self.image_size))

    def collate_fn(self, split: str) -> Callable | None:
        """How a split's samples become a batch; None: PyTorch's default stacking."""
        return None

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        assert self.datasets is not None, "setup() must run before the loaders are asked for"
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.workers(),
            pin_memory=self.pins_memory(),
            persistent_workers=self.persistent_workers and self.workers() > 0,
            drop_last=drop_last,
            collate_fn=self.collate_fn(split),
        )

    def workers(self) -> int:
        """Loader processes: `num_workers`, with "auto" shared among this node's training processes."""
        return loader_workers(self.num_workers, self.trainer.num_devices if self.trainer is not None else 1)

    def pins_memory(self) -> bool:
        """`pin_memory`, where "auto" pins exactly when the trainer's device is a CUDA GPU."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class ClassificationDataModule(VisionDataModule):
    """Labelled images: the validation images are held out of the training set, or with
    `num_folds` (k-fold cross-validation) are its fold `fold`."""

    def __init__(self, *args: Any, num_folds: int | None = None, fold: int = 0, **options: Any) -> None:
        super().__init__(*args, **options)
        self.num_folds = num_folds
        self.fold = fold

    def setup(self, stage: str | None = None) -> None:
        if self.num_folds is not None and (self.num_folds < 2 or not 0 <= self.fold < self.num_folds):
            raise ConfigError(
                f"data.num_folds={self.num_folds} data.fold={self.fold}: k-fold cross-validation needs "
                "data.num_folds >= 2 and 0 <= data.fold < data.num_folds (data.num_folds=null: no folds). "
                "Sweep the folds with: python run.py -m data.num_folds=5 data.fold='range(5)'"
            )
        super().setup(stage)

    def split_validation(
        self, labels: Sequence[int], held_out: float | int, key: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices (training, validation) into the training set: fold `fold` of `num_folds`, or
        a stratified hold-out of `held_out` (a fraction or a count, set by `key`) without folds."""
        if self.num_folds is not None:
            return stratified_fold(labels, self.num_folds, self.fold, self.split_seed)
        return stratified_split(labels, held_out, self.split_seed, key, self.classes)


class TorchvisionDataModule(FilesUnderRoot, ClassificationDataModule):
    """A torchvision dataset with official train/test splits; validation is held out of train."""

    layout: str  # where the files must be, for the error message when they are not

    def __init__(
        self, root: str, val_size: int = 5000, augment: Augment | None = None, **options: Any
    ) -> None:
        super().__init__(root, **options)
        self.val_size = val_size
        self.augment = augment or Augment()

    def make_dataset(self, train: bool, transform: Callable | None, download: bool = False) -> Any:
        """The torchvision dataset of one official split."""
        raise NotImplementedError

    def geometry(self) -> Geometry:
        """The data's own crops and flip, which `augment` builds its transforms around."""
        raise NotImplementedError

    def train_transform(self) -> Callable:
        """Augmentation for training images."""
        crop_size = self.augment.train_crop_size or self.image_size
        return self.augment.train_transform(self.geometry(), crop_size, self.mean, self.std)

    def eval_transform(self) -> Callable:
        """Deterministic transform for validation and test images."""
        return self.augment.eval_transform(self.geometry(), self.mean, self.std)

    def fetch(self) -> None:
        self.make_dataset(train=True, transform=None, download=True)
        self.make_dataset(train=False, transform=None, download=True)

    def build_datasets(self) -> dict[str, Dataset]:
        try:
            train_view = self.make_dataset(train=True, transform=self.train_transform())
        except RuntimeError as err:
            raise MissingDataError(
                f"{type(self).__name__}: no dataset under {self.root} ({err}). Expected "
                f"{self.root}/{self.layout}. Set data.download=true to download it there, or "
                "point data.root at the folder that holds it."
            ) from err
        eval_view = self.make_dataset(train=True, transform=self.eval_transform())
        test = self.make_dataset(train=False, transform=self.eval_transform())
        self.classes = list(train_view.classes)
        kept, held_out = self.split_validation(train_view.targets, self.val_size, "data.val_size")
        return {
            "train": Subset(train_view, kept.tolist()),
            "val": Subset(eval_view, held_out.tolist()),
            "test": test,
        }

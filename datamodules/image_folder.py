"""Any tree of image files `<root>/<split>/<class>/<image>`, decoded and augmented ImageNet-style."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from core.contracts import Preprocessing
from core.errors import DataError, MissingDataError
from datamodules.augment import Augment, Geometry, resize_and_crop
from datamodules.base import ClassificationDataModule, FilesUnderRoot
from datamodules.gpu_decode import (
    EncodedBatch,
    EncodedImageFiles,
    check_decoder,
    collate_encoded,
    decode_on_device,
)
from datamodules.image_files import (
    DEFAULT_MAX_PIXELS,
    ImageFileDataset,
    drop_unreadable,
    is_clutter,
    report_ignored,
    visible_image_files,
)
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

Samples = list[tuple[Path, int]]


class ImageFolderDataModule(FilesUnderRoot, ClassificationDataModule):
    """`train/` is required; `val/` and `test/` are optional (split from train, or val reused)."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        resize_size: int = 256,
        val_fraction: float = 0.1,
        skip_bad_images: bool = False,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        augment: Augment | None = None,
        decode: str = "cpu",
        **options: Any,
    ) -> None:
        super().__init__(root, **options)
        check_decoder(decode)
        self.decode = decode
        self.device_transforms: dict[str, Callable] = {}  # data.decode=gpu: each split's, run on the device
        self.resize_size = resize_size
        self.val_fraction = val_fraction
        self.skip_bad_images = skip_bad_images
        self.max_image_pixels = max_image_pixels
        self.augment = augment or Augment()

    def geometry(self) -> Geometry:
        """ImageNet-style: resize then random crop and flip to train; resize then centre crop to evaluate."""
        train_crop, eval_resize, eval_crop = self.augment.crop_sizes(self.image_size, self.resize_size)
        interpolation = self.augment.interpolation_mode
        return Geometry(random=resize_and_crop(self.resize_size, train_crop, interpolation, random_crop=True),
                        fixed=resize_and_crop(eval_resize, eval_crop, interpolation), hflip=0.5)

    def decode_size(self) -> int | None:
        """The shorter side large JPEGs are decoded at: no smaller than any resize or crop that follows.

        None (full size) with RandomResizedCrop, whose small crops are upscaled to the crop size.
        """
        if self.augment.random_resized_crop:
            return None
        train_crop, eval_resize, eval_crop = self.augment.crop_sizes(self.image_size, self.resize_size)
        return max(self.resize_size, eval_resize or 0, train_crop, eval_crop)

    def inference_preprocessing(self) -> Preprocessing:
        """Evaluation's resize of the shorter side and centre crop."""
        resize_crop = {"resize": self.resize_size, "center_crop": self.image_size}
        return replace(super().inference_preprocessing(), **resize_crop)

    def find_samples(self) -> dict[str, Samples]:
        """The (path, label) samples of each split present on disk; sets `self.classes`."""
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise MissingDataError(
                f"No training folder {train_dir}. An image folder dataset needs "
                "<root>/train/<class>/<image> (and optionally val/ and test/ alike): set data.root."
            )
        self.classes = sorted(entry.name for entry in os.scandir(train_dir)
                              if entry.is_dir() and not is_clutter(entry.name))
        splits, ignored = {}, 0
        for split in ("train", "val", "test"):
            if (self.root / split).is_dir():
                splits[split], left_out = self.split_samples(self.root / split, split == "train")
                ignored += left_out
        report_ignored(ignored, self.root)
        return splits

    def split_samples(self, split_dir: Path, required: bool) -> tuple[Samples, int]:
        """The (path, label) samples of one split folder, class folder by class folder (as torchvision's
        ImageFolder orders them), and how many image files were ignored as clutter (`is_clutter`)."""
        samples, ignored, empty = [], 0, []
        for label, name in enumerate(self.classes):
            class_dir = split_dir / name
            files, left_out = visible_image_files(class_dir) if class_dir.is_dir() else ([], 0)
            samples += [(path, label) for path in files]
            ignored += left_out
            empty += [] if files else [name]
        for entry in os.scandir(split_dir):  # clutter beside the class folders (e.g. __MACOSX/, ._cat)
            if is_clutter(entry.name) and entry.is_dir():
                files, left_out = visible_image_files(Path(entry.path))
                ignored += len(files) + left_out
            elif is_clutter(entry.name):
                ignored += entry.name.lower().endswith(IMG_EXTENSIONS)
        if required and empty:
            raise DataError(
                f"Found no image ({', '.join(IMG_EXTENSIONS)}) in the class folder(s) {', '.join(empty)} of "
                f"{split_dir}.\nEvery folder in {split_dir} is a class and needs at least one image: add "
                "images to the empty class folder(s), or delete them and adjust data.num_classes."
            )
        if not samples:
            instead = " to hold out data.val_fraction of train/ instead" if split_dir.name == "val" else ""
            raise DataError(
                f"The {split_dir.name} folder {split_dir} holds no images ({', '.join(IMG_EXTENSIONS)}) in "
                f"class folders <class>/<image>. Put the {split_dir.name} images there, or delete the "
                f"folder{instead}."
            )
        return samples, ignored

    def build_datasets(self) -> dict[str, Dataset]:
        samples = drop_unreadable(self.find_samples(), self.skip_bad_images, self.max_image_pixels)
        if self.num_folds is not None and "test" in samples:  # val/ joins the images the folds cover
            samples["train"] += samples.pop("val", [])
        samples.setdefault("test", samples.get("val"))  # no test/: val/ is the test set
        if self.num_folds is not None or "val" not in samples:
            if self.num_folds is None and self.val_fraction <= 0:
                raise DataError(
                    f"data.val_fraction={self.val_fraction} and no {self.root / 'val'} folder: there would "
                    "be no validation split, so no best checkpoint and nothing to choose it by. Set "
                    "data.val_fraction above 0 (e.g. 0.1) to hold out part of the training images, or "
                    "add a val/ folder."
                )
            labels = [label for _, label in samples["train"]]
            kept, held_out = self.split_validation(labels, self.val_fraction, "data.val_fraction")
            samples["val"] = [samples["train"][i] for i in held_out]
            samples["train"] = [samples["train"][i] for i in kept]
        if samples["test"] is None:
            samples["test"] = samples["val"]
        mode = "L" if self.channels == 1 else "RGB"
        mean, std = self.mean[: self.channels], self.std[: self.channels]
        geometry = self.geometry()
        train_tf = self.augment.train_transform(geometry, self.augment.train_crop_size or self.image_size,
                                                mean, std)
        eval_tf = self.augment.eval_transform(geometry, mean, std)
        transforms = {split: train_tf if split == "train" else eval_tf for split in samples}
        if self.decode == "gpu":  # workers read the files; the device decodes and transforms
            self.device_transforms, transforms = transforms, dict.fromkeys(samples)
        dataset = EncodedImageFiles if self.decode == "gpu" else ImageFileDataset
        return {
            split: dataset(
                split_samples, transforms[split], mode=mode, min_size=self.decode_size(),
                skip_bad_images=self.skip_bad_images, max_pixels=self.max_image_pixels,
            )
            for split, split_samples in samples.items()
        }

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            check_decoder(self.decode, self.trainer.strategy.root_device)
        super().setup(stage)

    def collate_fn(self, split: str) -> Callable | None:
        return collate_encoded(split) if self.decode == "gpu" else None

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """data.decode=gpu: decode and transform the batch on `device`; otherwise move it there."""
        if isinstance(batch, EncodedBatch):
            mode = "L" if self.channels == 1 else "RGB"
            return decode_on_device(batch, device, self.device_transforms[batch.split], mode,
                                    self.skip_bad_images)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

"""Any tree of image files `<root>/<split>/<class>/<image>`, decoded and augmented ImageNet-style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from datamodules.base import ClassificationDataModule, stratified_split
from datamodules.image_files import ImageFileDataset
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_crop_eval, resize_crop_train

Samples = list[tuple[Path, int]]


class ImageFolderDataModule(ClassificationDataModule):
    """`train/` is required; `val/` and `test/` are optional (split from train, or val reused)."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        resize_size: int = 256,
        val_fraction: float = 0.1,
        skip_bad_images: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.root = Path(root).expanduser()
        self.resize_size = resize_size
        self.val_fraction = val_fraction
        self.skip_bad_images = skip_bad_images

    def inference_preprocessing(self) -> dict[str, Any]:
        """Evaluation's resize of the shorter side and centre crop."""
        resize_crop = {"resize": self.resize_size, "center_crop": self.image_size}
        return {**super().inference_preprocessing(), **resize_crop}

    def find_samples(self) -> dict[str, Samples]:
        """The (path, label) samples of each split present on disk; sets `self.classes`."""
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"No training folder {train_dir}. An image folder dataset needs "
                "<root>/train/<class>/<image> (and optionally val/ and test/ alike): set data.root."
            )
        self.classes, class_to_idx = find_classes(train_dir)
        splits = {}
        for split in ("train", "val", "test"):
            if (self.root / split).is_dir():
                found = make_dataset(self.root / split, class_to_idx, IMG_EXTENSIONS,
                                     allow_empty=split != "train")
                splits[split] = [(Path(path), label) for path, label in found]
        return splits

    def build_datasets(self) -> dict[str, Dataset]:
        samples = self.find_samples()
        if "val" not in samples:
            labels = [label for _, label in samples["train"]]
            kept, held_out = stratified_split(labels, self.val_fraction, self.split_seed)
            samples["val"] = [samples["train"][i] for i in held_out]
            samples["train"] = [samples["train"][i] for i in kept]
        samples.setdefault("test", samples["val"])
        mode = "L" if self.channels == 1 else "RGB"
        mean, std = self.mean[: self.channels], self.std[: self.channels]
        train_tf = resize_crop_train(self.image_size, self.resize_size, mean, std)
        eval_tf = resize_crop_eval(self.image_size, self.resize_size, mean, std)
        return {
            split: ImageFileDataset(
                split_samples, train_tf if split == "train" else eval_tf, mode=mode,
                min_size=self.resize_size, skip_bad_images=self.skip_bad_images,
            )
            for split, split_samples in samples.items()
        }

"""Cityscapes in torchvision's layout: the 34 labelIds mapped to the 19 evaluated train ids, 255 ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import Cityscapes

from core.errors import DataError
from datamodules.base import FilesUnderRoot
from datamodules.image_files import report_ignored
from datamodules.segmentation import Pairs, SegmentationDataModule, visible_pairs
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

TRAIN_CLASSES = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < 255), key=lambda c: c.train_id)
CITYSCAPES_CLASSES = tuple(c.name for c in TRAIN_CLASSES)
CITYSCAPES_PALETTE = tuple(c.color for c in TRAIN_CLASSES)
LABEL_IDS = [c.id for c in Cityscapes.classes if c.id >= 0]  # the values of *_labelIds.png


def train_id_map(ignore_index: int = 255) -> torch.Tensor:
    """Lookup table from labelIds (0..33) to train ids (0..18), every other value to `ignore_index`."""
    table = torch.full((256,), ignore_index, dtype=torch.long)
    for c in TRAIN_CLASSES:
        table[c.id] = c.train_id
    return table


def read_cityscapes_split(root: Path, split: str, mode: str = "fine") -> tuple[Pairs, int]:
    """(leftImg8bit PNG, labelIds PNG) pairs of a split, as torchvision's `Cityscapes` lists them, but for
    clutter (hidden or macOS metadata files); and how many were left out as clutter."""
    try:
        dataset = Cityscapes(str(root), split=split, mode=mode, target_type="semantic")
    except RuntimeError as err:  # torchvision: "Dataset not found or incomplete"
        folder = "gtFine" if mode == "fine" else "gtCoarse"
        raise DataError(
            f"Cityscapes {split} ({mode}) not found under {root}: expected {root}/leftImg8bit/{split}/"
            f"<city>/*_leftImg8bit.png and {root}/{folder}/{split}/<city>/*_{folder}_labelIds.png (or the "
            f"leftImg8bit_trainvaltest.zip and {folder} zip files there, which are extracted). "
            "Set data.root to the folder holding leftImg8bit/ and gtFine/."
        ) from err
    pairs = sorted((Path(image), Path(targets[0]))
                   for image, targets in zip(dataset.images, dataset.targets, strict=True))
    return visible_pairs(pairs, root)


class CityscapesDataModule(FilesUnderRoot, SegmentationDataModule):
    """`<root>/{leftImg8bit,gtFine}`: trains on `train` (plus `train_extra` with coarse labels when
    `use_coarse`), validates and tests on `val` (the test split's labels are withheld)."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: str, use_coarse: bool = False, **options: Any) -> None:
        super().__init__(root, **options)
        self.use_coarse = use_coarse

    def allowed_mask_values(self) -> list[int]:
        return LABEL_IDS

    def build_datasets(self) -> dict[str, Dataset]:
        self.classes = list(CITYSCAPES_CLASSES)
        train, ignored = read_cityscapes_split(self.root, "train")
        if self.use_coarse:
            extra, more = read_cityscapes_split(self.root, "train_extra", mode="coarse")
            train, ignored = train + extra, ignored + more
        val, more = read_cityscapes_split(self.root, "val")
        report_ignored(ignored + more, self.root)
        return self.file_datasets({"train": train, "val": val, "test": val}, train_id_map(self.ignore_index))

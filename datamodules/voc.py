"""Pascal VOC 2012 segmentation: 20 object classes and background, 255 marking void borders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import VOCSegmentation

from core.errors import MissingDataError
from datamodules.base import FilesUnderRoot
from datamodules.segmentation import Pairs, SegmentationDataModule, held_out_split
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def read_voc_split(voc_dir: Path, split: str) -> Pairs:
    """(JPEG, palette PNG) pairs listed in `ImageSets/Segmentation/<split>.txt`."""
    list_file = voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise MissingDataError(
            f"Pascal VOC split list {list_file} does not exist. Expected {voc_dir}/"
            "{JPEGImages,SegmentationClass,ImageSets/Segmentation}: set data.root to the folder "
            "that holds VOCdevkit/, or data.download=true to download it there."
        )
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    return [(voc_dir / "JPEGImages" / f"{name}.jpg", voc_dir / "SegmentationClass" / f"{name}.png")
            for name in names]


class VOCDataModule(FilesUnderRoot, SegmentationDataModule):
    """`<root>/VOCdevkit/VOC2012`: trains on `train_split` less a seeded validation part, tests on `val`."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        test_split: str = "val",
        val_fraction: float = 0.1,
        **options: Any,
    ) -> None:
        super().__init__(root, **options)
        self.train_split = train_split
        self.test_split = test_split
        self.val_fraction = val_fraction

    def fetch(self) -> None:
        VOCSegmentation(str(self.root), year="2012", image_set="trainval", download=True)

    def build_datasets(self) -> dict[str, Dataset]:
        voc_dir = self.root / "VOCdevkit" / "VOC2012"
        self.classes = list(VOC_CLASSES)
        train = read_voc_split(voc_dir, self.train_split)
        pairs = {**held_out_split(train, self.val_fraction, self.split_seed),
                 "test": read_voc_split(voc_dir, self.test_split)}
        return self.file_datasets(pairs)

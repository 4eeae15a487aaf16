"""Oxford-IIIT Pet trimaps: pet, background and the uncertain border between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets import OxfordIIITPet

from core.errors import MissingDataError
from datamodules.base import FilesUnderRoot
from datamodules.segmentation import Pairs, SegmentationDataModule, held_out_split
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

FOREGROUND, BACKGROUND, BORDER = 1, 2, 3  # trimap values on disk


def trimap_label_map(border_as_class: bool, ignore_index: int = 255) -> torch.Tensor:
    """Lookup table from trimap values to classes: background 0, pet 1, border 2 or ignored."""
    table = torch.full((256,), ignore_index, dtype=torch.long)
    table[BACKGROUND], table[FOREGROUND] = 0, 1
    table[BORDER] = 2 if border_as_class else ignore_index
    return table


def read_pets_split(pets_dir: Path, list_name: str) -> Pairs:
    """(JPEG, trimap PNG) pairs of an annotation list whose lines start with the image name."""
    list_file = pets_dir / "annotations" / list_name
    if not list_file.is_file():
        raise MissingDataError(
            f"Oxford-IIIT Pet list {list_file} does not exist. Expected {pets_dir}/images/*.jpg and "
            f"{pets_dir}/annotations/{{trimaps/*.png,trainval.txt,test.txt}}: set data.root to the "
            "folder that holds oxford-iiit-pet/, or data.download=true to download it there."
        )
    names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    return [(pets_dir / "images" / f"{name}.jpg", pets_dir / "annotations" / "trimaps" / f"{name}.png")
            for name in names]


class PetsDataModule(FilesUnderRoot, SegmentationDataModule):
    """`<root>/oxford-iiit-pet`: trains on `trainval` less a seeded validation part, tests on `test`."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        border_as_class: bool = False,
        val_fraction: float = 0.1,
        **options: Any,
    ) -> None:
        super().__init__(root, **options)
        self.border_as_class = border_as_class
        self.val_fraction = val_fraction

    def fetch(self) -> None:
        OxfordIIITPet(str(self.root), split="trainval", target_types="segmentation", download=True)

    def allowed_mask_values(self) -> list[int]:
        return [FOREGROUND, BACKGROUND, BORDER]

    def build_datasets(self) -> dict[str, Dataset]:
        pets_dir = self.root / "oxford-iiit-pet"
        self.classes = ["background", "pet", "border"] if self.border_as_class else ["background", "pet"]
        pairs = {**held_out_split(read_pets_split(pets_dir, "trainval.txt"), self.val_fraction,
                                  self.split_seed),
                 "test": read_pets_split(pets_dir, "test.txt")}
        return self.file_datasets(pairs, trimap_label_map(self.border_as_class, self.ignore_index))

"""Any folder of images and masks: `<split>/images/<name>.<ext>` with `<split>/masks/<name>.png`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from core.errors import MissingDataError
from datamodules.base import FilesUnderRoot
from datamodules.image_files import report_ignored
from datamodules.segmentation import Pairs, SegmentationDataModule, held_out_split, visible_pairs
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD


def find_pairs(split_dir: Path, mask_suffix: str = ".png") -> tuple[Pairs, int]:
    """Every image of `split_dir/images` with the mask of the same name in `split_dir/masks`, but for
    clutter (hidden or macOS metadata files); and how many image files were left out as clutter."""
    images = sorted(p for p in (split_dir / "images").iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
    pairs = [(image, split_dir / "masks" / f"{image.stem}{mask_suffix}") for image in images]
    return visible_pairs(pairs, split_dir)


class SegFolderDataModule(FilesUnderRoot, SegmentationDataModule):
    """`train/` is required; `val/` and `test/` are optional (held out of train, or val reused).

    Mask values are class indices (0 .. num_classes-1) or the ignore index; every mask is checked.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = None,
        mask_suffix: str = ".png",
        val_fraction: float = 0.1,
        **options: Any,
    ) -> None:
        super().__init__(root, **options)
        self.class_names = list(classes) if classes else None
        self.mask_suffix = mask_suffix
        self.val_fraction = val_fraction

    def build_datasets(self) -> dict[str, Dataset]:
        if not (self.root / "train" / "images").is_dir():
            raise MissingDataError(
                f"No folder {self.root / 'train' / 'images'}. A segmentation folder needs "
                "<root>/train/images/<name>.jpg with <root>/train/masks/<name>.png (and optionally "
                "val/ and test/ alike): set data.root."
            )
        self.classes = self.class_names or [str(i) for i in range(self.num_classes)]
        found = {split: find_pairs(self.root / split, self.mask_suffix)
                 for split in ("train", "val", "test") if (self.root / split / "images").is_dir()}
        pairs = {split: split_pairs for split, (split_pairs, _) in found.items()}
        report_ignored(sum(ignored for _, ignored in found.values()), self.root)
        if "val" not in pairs:
            pairs.update(held_out_split(pairs["train"], self.val_fraction, self.split_seed))
        pairs.setdefault("test", pairs["val"])
        return self.file_datasets(pairs)

"""What segmentation datamodules share: reading and checking masks, (image, mask) datasets, padding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from datamodules.base import VisionDataModule
from datamodules.image_files import read_image
from datamodules.transforms import segmentation_eval, segmentation_train

Pairs = list[tuple[Path, Path]]
MASK_MODES = ("P", "L", "I", "I;16", "1")  # single-channel modes whose values are class indices


class MaskError(ValueError):
    """A mask that cannot be read as class indices, or that holds values outside the classes."""


def read_mask(path: str | Path) -> torch.Tensor:
    """A label PNG's raw values as a (H, W) int64 tensor: palette indices are kept, never recoloured."""
    with Image.open(path) as mask:
        if mask.mode not in MASK_MODES:
            raise MaskError(
                f"Mask {path} is a {mask.mode} image, but masks must be single-channel (palette 'P' "
                "or grayscale 'L') images whose values are class indices. A palette PNG converted "
                "to RGB has lost its indices: restore the original file (image editors and some "
                "converters do this when saving)."
            )
        return torch.from_numpy(np.array(mask, dtype=np.int64))


def mask_values(path: Path) -> np.ndarray:
    """The distinct values of one mask file."""
    return np.unique(read_mask(path).numpy())


def check_files(pairs: Sequence[tuple[Path, Path]], what: str) -> None:
    """Raise one error naming every image file that is missing and every image without its mask."""
    problems = [f"{image} does not exist" for image, _ in pairs if not Path(image).is_file()]
    problems += [f"{image} has no mask {mask}" for image, mask in pairs if not Path(mask).is_file()]
    if problems:
        shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise FileNotFoundError(
            f"{len(problems)} problem(s) with the files of {what}:\n  {shown}\nEvery image needs "
            "a mask of the same name: check that data.root points at a complete copy of the dataset."
        )


def check_masks(
    pairs: Sequence[tuple[Path, Path]], allowed: Sequence[int], what: str, workers: int = 4
) -> None:
    """Raise one error naming every mask that is unreadable or holds values not in `allowed`."""
    allowed_set = set(int(v) for v in allowed)
    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(mask_values, [mask for _, mask in pairs]))
    bad = [(mask, sorted(set(values.tolist()) - allowed_set))
           for (_, mask), values in zip(pairs, found, strict=True)]
    bad = [(mask, values) for mask, values in bad if values]
    if bad:
        shown = "\n  ".join(f"{mask}: {values}" for mask, values in bad[:10])
        raise MaskError(
            f"{len(bad)} mask(s) of {what} hold values outside the allowed {sorted(allowed_set)}:\n"
            f"  {shown}{chr(10) + '  ...' if len(bad) > 10 else ''}\nMask values must be class "
            "indices below data.num_classes or the ignore index: fix data.num_classes or the masks."
        )


class SegmentationFileDataset(Dataset):
    """(image, mask) file pairs through a joint transform; `label_map` turns raw mask values into classes."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        transform: Callable[..., Any] | None = None,
        mode: str = "RGB",
        label_map: torch.Tensor | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.mode = mode
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = tv_tensors.Image(read_image(image_path, self.mode))
        mask = read_mask(mask_path)
        if mask.shape != image.shape[-2:]:
            raise MaskError(f"Mask {mask_path} is {tuple(mask.shape)} but image {image_path} is "
                            f"{tuple(image.shape[-2:])}: each mask must match its image's size.")
        if self.label_map is not None:
            mask = self.label_map[mask]
        mask = tv_tensors.Mask(mask.unsqueeze(0))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)[0].long()


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples of different sizes: pad right/bottom to the largest, masks with `ignore_index`."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images, masks = [], []
    for image, mask in batch:
        pad = (0, width - image.shape[-1], 0, height - image.shape[-2])
        images.append(F.pad(image, pad, value=0.0))
        masks.append(F.pad(mask, pad, value=ignore_index))
    return torch.stack(images), torch.stack(masks)


def held_out_split(pairs: Pairs, fraction: float, seed: int) -> dict[str, Pairs]:
    """`train` and `val` pairs, holding out `fraction` of them (at least one) chosen by `seed`."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    held_out = set(order[: max(1, int(round(fraction * len(pairs))))].tolist())
    return {"train": [p for i, p in enumerate(pairs) if i not in held_out],
            "val": [p for i, p in enumerate(pairs) if i in held_out]}


class SegmentationDataModule(VisionDataModule):
    """Images and masks: random scale/flip/crop to train, full resolution (padded batches) to evaluate.

    `image_size` is the training crop; `base_size` the side that `scale_range` multiplies.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        image_size: int = 480,
        base_size: int = 520,
        scale_range: Sequence[float] = (0.5, 2.0),
        hflip: bool = True,
        ignore_index: int = 255,
        check_masks: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(num_classes, channels, image_size, **options)
        self.base_size = base_size
        self.scale_range = tuple(scale_range)
        self.hflip = hflip
        self.ignore_index = ignore_index
        self.check_masks = check_masks

    def train_transform(self) -> Callable:
        """Joint random scale, flip and crop (padding masks with the ignore index)."""
        mean, std = self.mean[: self.channels], self.std[: self.channels]
        return segmentation_train(self.image_size, self.base_size, mean, std, self.scale_range,
                                  self.hflip, self.ignore_index)

    def eval_transform(self) -> Callable:
        """Normalisation only: evaluation is at full resolution."""
        return segmentation_eval(self.mean[: self.channels], self.std[: self.channels])

    def inference_preprocessing(self) -> dict[str, Any]:
        """Full resolution, as evaluation: normalisation only."""
        return {**super().inference_preprocessing(), "resize": None}

    def collate_fn(self, split: str) -> Callable:
        return partial(pad_collate, ignore_index=self.ignore_index)

    def allowed_mask_values(self) -> list[int]:
        """Raw mask values that may appear on disk."""
        return [*range(self.num_classes), self.ignore_index]

    def file_datasets(
        self, pairs: dict[str, Pairs], label_map: torch.Tensor | None = None
    ) -> dict[str, Dataset]:
        """Check the class count, files and masks (unless data.check_masks=false); wrap them in datasets."""
        self.check_num_classes()
        for split, split_pairs in pairs.items():
            if not split_pairs:
                raise FileNotFoundError(f"{type(self).__name__}: the {split} split has no images.")
            check_files(split_pairs, f"the {split} split")
            if self.check_masks:
                check_masks(split_pairs, self.allowed_mask_values(), f"the {split} split")
        mode = "L" if self.channels == 1 else "RGB"
        return {
            split: SegmentationFileDataset(
                split_pairs, self.train_transform() if split == "train" else self.eval_transform(),
                mode=mode, label_map=label_map,
            )
            for split, split_pairs in pairs.items()
        }

"""What segmentation datamodules share: reading and checking masks, (image, mask) datasets, padding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from core.contracts import Preprocessing
from core.errors import ConfigError, DataError, MissingDataError
from datamodules.base import VisionDataModule
from datamodules.image_files import (
    DEFAULT_MAX_PIXELS,
    UnreadableImageError,
    is_clutter,
    listing,
    read_image,
    scan_images,
)
from datamodules.transforms import segmentation_cutmix, segmentation_eval, segmentation_train

Pairs = list[tuple[Path, Path]]
MASK_MODES = ("P", "L", "I", "I;16", "1")  # single-channel modes whose values are class indices


class MaskError(DataError):
    """A mask that cannot be read as class indices, holds values outside the classes, or misfits its image."""


def read_mask(path: str | Path) -> torch.Tensor:
    """A label PNG's raw values as a (H, W) int64 tensor: palette indices are kept, never recoloured."""
    with open_mask(path) as mask:
        if mask.mode not in MASK_MODES:
            raise MaskError(
                f"Mask {path} is a {mask.mode} image, but masks must be single-channel (palette 'P' "
                "or grayscale 'L') images whose values are class indices. A palette PNG converted "
                "to RGB has lost its indices: restore the original file (image editors and some "
                "converters do this when saving)."
            )
        try:
            return torch.from_numpy(np.array(mask, dtype=np.int64))
        except (OSError, ValueError, SyntaxError) as err:
            raise MaskError(f"Cannot read mask {path}: {err}. Replace the file.") from err


def open_mask(path: str | Path) -> Image.Image:
    """Pillow's lazily opened mask; a file Pillow cannot identify raises MaskError naming it."""
    try:
        return Image.open(path)
    except (UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise MaskError(f"Cannot read mask {path}: not an image Pillow knows, or its header is "
                        "corrupt. Replace the file.") from err


def mask_values_and_size(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The distinct values of one mask file, and its (width, height)."""
    mask = read_mask(path).numpy()
    return np.unique(mask), (mask.shape[1], mask.shape[0])


def mask_size(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """No values (not read), and the (width, height) of one mask file from its header."""
    with open_mask(path) as mask:
        return np.zeros(0, dtype=np.int64), mask.size


def check_files(pairs: Sequence[tuple[Path, Path]], what: str) -> None:
    """Raise one error naming every image file that is missing and every image without its mask."""
    problems = [f"{image} does not exist" for image, _ in pairs if not Path(image).is_file()]
    problems += [f"{image} has no mask {mask}" for image, mask in pairs if not Path(mask).is_file()]
    if problems:
        raise MissingDataError(
            f"{len(problems)} problem(s) with the files of {what}:\n{listing(problems)}\nEvery image "
            "needs a mask of the same name: check that data.root points at a complete copy of the dataset."
        )


def check_images(pairs: Pairs, what: str, max_pixels: int) -> dict[Path, tuple[int, int]]:
    """Header-scan every image of `pairs`; raise naming all unreadable ones, else return their sizes."""
    sizes, problems = scan_images([image for image, _ in pairs], max_pixels)
    if problems:
        raise UnreadableImageError(
            f"{len(problems)} image(s) of {what} cannot be read:\n{listing(list(problems.values()))}\n"
            "Replace them, or delete them with their masks (or from the split list)."
        )
    return sizes


def check_mask_sizes(
    pairs: Sequence[tuple[Path, Path]], image_sizes: dict[Path, tuple[int, int]],
    mask_sizes: Sequence[tuple[int, int]], what: str,
) -> None:
    """Raise one error naming every mask whose size differs from its (upright) image's."""
    mismatched = [f"{mask} is {mw}x{mh}, its image {image} {image_sizes[Path(image)][0]}x"
                  f"{image_sizes[Path(image)][1]}"
                  for (image, mask), (mw, mh) in zip(pairs, mask_sizes, strict=True)
                  if image_sizes[Path(image)] != (mw, mh)]
    if mismatched:
        raise MaskError(
            f"{len(mismatched)} mask(s) of {what} differ in size from their image (width x height, "
            f"after the image's EXIF orientation):\n{listing(mismatched)}\nEach mask must label its "
            "image pixel for pixel: re-export the masks at their images' size."
        )


def check_mask_values(
    pairs: Sequence[tuple[Path, Path]], found: Sequence[np.ndarray], allowed: Sequence[int], what: str
) -> None:
    """Raise one error naming every mask that holds values not in `allowed`."""
    allowed_set = set(int(v) for v in allowed)
    bad = [(mask, sorted(set(values.tolist()) - allowed_set))
           for (_, mask), values in zip(pairs, found, strict=True)]
    bad = [f"{mask}: {values}" for mask, values in bad if values]
    if bad:
        raise MaskError(
            f"{len(bad)} mask(s) of {what} hold values outside the allowed {sorted(allowed_set)}:\n"
            f"{listing(bad)}\nMask values must be class indices below data.num_classes or the ignore "
            "index: fix data.num_classes or the masks."
        )


class SegmentationFileDataset(Dataset):
    """(image, mask) file pairs through a joint transform; `label_map` turns raw mask values into classes."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        transform: Callable[..., Any] | None = None,
        mode: str = "RGB",
        label_map: torch.Tensor | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.mode = mode
        self.label_map = label_map
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = tv_tensors.Image(read_image(image_path, self.mode, max_pixels=self.max_pixels))
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


def visible_pairs(pairs: Pairs, root: Path) -> tuple[Pairs, int]:
    """The pairs whose image is not clutter below `root` (`is_clutter`: hidden or macOS metadata files and
    folders, such as AppleDouble `._<name>.jpg` beside every image), and how many were left out."""
    kept = [pair for pair in pairs if not any(is_clutter(part) for part in pair[0].relative_to(root).parts)]
    return kept, len(pairs) - len(kept)


def cutmix_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_collate`, then `segmentation_cutmix` of the batch's image/mask pairs."""
    return segmentation_cutmix(*pad_collate(batch, ignore_index), alpha)


def held_out_split(pairs: Pairs, fraction: float, seed: int) -> dict[str, Pairs]:
    """`train` and `val` pairs, holding out `fraction` of them (at least one) chosen by `seed`."""
    if fraction <= 0:
        raise DataError(
            f"data.val_fraction={fraction} and no validation split: there would be nothing to "
            "validate on, no best checkpoint. Set data.val_fraction above 0 (e.g. 0.1)"
            " or, for data=seg_folder, add a val/ folder."
        )
    order = np.random.default_rng(seed).permutation(len(pairs))
    held_out = set(order[: max(1, int(round(fraction * len(pairs))))].tolist())
    return {"train": [p for i, p in enumerate(pairs) if i not in held_out],
            "val": [p for i, p in enumerate(pairs) if i in held_out]}


class SegmentationDataModule(VisionDataModule):
    """Images and masks: random scale/flip/crop to train, full resolution (padded batches) to evaluate.

    `image_size` is the training crop; `base_size` the side that `scale_range` multiplies;
    `photometric_distortion` jitters training images' colours after the joint geometry.
    `cat_max_ratio` < 1 re-draws crops where one class has more than that share of the pixels.
    `rotation` (degrees) rotates training images and masks together; `cutmix_alpha` > 0 pastes a box of
    the next image and mask of each training batch into each (CutMix, the box's area ~ Beta(alpha, alpha)).
    `palette` (one RGB triple per class) colours the overlays; None: Pascal VOC's colour map.
    """

    palette: Sequence[tuple[int, int, int]] | None = None

    def __init__(
        self,
        num_classes: int,
        channels: int = 3,
        image_size: int = 480,
        base_size: int = 520,
        scale_range: Sequence[float] = (0.5, 2.0),
        hflip: bool = True,
        ignore_index: int = 255,
        cat_max_ratio: float = 1.0,
        check_masks: bool = True,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        photometric_distortion: bool = False,
        rotation: float = 0.0,
        cutmix_alpha: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(num_classes, channels, image_size, **options)
        if rotation < 0 or cutmix_alpha < 0:
            raise ConfigError(f"data.rotation={rotation}, data.cutmix_alpha={cutmix_alpha}: give degrees "
                              ">= 0 and an alpha >= 0 (0 turns each off).")
        self.rotation = rotation
        self.cutmix_alpha = cutmix_alpha
        self.max_image_pixels = max_image_pixels
        self.photometric_distortion = photometric_distortion
        if not 0.0 < cat_max_ratio <= 1.0:
            raise ConfigError(f"data.cat_max_ratio={cat_max_ratio}: use a share in (0, 1]; 1 keeps any crop.")
        self.cat_max_ratio = cat_max_ratio
        self.base_size = base_size
        self.scale_range = tuple(scale_range)
        self.hflip = hflip
        self.ignore_index = ignore_index
        self.check_masks = check_masks

    def train_transform(self) -> Callable:
        """Joint random scale, flip and crop (padding masks with the ignore index)."""
        mean, std = self.mean[: self.channels], self.std[: self.channels]
        return segmentation_train(self.image_size, self.base_size, mean, std, self.scale_range,
                                  self.hflip, self.ignore_index, cat_max_ratio=self.cat_max_ratio,
                                  photometric_distortion=self.photometric_distortion, rotation=self.rotation)

    def eval_transform(self) -> Callable:
        """Normalisation only: evaluation is at full resolution."""
        return segmentation_eval(self.mean[: self.channels], self.std[: self.channels])

    def inference_preprocessing(self) -> Preprocessing:
        """Full resolution, as evaluation: normalisation only."""
        return replace(super().inference_preprocessing(), resize=None)

    def collate_fn(self, split: str) -> Callable:
        if split == "train" and self.cutmix_alpha > 0:
            return partial(cutmix_collate, ignore_index=self.ignore_index, alpha=self.cutmix_alpha)
        return partial(pad_collate, ignore_index=self.ignore_index)

    def allowed_mask_values(self) -> list[int]:
        """Raw mask values that may appear on disk."""
        return [*range(self.num_classes), self.ignore_index]

    def file_datasets(
        self, pairs: dict[str, Pairs], label_map: torch.Tensor | None = None
    ) -> dict[str, Dataset]:
        """Check the class count, files, image headers and masks of every split; wrap them in datasets."""
        self.check_num_classes()
        for split, split_pairs in pairs.items():
            self.check_split(split, split_pairs, label_map)
        mode = "L" if self.channels == 1 else "RGB"
        return {
            split: SegmentationFileDataset(
                split_pairs, self.train_transform() if split == "train" else self.eval_transform(),
                mode=mode, label_map=label_map, max_pixels=self.max_image_pixels,
            )
            for split, split_pairs in pairs.items()
        }

    def check_split(self, split: str, pairs: Pairs, label_map: torch.Tensor | None) -> None:
        """Files present, images readable, masks of their image's size; with data.check_masks, mask values."""
        what = f"the {split} split"
        if not pairs:
            raise MissingDataError(f"{type(self).__name__}: {what} has no images. Check data.root and "
                                   "the split's folder or list file.")
        check_files(pairs, what)
        image_sizes = check_images(pairs, what, self.max_image_pixels)
        read = mask_values_and_size if self.check_masks else mask_size
        with ThreadPoolExecutor(16) as pool:
            values, mask_sizes = zip(*pool.map(read, [mask for _, mask in pairs]), strict=True)
        check_mask_sizes(pairs, image_sizes, mask_sizes, what)
        if self.check_masks:
            check_mask_values(pairs, values, self.allowed_mask_values(), what)
            self.check_labelled(split, values, label_map)

    def check_labelled(
        self, split: str, values: Sequence[np.ndarray], label_map: torch.Tensor | None
    ) -> None:
        """Refuse a split whose masks hold no labelled pixel: its IoU would be NaN, no checkpoint choice."""
        present = np.unique(np.concatenate(values)) if values else np.zeros(0, dtype=np.int64)
        classes = label_map[torch.from_numpy(present)].numpy() if label_map is not None else present
        if (classes != self.ignore_index).any():
            return
        raise DataError(
            f"Every pixel of every mask of the {split} split is ignored (values {present.tolist()}, "
            f"data.ignore_index={self.ignore_index}): {split} metrics would be NaN and no checkpoint could "
            "be chosen by them. Check that the masks hold class indices (not only the ignore value), and "
            "data.ignore_index."
        )

"""Fake segmentation datasets written in the exact on-disk layouts of the real ones."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.figures import voc_palette


def block_mask(
    height: int, width: int, num_classes: int, seed: int, ignore_border: int | None = 255,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """A mask of random rectangles of class values, with a 1-pixel `ignore_border` frame round one."""
    rng = np.random.default_rng(seed)
    values = list(values) if values is not None else list(range(num_classes))
    mask = np.full((height, width), values[0], dtype=np.uint8)
    for value in values[1:]:
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        bottom, right = top + rng.integers(4, height // 2 + 1), left + rng.integers(4, width // 2 + 1)
        if ignore_border is not None:
            mask[max(top - 1, 0):bottom + 1, max(left - 1, 0):right + 1] = ignore_border
        mask[top:bottom, left:right] = value
    return mask


def void_heavy_mask(height: int, width: int, values: Sequence[int], void: int, seed: int) -> np.ndarray:
    """A mask that is mostly `void` (as Cityscapes' and ADE20K's are), with one small block of each of
    `values` in its own cell of a grid, so that every value is present and most crops hold no label."""
    rng = np.random.default_rng(seed)
    mask = np.full((height, width), void, dtype=np.uint8)
    columns = int(np.ceil(np.sqrt(len(values))))
    rows = int(np.ceil(len(values) / columns))
    cell_height, cell_width = height // rows, width // columns
    for k, value in enumerate(values):
        row, column = divmod(k, columns)
        block_height = int(rng.integers(cell_height // 3, cell_height // 2 + 1))
        block_width = int(rng.integers(cell_width // 3, cell_width // 2 + 1))
        top = row * cell_height + int(rng.integers(0, cell_height - block_height + 1))
        left = column * cell_width + int(rng.integers(0, cell_width - block_width + 1))
        mask[top:top + block_height, left:left + block_width] = value
    return mask


def image_for(mask: np.ndarray) -> np.ndarray:
    """An RGB image whose every pixel has its mask value's palette colour (ignore: white)."""
    palette = voc_palette(256).numpy()
    palette[255] = 255
    return palette[mask]


def save_pair(image_path: Path, mask_path: Path, mask: np.ndarray, palette_png: bool) -> None:
    """Write an image (JPEG at quality 100, or PNG) and its mask as a palette ('P') or grayscale PNG."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_for(mask)).save(image_path, quality=100)
    label = Image.fromarray(mask)
    if palette_png:
        label.putpalette(voc_palette(256).flatten().tolist())  # an 'L' image becomes 'P', values kept
    label.save(mask_path)


SIZES = [(40, 52), (47, 33), (36, 36), (53, 45)]  # (height, width): odd and unequal on purpose


def write_fake_voc(root: Path, train: int = 6, val: int = 4, num_classes: int = 21) -> Path:
    """`<root>/VOCdevkit/VOC2012` with JPEGImages, palette SegmentationClass PNGs and split lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    names = {"train": [f"2007_{i:06d}" for i in range(train)],
             "val": [f"2008_{i:06d}" for i in range(val)]}
    for split_names in names.values():
        for i, name in enumerate(split_names):
            height, width = SIZES[i % len(SIZES)]
            classes = [0, *(1 + (i + k) % (num_classes - 1) for k in range(2))]
            mask = block_mask(height, width, num_classes, seed=i, values=classes)
            save_pair(voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClass" / f"{name}.png",
                      mask, palette_png=True)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split, split_names in {**names, "trainval": names["train"] + names["val"]}.items():
        (lists / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    return voc


def write_fake_pets(root: Path, trainval: int = 6, test: int = 4) -> Path:
    """`<root>/oxford-iiit-pet`: images/*.jpg, annotations/trimaps/*.png (1 pet, 2 bg, 3 border), lists."""
    pets = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "basset_hound"]
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for split, count in (("trainval", trainval), ("test", test)):
        for i in range(count):
            name = f"{breeds[i % 2]}_{i + (100 if split == 'test' else 1)}"
            height, width = SIZES[i % len(SIZES)]
            mask = block_mask(height, width, 3, seed=i, ignore_border=3, values=[2, 1])
            save_pair(pets / "images" / f"{name}.jpg", pets / "annotations" / "trimaps" / f"{name}.png",
                      mask, palette_png=False)
            lines[split].append(f"{name} {i % 2 + 1} {i % 2 + 1} 1")
    for split, split_lines in lines.items():
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(split_lines) + "\n")
    return pets


def write_fake_seg_folder(root: Path, num_classes: int = 3, train: int = 6, test: int = 2) -> Path:
    """`<root>/{train,test}/{images/<name>.png, masks/<name>.png}` with class-index grayscale masks."""
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            height, width = SIZES[i % len(SIZES)]
            mask = block_mask(height, width, num_classes, seed=i)
            save_pair(root / split / "images" / f"img{i}.png", root / split / "masks" / f"img{i}.png",
                      mask, palette_png=False)
    return root


def write_fake_cityscapes(root: Path, train: int = 2, val: int = 2, coarse: int = 0) -> Path:
    """`<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png` with `gtFine/.../*_gtFine_labelIds.png`
    (labelIds: small blocks of road 7, sidewalk 8, car 26, ... on unlabeled 0, which covers most of
    each mask); `coarse` images of train_extra with `gtCoarse/train_extra/.../*_gtCoarse_labelIds.png`."""
    splits = [("train", "aachen", "gtFine", train), ("val", "frankfurt", "gtFine", val),
              ("train_extra", "augsburg", "gtCoarse", coarse)]
    for split, city, folder, count in splits:
        for i in range(count):
            stem = f"{city}_{i:06d}_000019"
            height, width = SIZES[i % len(SIZES)]
            mask = void_heavy_mask(height, width, [7, 8 + i % 3, 26, 33], void=0, seed=i)
            save_pair(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                      root / folder / split / city / f"{stem}_{folder}_labelIds.png", mask, palette_png=False)
    return root


def write_fake_ade20k(root: Path, train: int = 2, val: int = 2) -> Path:
    """`<root>/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png}`: grayscale
    annotations mostly 0 (other, ignored) with small blocks of classes 1..150. Returns `root` (data.root)."""
    ade = root / "ADEChallengeData2016"
    for split, prefix, count in (("training", "ADE_train", train), ("validation", "ADE_val", val)):
        for i in range(count):
            name = f"{prefix}_{i + 1:08d}"
            height, width = SIZES[i % len(SIZES)]
            mask = void_heavy_mask(height, width, [1, 2 + i, 150], void=0, seed=i)
            save_pair(ade / "images" / split / f"{name}.jpg", ade / "annotations" / split / f"{name}.png",
                      mask, palette_png=False)
    return root

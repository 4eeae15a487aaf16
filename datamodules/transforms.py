"""Image and joint image+mask transforms as torchvision's references use them (transforms.v2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from core.contracts import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_crop_train(
    image_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """ImageNet-style training: resize the shorter side, random crop, horizontal flip."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(resize_size, antialias=True), v2.RandomCrop(image_size),
        v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


class CatMaxRatioCrop(torch.nn.Module):
    """Random `size` crop of an image and its mask (padded with 0 / `ignore_index` when smaller), drawn
    again, up to `attempts` times, while one class fills `cat_max_ratio` or more of its labelled pixels.

    MMSegmentation's `RandomCrop(cat_max_ratio=...)`, which keeps the last draw when none qualifies;
    here the least dominated draw is kept, and a draw with no labelled pixel only when all were so (on
    void-heavy masks, Cityscapes' and ADE20K's, such a crop teaches nothing). With `cat_max_ratio=1`
    the first crop is kept.
    """

    def __init__(self, size: int, cat_max_ratio: float = 1.0, ignore_index: int = 255,
                 attempts: int = 10) -> None:
        super().__init__()
        self.size = size
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.attempts = attempts

    def forward(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[torch.Tensor, torch.Tensor]:
        pad = [0, 0, max(0, self.size - image.shape[-1]), max(0, self.size - image.shape[-2])]
        image = v2.functional.pad(image, pad, fill=0)
        mask = v2.functional.pad(mask, pad, fill=self.ignore_index)
        height, width = image.shape[-2:]
        best, best_share = (0, 0), math.inf
        for _ in range(self.attempts):
            top = int(torch.randint(height - self.size + 1, ()))
            left = int(torch.randint(width - self.size + 1, ()))
            if self.cat_max_ratio >= 1.0:
                best = (top, left)
                break
            share = self.largest_share(mask[..., top:top + self.size, left:left + self.size])
            if share < best_share:
                best, best_share = (top, left), share
            if share < self.cat_max_ratio:
                break
        return (v2.functional.crop(image, *best, self.size, self.size),
                v2.functional.crop(mask, *best, self.size, self.size))

    def largest_share(self, mask: torch.Tensor) -> float:
        """The share of the crop's labelled pixels that its most frequent class holds (1 for one class
        alone, 2 for no labelled pixel: worse than any crop with a label)."""
        counts = torch.unique(mask[mask != self.ignore_index], return_counts=True)[1]
        return counts.max().item() / counts.sum().item() if len(counts) else 2.0

    def acceptable(self, mask: torch.Tensor) -> bool:
        """Whether no class takes `cat_max_ratio` or more of the crop's labelled pixels (and not alone)."""
        return self.cat_max_ratio >= 1.0 or self.largest_share(mask) < self.cat_max_ratio


def segmentation_train(
    crop_size: int,
    base_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale_range: Sequence[float] = (0.5, 2.0),
    hflip: bool = True,
    ignore_index: int = 255,
    photometric_distortion: bool = False,
    cat_max_ratio: float = 1.0,
    rotation: float = 0.0,
) -> v2.Compose:
    """torchvision's segmentation reference: random scale, flip, crop padded with `ignore_index`.

    Takes a `tv_tensors.Image` and a `tv_tensors.Mask` together: both get the same geometry,
    and v2 resizes masks with nearest interpolation so class indices stay class indices. The
    shorter side is resized to `base_size` x U(`scale_range`).
    `cat_max_ratio` < 1 re-draws crops that one class dominates (MMSegmentation's recipe: 0.75);
    `photometric_distortion` then jitters the image's colours (`photometric_distortion()`).
    `rotation` > 0 rotates both by U(-rotation, rotation) degrees before the crop (MMSegmentation's
    RandomRotate): the image bilinearly, filled with 0, the mask nearest, filled with `ignore_index`.
    """
    low, high = (int(round(s * base_size)) for s in scale_range)
    steps = [v2.RandomResize(low, max(high, low + 1), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR,
                                       fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    steps.append(CatMaxRatioCrop(crop_size, cat_max_ratio, ignore_index))
    if photometric_distortion:
        steps.append(photometric_jitter())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def segmentation_cutmix(images: torch.Tensor, masks: torch.Tensor, alpha: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix of image/mask pairs (Yun et al. 2019; for segmentation French et al. 2020): each image of
    the batch gets a box of the next one pasted in, and its mask the same box of that image's mask.

    The box covers 1 - lambda of the area, lambda ~ Beta(alpha, alpha), placed as torchvision's CutMix
    places it (centred anywhere, clipped at the borders).
    """
    height, width = images.shape[-2:]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    half = 0.5 * math.sqrt(1.0 - lam)
    centre_y, centre_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
    y1, y2 = max(centre_y - int(half * height), 0), min(centre_y + int(half * height), height)
    x1, x2 = max(centre_x - int(half * width), 0), min(centre_x + int(half * width), width)
    images, masks = images.clone(), masks.clone()
    images[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
    masks[..., y1:y2, x1:x2] = masks.roll(1, 0)[..., y1:y2, x1:x2]
    return images, masks


def photometric_jitter() -> v2.Compose:
    """MMSegmentation's PhotoMetricDistortion with transforms.v2: on the image only (masks pass through).

    Brightness, then contrast before or after saturation and hue (one order or the other at
    random), each applied with probability 0.5: contrast and saturation x U(0.5, 1.5), hue shifted
    by up to 0.1 of the colour circle (MMSeg's 18 of OpenCV's 180). Brightness is multiplicative
    here, x U(0.875, 1.125), where MMSeg adds up to +-32/255. Grayscale images get brightness and
    contrast only.
    """

    def maybe(**jitter: float) -> v2.RandomApply:
        return v2.RandomApply([v2.ColorJitter(**jitter)], p=0.5)

    contrast, colour = maybe(contrast=0.5), [maybe(saturation=0.5), maybe(hue=0.1)]
    return v2.Compose([maybe(brightness=0.125),
                       v2.RandomChoice([v2.Compose([contrast, *colour]), v2.Compose([*colour, contrast])])])


def segmentation_eval(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Full resolution, no crop: only scaling to [0, 1] and normalisation (masks pass untouched)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def preprocessing_transform(preprocessing: Preprocessing) -> v2.Compose:
    """A new image (uint8 CxHxW) -> network input, as a datamodule's `inference_preprocessing` describes.

    `resize`: None (keep the size), an int (shorter side, then `center_crop`) or (height, width).
    """
    steps: list[Any] = [v2.ToImage()]
    resize = preprocessing.resize
    if resize is not None:
        steps.append(v2.Resize(resize if isinstance(resize, int) else list(resize), antialias=True))
    if preprocessing.center_crop is not None:
        steps.append(v2.CenterCrop(preprocessing.center_crop))
    steps += [v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(list(preprocessing.mean), list(preprocessing.std))]
    return v2.Compose(steps)


def resize_longer_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (B, C, H, W) float image in [0, 1] so that its longer side is `size`, keeping the aspect
    ratio (bicubic, antialiased when shrinking, clamped to [0, 1])."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new == (h, w):
        return image
    resized = F.interpolate(image, size=new, mode="bicubic", align_corners=False, antialias=scale < 1)
    return resized.clamp(0, 1)

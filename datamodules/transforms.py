"""Image and joint image+mask transforms as torchvision's references use them (transforms.v2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float tensor."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def padded_crop_flip(
    image_size: int, mean: Sequence[float], std: Sequence[float], padding: int = 4
) -> v2.Compose:
    """CIFAR training augmentation: pad-4 random crop and horizontal flip."""
    return v2.Compose([
        v2.ToImage(), v2.RandomCrop(image_size, padding=padding), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


def resize_crop_train(
    image_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """ImageNet-style training: resize the shorter side, random crop, horizontal flip."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(resize_size, antialias=True), v2.RandomCrop(image_size),
        v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


def resize_crop_eval(
    image_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """ImageNet-style evaluation: resize the shorter side, centre crop."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


def segmentation_train(
    crop_size: int,
    base_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale_range: Sequence[float] = (0.5, 2.0),
    hflip: bool = True,
    ignore_index: int = 255,
) -> v2.Compose:
    """torchvision's segmentation reference: random scale, flip, crop padded with `ignore_index`.

    Takes a `tv_tensors.Image` and a `tv_tensors.Mask` together: both get the same geometry,
    and v2 resizes masks with nearest interpolation so class indices stay class indices.
    """
    low, high = (int(round(s * base_size)) for s in scale_range)
    steps = [v2.RandomResize(low, max(high, low + 1), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Mask: ignore_index, "others": 0}),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ]
    return v2.Compose(steps)


def segmentation_eval(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Full resolution, no crop: only scaling to [0, 1] and normalisation (masks pass untouched)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def preprocessing_transform(spec: Mapping[str, Any]) -> v2.Compose:
    """A new image (uint8 CxHxW) -> network input, as a datamodule's `inference_preprocessing` describes.

    `resize`: null (keep the size), an int (shorter side, then `center_crop`) or [height, width].
    """
    steps: list[Any] = [v2.ToImage()]
    resize = spec.get("resize")
    if resize is not None:
        steps.append(v2.Resize(resize if isinstance(resize, int) else list(resize), antialias=True))
    if spec.get("center_crop") is not None:
        steps.append(v2.CenterCrop(spec["center_crop"]))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec["mean"]), list(spec["std"]))]
    return v2.Compose(steps)

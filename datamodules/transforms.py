"""Image transforms as torchvision's references and the seed tutorials use them (transforms.v2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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

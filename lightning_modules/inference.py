"""Inference modes as pure functions of a `forward` callable: sliding window, flip and multi-scale TTA,
and the predict step's output for the prediction writers.

`forward` maps a normalised (N, C, H, W) batch to logits, (N, K) or (N, K, H, W): an eager
network, a TorchScript module or an onnxruntime session behind the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """First pixel of each window along one side (MMSegmentation's `slide` grid; the last ends at `size`).

    Raises ValueError when the windows would leave a pixel of the side uncovered (a stride larger than
    the crop): the windows of an image are these starts on both sides, so every pixel is covered iff
    every pixel of each side is.
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f"crop_size ({crop}) and stride ({stride}) must be positive.")
    count = max(size - crop + stride - 1, 0) // stride + 1
    starts = [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]
    covered = 0  # pixels [0, covered) lie in a window
    for start in starts:
        if start > covered:
            raise ValueError(f"Windows of {crop} px every {stride} px leave pixels {covered}-{start - 1} of "
                             f"a {size} px side uncovered: the stride must not exceed the window.")
        covered = max(covered, start + crop)
    assert covered >= size
    return starts


def slide_logits(forward: Forward, images: torch.Tensor, crop_size: int, stride: int) -> torch.Tensor:
    """Logits of `crop_size` windows every `stride` pixels, averaged where windows overlap.

    Sides smaller than `crop_size` are covered by one window of their own size.
    """
    height, width = images.shape[-2:]
    total: torch.Tensor | None = None
    counts = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, crop_size, stride):
        for left in window_starts(width, crop_size, stride):
            region = (..., slice(top, top + crop_size), slice(left, left + crop_size))
            logits = forward(images[region])
            if total is None:
                total = images.new_zeros(images.shape[0], logits.shape[1], height, width)
            total[region] += logits
            counts[region] += 1
    assert total is not None
    return total / counts


def segment_logits(
    forward: Forward,
    images: torch.Tensor,
    inference: str = "whole",
    crop_size: int | None = None,
    stride: int | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Per-pixel logits at the images' resolution: `whole` or `slide`, averaged over scales and flips.

    Each scale resizes the images (bilinear), runs the mode, and resizes the logits back before
    averaging, so every term is at full resolution.
    """
    if inference not in ("whole", "slide"):
        raise ValueError(f"task.inference={inference!r}: use whole or slide.")
    if inference == "slide" and (crop_size is None or stride is None):
        raise ValueError("task.inference=slide needs task.crop_size and task.stride.")

    def run(batch: torch.Tensor) -> torch.Tensor:
        return forward(batch) if inference == "whole" else slide_logits(forward, batch, crop_size, stride)

    size = images.shape[-2:]
    total = None
    terms = 0
    for scale in scales:
        scaled = images if scale == 1.0 else F.interpolate(
            images, scale_factor=float(scale), mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            logits = run(scaled.flip(-1)) if flipped else run(scaled)
            logits = logits.flip(-1) if flipped else logits
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
            terms += 1
    return total / terms


def classify_logits(forward: Forward, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """Class logits of the images, averaged with those of their horizontal mirror when `flip`."""
    logits = forward(images)
    return (logits + forward(images.flip(-1))) / 2 if flip else logits


def predict_batch(batch: dict[str, Any], logits_of: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """What a predict step returns for the writers: the batch's bookkeeping and each image's class
    probabilities, computed one size group (`collate_inputs`' `groups`) at a time."""
    probabilities: list[torch.Tensor | None] = [None] * len(batch["index"])
    for positions, images in batch["groups"]:
        for position, image_probabilities in zip(positions, logits_of(images).softmax(1).float().cpu(),
                                                 strict=True):
            probabilities[position] = image_probabilities
    return {"index": batch["index"], "skipped": batch["skipped"], "probabilities": probabilities}

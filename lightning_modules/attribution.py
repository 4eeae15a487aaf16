"""Grad-CAM (Selvaraju et al. 2017) through Captum's `LayerGradCam`: class activation maps of a classifier's
class, or of a segmenter's class over a set of pixels (MMSegmentation's CAM tool)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def grad_cam(forward: Forward, layer: nn.Module, images: torch.Tensor,
             target: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) maps in [0, 1] at the images' size: ReLU of the layer's activations weighted by the
    spatially averaged gradients of `forward`'s output for `target` (class indices; None when `forward`
    returns one score per image), upsampled bilinearly and divided by each map's maximum.

    Gradients flow to the layer's activations only (no parameter's `.grad` changes), also inside
    Lightning's evaluation loops, which run under `torch.inference_mode`.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    with torch.inference_mode(False), torch.enable_grad():
        inputs = images.detach().clone().requires_grad_(True)  # a frozen trunk still gets gradients
        target = None if target is None else target.clone()  # not an inference tensor: autograd keeps it
        maps = LayerGradCam(forward, layer).attribute(inputs, target=target, relu_attributions=True)
        if maps.ndim != 4:
            raise ValueError(f"Grad-CAM needs (batch, channels, H, W) activations, got {tuple(maps.shape)}.")
        maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    maps = maps.detach()[:, 0].float()
    return maps / maps.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]


def class_over_pixels(segment: Forward, category: int, pixels: torch.Tensor) -> Forward:
    """A segmenter's score for `category` summed over `pixels` ((B, H, W) booleans): the target of
    MMSegmentation's CAM tool (`SemanticSegmentationTarget`), one score per image."""
    def score(images: torch.Tensor) -> torch.Tensor:
        logits = segment(images)[:, category]
        return (logits * pixels.to(logits.dtype)).sum(dim=(1, 2))  # a copy, made where autograd records

    return score

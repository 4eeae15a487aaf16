"""A trained style network at inference: one signature per kind of network, the graph that export traces
and that predict and serve call (eager or exported alike), and styling a batch of content images in a chosen
style.

Every graph takes content images (N, 3, H, W) in [0, 1] of any size first, then the inputs its kind needs
(`core.contracts.STYLE_INPUTS`), and returns the stylised images clamped to [0, 1]. Style weights are used as
given: whoever builds them makes them sum to 1 (`StyleChoice`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lightning_modules.style_losses import match_colours, transfer_luminance

Forward = Callable[..., torch.Tensor]  # (images, *style inputs) -> stylised images


class OneStyle(nn.Module):
    """Johnson et al.'s network, which learned one style: `forward(images)`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).clamp(0, 1)


class LearnedStyles(OneStyle):
    """A multi-style network: `forward(images, style_weights)`, weights (S,) over its S learned styles
    (one-hot: one style; convex: a blend of their normalisation scales and shifts), for every image."""

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weights = style_weights.to(images.dtype).expand(images.shape[0], -1)
        return self.net(images, weights).clamp(0, 1)


class StyleImages(OneStyle):
    """AdaIN: `forward(images, styles, style_weights, alpha)`: style images (S, 3, h, w) of one size, whose
    channel statistics at the encoder's layer are mixed by `style_weights` (S,), and `alpha` () between the
    content's features (0) and the style's (1)."""

    def forward(self, images: torch.Tensor, styles: torch.Tensor,  # type: ignore[override]
                style_weights: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        means, stds = self.net.style_code(styles)
        weights = style_weights.to(means.dtype).view(-1, 1, 1, 1)
        mean, std = (weights * means).sum(0, keepdim=True), (weights * stds).sum(0, keepdim=True)
        return self.net.stylize(images, mean, std, alpha.to(images.dtype)).clamp(0, 1)


GRAPHS: dict[str, type[OneStyle]] = {"none": OneStyle, "style_weights": LearnedStyles,
                                     "style_image": StyleImages}


def inference_graph(net: nn.Module) -> OneStyle:
    """`net` (model=transformer_net, multistyle_net or adain) behind its inference signature, evaluated."""
    return GRAPHS[net.conditioning](net).eval()


@dataclass(frozen=True)
class StyleChoice:
    """One style a run styles its images in: the graph's inputs after the images (on the CPU), how colours
    are kept (None; "style": the style images recoloured to each content image's colours first, AdaIN's
    way; "luminance": only the result's luminance kept, Gatys et al.'s way for any network), and `label`,
    the style's name when a run writes several (each to its own folder), else None."""

    inputs: tuple[torch.Tensor, ...] = ()
    preserve_colors: str | None = None
    label: str | None = None


def stylize(forward: Forward, images: torch.Tensor, choice: StyleChoice) -> torch.Tensor:
    """`images` (N, 3, H, W) in [0, 1] in the chosen style, through `forward` (a graph of
    `inference_graph`, or the exported file of one)."""
    inputs = tuple(value.to(images.device) for value in choice.inputs)
    if choice.preserve_colors == "style":  # each image recolours the style images to its own colours
        styles, *rest = inputs
        return torch.cat([forward(image, match_colours(styles, image.expand(len(styles), -1, -1, -1)), *rest)
                          for image in images.split(1)])
    result = forward(images, *inputs)
    return transfer_luminance(result, images) if choice.preserve_colors == "luminance" else result

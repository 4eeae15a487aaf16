"""The maths of neural style transfer, shared by task=style (Gatys et al.) and task=style_net (feed-forward
networks): Gram matrices, feature statistics, AdaIN, the perceptual losses, colour transfer, scale schedule.

Every function is pure: tensors in, tensors out, nothing learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STYLE_LOSSES = ("gram", "mean_std")

# ITU-R BT.601 RGB -> YIQ; the inverse is computed so the round trip is exact to float precision.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) features -> (B, C, C) Gram matrices divided by C*H*W, so size does not matter."""
    b, c, h, w = features.shape
    # In float32 even under mixed precision: fp16 sums of H*W products overflow, and bf16's
    # 8-bit mantissa would make the style loss too coarse for L-BFGS's line search.
    with torch.autocast(features.device.type, enabled=False):
        flat = features.reshape(b, c, h * w).float()
        return flat @ flat.transpose(1, 2) / (c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the image's and the content image's features."""
    return F.mse_loss(features, target)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the images' Gram matrices and the (blended) style Gram matrices.

    `target_gram` is (B, C, C), one per image, or (1, C, C), one for all.
    """
    gram = gram_matrix(features)
    return F.mse_loss(gram, target_gram.expand_as(gram))


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) features -> per-channel mean and standard deviation, each (B, C, 1, 1), in float32.

    As AdaIN's `calc_mean_std`: the unbiased variance over H*W, plus `eps`, then the square root.
    """
    with torch.autocast(features.device.type, enabled=False):
        flat = features.flatten(2).float()
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]


def mean_std_loss(features: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor
                  ) -> torch.Tensor:
    """AdaIN's style loss at one layer: squared error of the channel means plus that of the channel stds."""
    mean, std = mean_std(features)
    return F.mse_loss(mean, target_mean.expand_as(mean)) + F.mse_loss(std, target_std.expand_as(std))


def adaptive_instance_norm(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor
                           ) -> torch.Tensor:
    """AdaIN (Huang & Belongie 2017): the content features normalised per channel, then given the
    style's channel means and standard deviations ((B or 1, C, 1, 1) each)."""
    mean, std = mean_std(content)
    return ((content.float() - mean) / std * style_std + style_mean).to(content.dtype)


@dataclass(frozen=True)
class LossWeights:
    """How much each term counts in the total."""

    content: float = 1.0
    style: float = 1.0
    tv: float = 0.0


def style_statistic(features: torch.Tensor, kind: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """What the style loss `kind` compares at one layer: the Gram matrix, or the channel (mean, std)."""
    return gram_matrix(features) if kind == "gram" else mean_std(features)


def style_term(features: torch.Tensor, target: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
               kind: str) -> torch.Tensor:
    """The style loss `kind` ("gram" or "mean_std") of one layer against its target statistic."""
    if kind == "gram":
        return style_loss(features, target)
    return mean_std_loss(features, *target)


def perceptual_losses(
    image: torch.Tensor,
    features: Mapping[str, torch.Tensor],
    content_targets: Mapping[str, torch.Tensor],
    style_targets: Mapping[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    style_layers: Mapping[str, float],
    weights: LossWeights,
    style_kind: str = "gram",
) -> dict[str, torch.Tensor]:
    """Content, style and total-variation losses of `image` (whose loss-network `features` are given)
    and their weighted sum, `total`.

    content: the sum over `content_targets`' layers of the mean squared feature difference; style: the
    sum over `style_layers` of weight x `style_term`; tv: `total_variation(image)`.
    """
    zero = image.new_zeros(())  # an empty layer set: that term is absent (0)
    content = sum((content_loss(features[layer], target) for layer, target in content_targets.items()), zero)
    style = sum((weight * style_term(features[layer], style_targets[layer], style_kind)
                 for layer, weight in style_layers.items()), zero)
    tv = total_variation(image)
    total = weights.content * content + weights.style * style + weights.tv * tv
    return {"content": content, "style": style, "tv": tv, "total": total}


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels, vertically plus horizontally."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> YIQ: luminance Y and the two chroma channels."""
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) YIQ -> RGB."""
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def match_colours(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`source` images (B, 3, H, W) recoloured so that their RGB mean and covariance are `target`'s.

    AdaIN's colour preservation (CORAL, Sun et al. 2016), applied to the style image before styling:
    whitening by the source's covariance, colouring by the target's (each with `eps` on the diagonal).
    """
    def statistics(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = image.flatten(2).double()
        mean = flat.mean(2, keepdim=True)
        centred = flat - mean
        covariance = centred @ centred.transpose(1, 2) / (flat.shape[2] - 1)
        return flat, mean, covariance + eps * torch.eye(3, dtype=flat.dtype, device=flat.device)

    def matrix_power(covariance: torch.Tensor, power: float) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(covariance)
        return vectors @ torch.diag_embed(values.clamp(min=eps) ** power) @ vectors.transpose(1, 2)

    flat, mean, covariance = statistics(source)
    _, target_mean, target_covariance = statistics(target)
    whitened = matrix_power(covariance, -0.5) @ (flat - mean)
    coloured = matrix_power(target_covariance, 0.5) @ whitened + target_mean
    return coloured.reshape(source.shape).to(source.dtype).clamp(0, 1)


def transfer_luminance(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the content's colours: luminance from `result`, chroma from `content` (resized to it)."""
    if content.shape[-2:] != result.shape[-2:]:
        content = F.interpolate(content, size=result.shape[-2:], mode="bilinear", align_corners=False)
    yiq = rgb_to_yiq(content)
    yiq[..., 0, :, :] = rgb_to_yiq(result)[..., 0, :, :]
    return yiq_to_rgb(yiq).clamp(0, 1)


def coarse_to_fine_sizes(final_size: int, num_scales: int, factor: float = 2.0) -> list[int]:
    """Longer-side sizes from coarsest to `final_size`, each `factor` times the previous one."""
    return [round(final_size / factor**i) for i in reversed(range(num_scales))]

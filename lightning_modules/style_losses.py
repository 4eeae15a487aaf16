"""The maths of Gatys et al. style transfer: Gram matrices, losses, colour transfer, scale schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    """Mean squared difference between the image's Gram matrix and the (blended) style Gram matrix."""
    return F.mse_loss(gram_matrix(features), target_gram)


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



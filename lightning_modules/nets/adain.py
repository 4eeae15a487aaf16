"""Arbitrary style transfer with adaptive instance normalisation (Huang & Belongie, ICCV 2017).

A frozen VGG encoder up to `relu4_1`, AdaIN (the content features given the style features' channel
means and standard deviations), and a trained decoder that mirrors the encoder: naoto0804/pytorch-AdaIN's
decoder, layer for layer. Any style image works at inference; `alpha` trades content for style, several
styles interpolate (their statistics are mixed), and `preserve_colors` recolours the style image with
the content's colours first. The encoder's weights are part of the network (and of its checkpoints):
the decoder only makes sense with the encoder it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ConfigError
from lightning_modules.nets.layer_features import LayerFeatures
from lightning_modules.nets.loss_networks import build_loss_network
from lightning_modules.nets.transformer_net import crop_to, pad_to_multiple
from lightning_modules.nets.vgg_features import VGG_CONFIGS
from lightning_modules.style_losses import adaptive_instance_norm, match_colours, mean_std

StyleCode = tuple[torch.Tensor, torch.Tensor]  # channel means and standard deviations, (B, C, 1, 1) each


def adain_decoder(channels: int = 512) -> nn.Sequential:
    """The decoder of pytorch-AdaIN (for `channels`=512 features at relu4_1): reflection-padded 3x3
    convolutions with ReLU, nearest upsampling by 2 three times, back to RGB."""
    def conv(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
        return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), *([nn.ReLU()] if relu else [])]

    up = nn.Upsample(scale_factor=2, mode="nearest")
    half, quarter, eighth = channels // 2, channels // 4, channels // 8
    return nn.Sequential(
        *conv(channels, half), up,
        *conv(half, half), *conv(half, half), *conv(half, half), *conv(half, quarter), up,
        *conv(quarter, quarter), *conv(quarter, eighth), up,
        *conv(eighth, eighth), *conv(eighth, 3, relu=False),
    )


class AdaINNet(nn.Module):
    """forward(content, style, alpha): the content image in the style of the style image."""

    conditioning = "style_image"
    stride = 8      # three poolings in the encoder: inputs are padded to a multiple of 8
    min_size = 9    # 8 px is 1 px at relu4_1, too small for the decoder's reflection padding (9 pads to 16)
    style_min_size = 16  # a style's statistics at relu4_1 need 2 px on each side

    def __init__(self, encoder_arch: str = "vgg19", encoder_weights: str | None = "DEFAULT",
                 layer: str = "relu4_1") -> None:
        super().__init__()
        if encoder_arch not in VGG_CONFIGS:
            raise ConfigError(f"model.encoder_arch={encoder_arch!r}: AdaIN's decoder mirrors a VGG encoder; "
                              f"choose one of {', '.join(VGG_CONFIGS)}.")
        self.layer = layer
        self.encoder: LayerFeatures = build_loss_network(encoder_arch, encoder_weights, layers=[layer])
        with torch.no_grad():
            channels = self.encoder(torch.zeros(1, 3, 32, 32))[layer].shape[1]
        self.decoder = adain_decoder(channels)

    def style_code(self, style: torch.Tensor) -> StyleCode:
        """The channel means and standard deviations of the style image's features at `layer`."""
        return mean_std(self.encoder(style)[self.layer])

    def stylize(self, content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Decode the content features after AdaIN to the style code, mixed with the content's by `alpha`."""
        output, _ = self.transfer_with_target(content, style_mean, style_std, alpha)
        return output

    def transfer_with_target(self, content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                             alpha: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The result and the AdaIN target features it was decoded from (what the content loss aims at)."""
        height, width = content.shape[-2:]
        features = self.encoder(pad_to_multiple(content, self.stride))[self.layer]
        target = adaptive_instance_norm(features, style_mean, style_std)
        target = alpha * target + (1 - alpha) * features
        return crop_to(self.decoder(target), height, width), target

    def forward(self, content: torch.Tensor, style: torch.Tensor,
                alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.stylize(content, *self.style_code(style), alpha)

    def transfer(self, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 weights: Sequence[float] | None = None, alpha: float = 1.0,
                 preserve_colors: bool = False) -> torch.Tensor:
        """`content` in a blend of `styles` (each (1 or B, 3, H, W), any size) weighted by `weights`
        (normalised; equal by default); `preserve_colors` first gives each style image the content's colours.

        The blend mixes the styles' channel statistics, which equals pytorch-AdaIN's interpolation
        (the weighted sum of the AdaIN features of each style): AdaIN is linear in them.
        """
        weights = [1.0] * len(styles) if weights is None else list(weights)
        if len(weights) != len(styles) or sum(weights) <= 0 or min(weights) < 0:
            raise ConfigError(f"Style weights {weights} must be one non-negative weight per style image "
                              f"({len(styles)}), not all zero.")
        batch = content.shape[0]
        if preserve_colors:
            styles = [match_colours(style.expand(batch, -1, -1, -1), content) for style in styles]
        codes = [self.style_code(style) for style in styles]
        total = sum(weights)
        mean = sum(w / total * m for w, (m, _) in zip(weights, codes, strict=True))
        std = sum(w / total * s for w, (_, s) in zip(weights, codes, strict=True))
        return self.stylize(content, mean, std, alpha)

"""U-Net (Ronneberger et al., 2015) as in the seed tutorials, for any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError


def double_conv(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """(3x3 conv, [batch norm], ReLU) twice, keeping the spatial size."""
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Up(nn.Module):
    """Upsample x2 halving the channels, concatenate the skip connection, double conv."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool, batch_norm: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(in_channels, in_channels // 2, 1))
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = double_conv(in_channels // 2 + out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """`depth` max-pool stages with widths base_width * 2**i, transposed-conv (or bilinear) decoder.

    Inputs whose sides are not multiples of 2**depth are zero-padded on the way in and the
    logits cropped back, so every input size works and the output matches the input.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        depth: int = 4,
        base_width: int = 64,
        bilinear: bool = False,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"model.depth={depth}: a UNet needs a depth of at least 1 (model.depth=4).")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.inc = double_conv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(double_conv(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], bilinear, batch_norm)
                                 for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)[..., :height, :width]

"""Johnson et al.'s image transformation network (ECCV 2016), one style per network, and Dumoulin et al.'s
multi-style version with conditional instance normalisation (ICLR 2017).

The layers, their names and shapes are those of pytorch/examples' fast_neural_style `TransformerNet`
(reflection padding, instance norm, 5 residual blocks, nearest upsampling + convolution instead of
transposed convolutions), so state dicts carry over. Images are in [0, 1] in and (unclamped) out; any
size works: inputs are reflection-padded to a multiple of 4 and the result is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflection-pad the bottom and right of `image` so that its height and width divide by `multiple`.

    No branch on the size: exported graphs (torch.export, ONNX) keep height and width dynamic.
    """
    height, width = image.shape[-2:]
    return F.pad(image, (0, (-width) % multiple, 0, (-height) % multiple), mode="reflect")


def crop_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left `height` x `width` of `image`, as a negative padding: unlike slicing, it does not make
    torch.export specialise on whether there was anything to crop."""
    return F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))


class ConvLayer(nn.Module):
    """Reflection padding of half the kernel, then a convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(ConvLayer):
    """Nearest upsampling by 2, then a `ConvLayer`: no checkerboard artefacts (Odena et al. 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class InstanceNorm(nn.InstanceNorm2d):
    """Instance normalisation with a learned scale and shift (one style: the style input is ignored)."""

    def __init__(self, channels: int, num_styles: int = 1) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class ConditionalInstanceNorm(nn.Module):
    """Instance normalisation whose scale and shift are chosen by the style: `style` (B, N) weights
    over the N styles mix their rows (a one-hot row picks one style; other convex weights blend them)."""

    def __init__(self, channels: int, num_styles: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_styles, channels))
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            raise ValueError("ConditionalInstanceNorm needs the style weights (B, num_styles).")
        scale = (style.to(self.weight.dtype) @ self.weight)[:, :, None, None]
        shift = (style.to(self.bias.dtype) @ self.bias)[:, :, None, None]
        return F.instance_norm(x) * scale.to(x.dtype) + shift.to(x.dtype)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm, ReLU between, added to the input (He et al. 2016)."""

    def __init__(self, channels: int, norm: type[nn.Module], num_styles: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = norm(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = norm(channels, num_styles)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        out = F.relu(self.in1(self.conv1(x), style))
        return self.in2(self.conv2(out), style) + x


class TransformerNet(nn.Module):
    """Johnson et al.'s network: 9x9 conv, two stride-2 convs, residual blocks, two upsampling convs,
    9x9 conv to RGB. `base_channels` (32) sets the widths (32, 64, 128 in the paper)."""

    conditioning = "none"  # forward(content): the style is in the weights
    stride = 4             # inputs are padded to a multiple of this
    min_size = 8           # smaller sides cannot be reflection-padded by the 9x9 convolution

    norm_layer: type[nn.Module] = InstanceNorm

    def __init__(self, base_channels: int = 32, num_residual_blocks: int = 5) -> None:
        super().__init__()
        self.num_styles = getattr(self, "num_styles", 1)
        norm = type(self).norm_layer
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.conv1 = ConvLayer(3, c1, 9)
        self.in1 = norm(c1, self.num_styles)
        self.conv2 = ConvLayer(c1, c2, 3, stride=2)
        self.in2 = norm(c2, self.num_styles)
        self.conv3 = ConvLayer(c2, c3, 3, stride=2)
        self.in3 = norm(c3, self.num_styles)
        self.residual_blocks = [f"res{i}" for i in range(1, num_residual_blocks + 1)]
        for name in self.residual_blocks:
            self.add_module(name, ResidualBlock(c3, norm, self.num_styles))
        self.deconv1 = UpsampleConvLayer(c3, c2, 3)
        self.in4 = norm(c2, self.num_styles)
        self.deconv2 = UpsampleConvLayer(c2, c1, 3)
        self.in5 = norm(c1, self.num_styles)
        self.deconv3 = ConvLayer(c1, 3, 9)

    def transform(self, content: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """The network on `content` of any size, with style weights for conditional norms (else None)."""
        height, width = content.shape[-2:]
        y = pad_to_multiple(content, self.stride)
        y = F.relu(self.in1(self.conv1(y), style))
        y = F.relu(self.in2(self.conv2(y), style))
        y = F.relu(self.in3(self.conv3(y), style))
        for name in self.residual_blocks:
            y = self.get_submodule(name)(y, style)
        y = F.relu(self.in4(self.deconv1(y), style))
        y = F.relu(self.in5(self.deconv2(y), style))
        return crop_to(self.deconv3(y), height, width)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.transform(content, None)


class MultiStyleNet(TransformerNet):
    """Dumoulin et al.'s N-style network: `TransformerNet` with conditional instance norm.

    forward(content, style_weights): `style_weights` (B, N) gives each image's weights over the N
    styles learned, one-hot for one style, convex weights for a blend (`style_weights_for`).
    """

    conditioning = "style_weights"
    norm_layer = ConditionalInstanceNorm

    def __init__(self, num_styles: int = 3, base_channels: int = 32, num_residual_blocks: int = 5) -> None:
        if num_styles < 1:
            raise ConfigError(f"model.num_styles={num_styles}: a network learns at least one style.")
        self.num_styles = num_styles
        super().__init__(base_channels, num_residual_blocks)

    def forward(self, content: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.transform(content, style_weights)


def style_weights_for(index: torch.Tensor, num_styles: int) -> torch.Tensor:
    """One-hot (B, num_styles) style weights of style indices (B,)."""
    return F.one_hot(index.long(), num_styles).float()

"""Feature visualisation by gradient ascent (Erhan et al. 2009; Olah et al., "Feature Visualization", Distill
2017): an input image optimised so that one filter of a layer responds as strongly as it can on average.

Unregularised ascent finds high-frequency patterns no photo holds; what makes the images readable:
- a decorrelated Fourier parameterisation: the image is a spectrum scaled by 1/frequency (so all
  frequencies are equally easy to change) in a decorrelated colour space, squashed to [0, 1] by a sigmoid;
  or plain pixels blurred every few steps (Yosinski et al. 2015);
- transformation robustness: each step sees the image padded, jittered and rescaled at random.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

# Square root of the colour covariance of ImageNet photos (lucid's `color_correlation_svd_sqrt`), its
# largest column norm scaled to 1: a decorrelated colour vector times this is an RGB colour.
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_CORRELATION = COLOUR_CORRELATION / COLOUR_CORRELATION.norm(dim=0).max()
PARAMETERIZATIONS = ("fourier", "pixel")


@dataclass(frozen=True)
class Regularisers:
    """The readability knobs: parameterisation, jitter (pixels), scales, blur of pixel images."""

    parameterization: str = "fourier"
    jitter: int = 4
    scales: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
    pad: int = 8
    blur_every: int = 4  # pixel parameterisation: blur the image every this many steps (0: never)
    blur_sigma: float = 0.5


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """(height, width // 2 + 1) factors 1 / frequency ** decay_power for a real FFT's spectrum (the lowest
    frequency counted as one cycle per image)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    frequency = (fx * fx + fy * fy).sqrt()
    return 1.0 / frequency.clamp(min=1.0 / max(height, width)) ** decay_power


def initial_parameters(kind: str, count: int, channels: int, size: int, generator: torch.Generator
                       ) -> torch.Tensor:
    """Small random parameters of `count` images: a spectrum (..., 2: real, imaginary) or pixels."""
    if kind == "fourier":
        shape = (count, channels, size, size // 2 + 1, 2)
    else:
        shape = (count, channels, size, size)
    return torch.randn(shape, generator=generator) * 0.01


def parameters_to_image(kind: str, parameters: torch.Tensor, size: int) -> torch.Tensor:
    """(count, channels, size, size) images in [0, 1] from `initial_parameters`-shaped parameters."""
    if kind == "pixel":
        return torch.sigmoid(parameters)
    spectrum = torch.view_as_complex(parameters) * spectrum_scale(size, size).to(parameters.device)
    image = torch.fft.irfft2(spectrum, s=(size, size), norm="ortho") / 4.0  # lucid's constant: std ~1
    if image.shape[1] == 3:
        image = torch.einsum("ij,njhw->nihw", COLOUR_CORRELATION.to(image), image)
    return torch.sigmoid(image)


def random_transform(images: torch.Tensor, regularisers: Regularisers, generator: torch.Generator
                     ) -> torch.Tensor:
    """Pad (grey), jitter, rescale by a random choice of `scales`, jitter again: one draw for the batch."""
    r = regularisers

    def jitter(x: torch.Tensor) -> torch.Tensor:
        if r.jitter <= 0:
            return x
        dy, dx = (torch.randint(0, 2 * r.jitter + 1, (2,), generator=generator) - r.jitter).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))

    x = F.pad(images, [r.pad] * 4, value=0.5) if r.pad else images
    x = jitter(x)
    scale = r.scales[int(torch.randint(len(r.scales), (1,), generator=generator))] if r.scales else 1.0
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return jitter(x)


class StopForward(Exception):
    """Raised by the layer's hook once it has its output: the deeper layers are never computed."""


RECTIFIERS = (nn.ReLU, nn.ReLU6)


class LayerReader:
    """`reader(images)`: the output of `layer` inside `net`, the forward stopped right after it.

    A rectifier (ReLU) is read at its input, the pre-activation: a filter whose pre-activation is
    negative everywhere has no gradient through the ReLU, and the ascent could never start (lucid
    redirects ReLU gradients for the same reason). Raising the pre-activation raises the activation.
    """

    def __init__(self, net: nn.Module, layer: nn.Module) -> None:
        self.net = net
        self.layer = layer
        self.reads_input = isinstance(layer, RECTIFIERS)
        self.output: torch.Tensor | None = None

    def _keep(self, value: object) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the layer returns a {type(value).__name__}, not a tensor")
        self.output = value
        raise StopForward

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.reads_input:  # before an in-place ReLU overwrites it
            handle = self.layer.register_forward_pre_hook(lambda module, inputs: self._keep(inputs[0]))
        else:
            handle = self.layer.register_forward_hook(lambda module, inputs, output: self._keep(output))
        try:
            self.net(images)
        except StopForward:
            pass
        finally:
            handle.remove()
        if self.output is None:
            raise RuntimeError("the layer did not run in the network's forward")
        output, self.output = self.output, None
        return output


def filter_means(activation: torch.Tensor, filters: Sequence[int]) -> torch.Tensor:
    """Image i's mean activation of filter `filters[i]`: over H x W for (N, C, H, W), the unit for (N, C)."""
    index = torch.arange(len(filters), device=activation.device)
    chosen = activation[index, torch.as_tensor(filters, device=activation.device)]
    return chosen.flatten(1).mean(1) if chosen.ndim > 1 else chosen


@dataclass
class Visualisation:
    """The optimised images, and each filter's mean activation on its image before and after."""

    images: torch.Tensor
    filters: list[int]
    start: list[float]
    reached: list[float]


def visualize_filters(read: Callable[[torch.Tensor], torch.Tensor], filters: Sequence[int], channels: int,
                      size: int, normalize: Callable[[torch.Tensor], torch.Tensor], steps: int, lr: float,
                      regularisers: Regularisers, seed: int, device: torch.device | str = "cpu"
                      ) -> Visualisation:
    """Optimise one image per filter (all in one batch) with Adam to maximise that filter's mean activation.

    `read` maps a normalised batch to the layer's activations; `normalize` turns [0, 1] images into the
    network's input. The start and reached activations are measured on the untransformed images.
    """
    if regularisers.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {regularisers.parameterization!r}")
    generator = torch.Generator().manual_seed(seed)
    kind = regularisers.parameterization
    parameters = initial_parameters(kind, len(filters), channels, size, generator).to(device).requires_grad_()
    optimizer = torch.optim.Adam([parameters], lr=lr)

    def objective(images: torch.Tensor) -> torch.Tensor:
        return filter_means(read(normalize(images)), filters)

    with torch.no_grad():
        start = objective(parameters_to_image(kind, parameters, size))
    for step in range(steps):
        optimizer.zero_grad()
        images = parameters_to_image(kind, parameters, size)
        (-objective(random_transform(images, regularisers, generator)).sum()).backward()
        optimizer.step()
        if kind == "pixel" and regularisers.blur_every and (step + 1) % regularisers.blur_every == 0:
            with torch.no_grad():
                kernel = 2 * math.ceil(2 * regularisers.blur_sigma) + 1
                parameters.copy_(gaussian_blur(parameters, [kernel, kernel], [regularisers.blur_sigma] * 2))
    with torch.no_grad():
        images = parameters_to_image(kind, parameters, size)
        reached = objective(images)
    return Visualisation(images.detach().cpu(), list(filters), start.tolist(), reached.tolist())

"""A frozen feature network read by layer name: the loss network of the style tasks (and AdaIN's encoder)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import ConfigError
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.nets.torchvision_classifier import resolve_weights

log = logging.getLogger(__name__)


def pretrained_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's `weights` for `arch`, downloaded (or found) in $TORCH_HOME as
    torchvision itself fetches it; a failed download raises RuntimeError naming the file to place."""
    enum = resolve_weights(arch, weights)
    try:
        return enum.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        raise RuntimeError(
            f"Could not download the weights for {arch} ({err}). On a machine without internet, copy "
            f"{enum.url} to {target} (or give a local state-dict file as the weights)."
        ) from err


def warn_random_weights(label: str, reason: str) -> None:
    """Say loudly, in the log and as a warning, that a loss network runs with random weights."""
    message = (f"{label} RUNS WITH RANDOM WEIGHTS ({reason}). Style transfer needs ImageNet features: "
               "results are meaningless except as a smoke test.")
    log.warning(message)
    warnings.warn(message, stacklevel=3)


class LayerFeatures(nn.Module):
    """Maps images in [0, 1] to a dict of the requested layers' activations; never trained.

    `features` is a stack of modules and `names` names the output of each (`relu4_2`, `stage3_3`).
    Inputs are normalised with ImageNet's statistics, as torchvision's weights expect.
    """

    def __init__(self, features: nn.Sequential, names: list[str], label: str,
                 layers: list[str] | None = None) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.all_names = names
        self.label = label
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.layers: set[str] = set()
        if layers:
            self.capture(layers)

    def capture(self, layers: list[str]) -> None:
        """Return these layers from now on, and drop every layer deeper than the deepest of them."""
        unknown = [layer for layer in layers if layer not in self.all_names[: len(self.features)]]
        if unknown:
            raise ConfigError(f"Unknown {self.label} layer(s) {unknown}. Valid names: "
                              f"{', '.join(self.all_names[: len(self.features)])}")
        deepest = max((self.all_names.index(layer) for layer in layers), default=-1)  # none: no layer runs
        if deepest + 1 < len(self.features):
            self.features = self.features[: deepest + 1]
        self.layers = set(layers)

    def train(self, mode: bool = True) -> LayerFeatures:
        return super().train(False)  # always evaluated: there is nothing to train

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        captured = {}
        for name, module in zip(self.all_names, self.features, strict=False):
            x = module(x)
            if name in self.layers:
                captured[name] = x
        return captured

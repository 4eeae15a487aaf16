"""Frozen VGG19 features by layer name (`relu4_2`), truncated after the deepest layer asked for."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from core.errors import ConfigError
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.nets.torchvision_classifier import (
    get_model_or_explain,
    is_weights_file,
    load_state_dict,
    resolve_weights,
)

log = logging.getLogger(__name__)


def vgg_layer_names(features: nn.Sequential) -> list[str]:
    """Names of a torchvision VGG `features` stack by block: conv1_1, relu1_1, ..., pool1, conv2_1, ..."""
    names, block, index = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            index += 1
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            names.append(f"pool{block}")
            block, index = block + 1, 0
        else:
            raise ValueError(f"Unexpected layer {module} in a VGG feature stack.")
    return names


def random_vgg19_features() -> nn.Sequential:
    """VGG19's `features` initialised as torchvision does, without building the large classifier."""
    features = make_layers(cfgs["E"])
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def load_vgg19_features(weights: str | None) -> nn.Sequential:
    """VGG19 `features` with `weights` (DEFAULT, a weights name or a local file); random if unavailable."""
    if weights is not None and is_weights_file(weights):
        state = load_state_dict(weights)
        if any(key.startswith("features.") for key in state):  # a whole VGG19 state dict
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        features = random_vgg19_features()
        features.load_state_dict(state)
        return features
    if weights is not None:
        try:
            return get_model_or_explain("vgg19", weights=resolve_weights("vgg19", weights)).features
        except RuntimeError as err:
            reason = str(err)
    else:
        reason = "model.weights is null"
    message = (
        f"VGG19 RUNS WITH RANDOM WEIGHTS ({reason}). Style transfer needs ImageNet features: "
        "results are meaningless except as a smoke test."
    )
    log.warning(message)
    warnings.warn(message, stacklevel=2)
    return random_vgg19_features()


class VGGFeatures(nn.Module):
    """Maps images in [0, 1] to a dict of the requested layers' activations; never trained."""

    def __init__(self, weights: str | None = "DEFAULT", pooling: str = "max",
                 layers: list[str] | None = None) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ConfigError(f"model.pooling must be 'max' or 'avg', not {pooling!r}.")
        features = load_vgg19_features(weights)
        self.all_names = vgg_layer_names(features)
        stack = []
        for module in features:
            if isinstance(module, nn.ReLU):
                module = nn.ReLU(inplace=False)  # an in-place ReLU would overwrite a captured conv output
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                module = nn.AvgPool2d(kernel_size=2, stride=2)
            stack.append(module)
        self.features = nn.Sequential(*stack).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.layers: set[str] = set()
        if layers:
            self.capture(layers)

    def capture(self, layers: list[str]) -> None:
        """Return these layers from now on, and drop every layer deeper than the deepest of them."""
        unknown = [layer for layer in layers if layer not in self.all_names[: len(self.features)]]
        if unknown:
            raise ConfigError(f"Unknown VGG19 layer(s) {unknown}. Valid names: {', '.join(self.all_names)}")
        deepest = max((self.all_names.index(layer) for layer in layers), default=-1)  # none: no layer runs
        if deepest + 1 < len(self.features):
            self.features = self.features[: deepest + 1]
        self.layers = set(layers)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always evaluated: there is nothing to train

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        captured = {}
        for name, module in zip(self.all_names, self.features, strict=False):
            x = module(x)
            if name in self.layers:
                captured[name] = x
        return captured

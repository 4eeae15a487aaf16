"""Frozen VGG19 or VGG16 features by layer name (`relu4_2`), truncated after the deepest layer asked for."""

from __future__ import annotations

from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from core.errors import ConfigError
from lightning_modules.nets.layer_features import LayerFeatures, pretrained_state_dict, warn_random_weights
from lightning_modules.nets.torchvision_classifier import is_weights_file, load_state_dict

VGG_CONFIGS = {"vgg16": "D", "vgg19": "E"}  # torchvision's layer lists of each architecture


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


def random_vgg_features(arch: str = "vgg19") -> nn.Sequential:
    """VGG `features` initialised as torchvision does, without building the large classifier."""
    features = make_layers(cfgs[VGG_CONFIGS[arch]])
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def features_only(state: dict) -> dict:
    """The `features.*` entries of a whole VGG state dict, unprefixed (a features-only dict as it is)."""
    if any(key.startswith("features.") for key in state):
        return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    return state


def load_vgg_features(weights: str | None, arch: str = "vgg19") -> nn.Sequential:
    """VGG `features` with `weights` (DEFAULT, a weights name or a local file); random if unavailable."""
    if arch not in VGG_CONFIGS:
        raise ConfigError(f"Unknown VGG architecture {arch!r}: choose one of {', '.join(VGG_CONFIGS)}.")
    features = random_vgg_features(arch)
    if weights is not None and is_weights_file(weights):
        features.load_state_dict(features_only(load_state_dict(weights)))
        return features
    if weights is not None:
        try:
            features.load_state_dict(features_only(pretrained_state_dict(arch, weights)))
            return features
        except RuntimeError as err:
            reason = str(err)
    else:
        reason = "the weights are null"
    warn_random_weights(arch.upper(), reason)
    return features


class VGGFeatures(LayerFeatures):
    """torchvision's VGG19 (or VGG16) convolutional stack, frozen, layers named by block.

    Its ReLUs are not in place (an in-place ReLU would overwrite a captured convolution output);
    `pooling="avg"` replaces max pooling by average pooling (Gatys et al.).
    """

    def __init__(self, weights: str | None = "DEFAULT", pooling: str = "max",
                 layers: list[str] | None = None, arch: str = "vgg19") -> None:
        if pooling not in ("max", "avg"):
            raise ConfigError(f"model.pooling must be 'max' or 'avg', not {pooling!r}.")
        features = load_vgg_features(weights, arch)
        stack = []
        for module in features:
            if isinstance(module, nn.ReLU):
                module = nn.ReLU(inplace=False)
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                module = nn.AvgPool2d(kernel_size=2, stride=2)
            stack.append(module)
        super().__init__(nn.Sequential(*stack), vgg_layer_names(features), arch.upper(), layers)

"""The loss networks the style tasks can measure images with: VGG19, VGG16 or MobileNetV3 features.

MobileNetV3's blocks are named by resolution like VGG's: `stage<s>_<i>` is the i-th block whose output
is 2**s times smaller than the input (`stage1_1` the stem at 1/2, `stage4_6` the last block at 1/16
of mobilenet_v3_large, ...), so that layer lists read shallow to deep as they do for VGG.
"""

from __future__ import annotations

import math

import torchvision
from torch import nn

from core.errors import ConfigError
from lightning_modules.nets.layer_features import LayerFeatures, pretrained_state_dict, warn_random_weights
from lightning_modules.nets.torchvision_classifier import is_weights_file, load_state_dict
from lightning_modules.nets.vgg_features import VGG_CONFIGS, VGGFeatures

MOBILENETS = ("mobilenet_v3_large", "mobilenet_v3_small")
ARCHITECTURES = (*VGG_CONFIGS, *MOBILENETS)


def block_stride(block: nn.Module) -> int:
    """How many times smaller a block's output is than its input (the product of its convs' strides)."""
    return math.prod(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))


def stage_names(features: nn.Sequential) -> list[str]:
    """`stage<s>_<i>` for each block: s counts the halvings of resolution so far, i the block within them."""
    names, stage, index = [], 0, 0
    for block in features:
        if block_stride(block) > 1:
            stage, index = stage + int(math.log2(block_stride(block))), 0
        index += 1
        names.append(f"stage{stage}_{index}")
    return names


def load_mobilenet_features(arch: str, weights: str | None) -> nn.Sequential:
    """torchvision's MobileNetV3 `features` with `weights` (a weights name or a local file); random if
    they cannot be had."""
    model = torchvision.models.get_model(arch, weights=None)
    if weights is not None and is_weights_file(weights):
        model.load_state_dict(load_state_dict(weights))
        return model.features
    if weights is not None:
        try:
            model.load_state_dict(pretrained_state_dict(arch, weights))
            return model.features
        except RuntimeError as err:
            reason = str(err)
    else:
        reason = "the weights are null"
    warn_random_weights(arch, reason)
    return model.features


class MobileNetV3Features(LayerFeatures):
    """torchvision's MobileNetV3 (large or small) feature blocks, frozen, named `stage<s>_<i>`."""

    def __init__(self, arch: str = "mobilenet_v3_large", weights: str | None = "DEFAULT",
                 layers: list[str] | None = None) -> None:
        features = load_mobilenet_features(arch, weights)
        super().__init__(features, stage_names(features), arch, layers)


def build_loss_network(arch: str = "vgg19", weights: str | None = "DEFAULT", pooling: str = "max",
                       layers: list[str] | None = None) -> LayerFeatures:
    """The frozen loss network `arch` (vgg19, vgg16, mobilenet_v3_large, mobilenet_v3_small)."""
    if arch in VGG_CONFIGS:
        return VGGFeatures(weights=weights, pooling=pooling, layers=layers, arch=arch)
    if arch in MOBILENETS:
        if pooling != "max":
            raise ConfigError(f"pooling={pooling!r} applies to VGG loss networks only; {arch} has no "
                              "pooling layers to replace. Remove the option.")
        return MobileNetV3Features(arch, weights, layers)
    raise ConfigError(f"Unknown loss network {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")

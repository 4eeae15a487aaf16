"""A network's layers by the names `print(model)` shows (`features.0`, `model.layer4`), and the layer that
Grad-CAM reads by default: the last convolutional stage of the network's family."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import ConfigError
from lightning_modules.nets.unet import UNet

POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
SHOWN_NAMES = 80  # longer lists show the names of the first two levels


def unwrapped(net: nn.Module) -> nn.Module:
    """The network itself, also when torch.compile wrapped it."""
    return getattr(net, "_orig_mod", net)


def layer_names(net: nn.Module) -> list[str]:
    """Every submodule's name, in the order `print(model)` shows them."""
    return [name for name, _ in unwrapped(net).named_modules() if name]


def find_layers(net: nn.Module, names: Sequence[str], key: str) -> dict[str, nn.Module]:
    """The submodules called `names`; a ConfigError naming `key`, the unknown names and the valid ones."""
    modules = dict(unwrapped(net).named_modules())
    unknown = [name for name in names if name not in modules or not name]
    if unknown:
        raise ConfigError(unknown_layers_message(net, unknown, key))
    return {name: modules[name] for name in names}


def unknown_layers_message(net: nn.Module, unknown: Sequence[str], key: str) -> str:
    """What is wrong with `unknown` layer names of `net` and which names would do."""
    names = layer_names(net)
    hints = [f"{name!r} -> did you mean {', '.join(close)}?" for name in unknown
             if (close := difflib.get_close_matches(str(name), names, n=3, cutoff=0.6))]
    shown = names if len(names) <= SHOWN_NAMES else [n for n in names if n.count(".") <= 1]
    listing = ", ".join(shown)
    if len(shown) < len(names):
        listing += f" (and {len(names) - len(shown)} deeper ones: print(model) shows them all)"
    return (f"{key}: {type(unwrapped(net)).__name__} has no layer {', '.join(map(repr, unknown))}. "
            + (" ".join(hints) + " " if hints else "")
            + f"Valid names, as print(model) shows them: {listing}.")


@dataclass(frozen=True)
class Completed:
    """One module's forward, as the probe saw it finish."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None  # None: the output is not a tensor


def probe(net: nn.Module, example: torch.Tensor) -> list[Completed]:
    """Every named module's output shape for `example`, in the order the forwards finished (eval mode)."""
    net = unwrapped(net)
    finished: list[Completed] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            finished.append(Completed(name, module, shape))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in net.named_modules() if name]
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(example)
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    return finished


def feature_scope(net: nn.Module) -> str:
    """Where a segmenter's encoder lives (`backbone`, `encoder`), whose last stage Grad-CAM reads (as
    MMSegmentation's CAM tool does); "" for the whole network."""
    for name, _ in unwrapped(net).named_modules():
        if name.rsplit(".", 1)[-1] in ("backbone", "encoder"):
            return name
    return ""


def within(name: str, scope: str) -> bool:
    """Whether module `name` is `scope` or inside it ("" holds every module)."""
    return not scope or name == scope or name.startswith(f"{scope}.")


def default_cam_layer(net: nn.Module, example: torch.Tensor) -> str:
    """The last convolutional stage: the outermost module that finishes last with a feature map of the
    last convolution's size (ResNet `layer4`, VGG and DenseNet `features`, a segmenter's encoder stage).

    A UNet's is its bottleneck (the last encoder stage). Transformers have none: the error says to
    choose a layer with `callbacks.cam.layer`.
    """
    net = unwrapped(net)
    if isinstance(net, UNet):
        return f"downs.{len(net.downs) - 1}"
    scope = feature_scope(net)
    finished = [c for c in probe(net, example) if within(c.name, scope)]
    convolutions = [i for i, c in enumerate(finished) if isinstance(c.module, nn.Conv2d)]
    if not convolutions:
        where = f" in {scope}" if scope else ""
        raise ConfigError(f"{type(net).__name__} has no 2-D convolution{where} for Grad-CAM to read by "
                          "default: set callbacks.cam.layer to a layer whose output is a (batch, channels, "
                          "H, W) map.")
    last = convolutions[-1]
    size = finished[last].shape[-2:]
    stages = [i for i, c in enumerate(finished) if i >= last and c.shape is not None and len(c.shape) == 4
              and c.shape[-2:] == size and not isinstance(c.module, POOLING)]
    chosen = finished[stages[-1]]
    if any("attention" in type(c.module).__name__.lower() for c in finished[stages[-1] + 1:]):
        raise ConfigError(f"{type(net).__name__} attends after its last convolution ({chosen.name}): "
                          "Grad-CAM has no convolutional stage to read by default. Set callbacks.cam.layer "
                          "to a layer whose output is a (batch, channels, H, W) map.")
    return chosen.name


def check_map_layer(net: nn.Module, name: str, example: torch.Tensor, key: str) -> None:
    """A ConfigError naming `key` unless layer `name` outputs a (batch, channels, H, W) map for `example`."""
    shape = next((c.shape for c in probe(net, example) if c.name == name), None)
    if shape is None or len(shape) != 4:
        got = "no tensor" if shape is None else f"shape {shape}"
        raise ConfigError(f"{key}={name}: Grad-CAM needs a layer whose output is a (batch, channels, H, W) "
                          f"map, and {name} gives {got}. Choose a convolutional stage (null: the default).")

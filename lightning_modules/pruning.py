"""Structured channel pruning with Torch-Pruning's dependency graph (DepGraph), and the pruned network's
shapes recorded so that a checkpoint of it can be rebuilt from the unpruned architecture."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError

METHODS = ("magnitude", "taylor")
# Layer attributes that say a layer's width (Conv, ConvTranspose, Linear, norms, attention).
WIDTH_ATTRIBUTES = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
                    "num_channels", "num_groups", "normalized_shape", "embed_dim", "num_heads", "head_dim")
OUTPUT_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def class_layers(net: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layers that must keep their width: those with `num_classes` outputs (classifier, segmentation
    and auxiliary heads) and those that run after the last of them (upsampling, activation)."""
    return [m for m in net.modules()
            if isinstance(m, OUTPUT_LAYERS) and getattr(m, "out_features", getattr(m, "out_channels", -1))
            == num_classes]


def unprunable_reason(net: nn.Module) -> str | None:
    """Why `net` is refused: attention layers, whose heads Torch-Pruning can only prune consistently when
    told each layer's head count and layout (transformers: SegFormer's MiT, ViT, Swin), which no
    framework network declares (a weightless placeholder, as smp's UNet decoder holds without attention,
    does not count); None for convolutional networks."""
    attention = sorted({type(m).__name__ for m in net.modules()
                        if isinstance(m, nn.MultiheadAttention)
                        or ("Attention" in type(m).__name__ and any(True for _ in m.parameters()))})
    if attention:
        return (f"it has attention layers ({', '.join(attention)}), whose query/key/value widths and heads "
                "must be pruned together; prune convolutional networks (CNNs, UNet, DeepLab, FPN, ...) or "
                "distil it into one (task.distill.teacher)")
    return None


def importance(method: str) -> Any:
    """Torch-Pruning's group importance: L2 magnitude of each channel group, or first-order Taylor
    (|weight x gradient|, gradients accumulated by the caller on training batches)."""
    import torch_pruning as tp

    if method == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if method == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ConfigError(f"compress.prune.method={method!r}: use one of {', '.join(METHODS)}.")


def prune_channels(net: nn.Module, example: torch.Tensor, ratio: float, method: str,
                   keep: Iterable[nn.Module], round_to: int | None = None,
                   accumulate_gradients: Callable[[], None] | None = None) -> None:
    """Remove `ratio` of the output channels of every prunable layer of `net` in place (uniformly, each
    group of coupled layers together), leaving the layers in `keep` their width.

    `accumulate_gradients` fills the parameters' .grad for the Taylor criterion.
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ConfigError(f"compress.prune.ratio={ratio}: the fraction of channels to remove, in (0, 1).")
    reason = unprunable_reason(net)
    if reason:
        raise ConfigError(f"{type(net).__name__} cannot be pruned channel-wise: {reason}.")
    scorer = importance(method)
    was_training = net.training
    net.eval()
    pruner = tp.pruner.MetaPruner(net, example, importance=scorer, pruning_ratio=ratio,
                                  ignored_layers=list(keep), round_to=round_to)
    if method == "taylor":
        if accumulate_gradients is None:
            raise ConfigError("compress.prune.method=taylor needs training batches for its gradients.")
        net.zero_grad()
        accumulate_gradients()
    pruner.step()
    net.zero_grad(set_to_none=True)
    net.train(was_training)


def layer_shapes(net: nn.Module) -> dict[str, dict[str, Any]]:
    """Every module's own parameter and buffer shapes and width attributes: what rebuilds a pruned net."""
    shapes = {}
    for name, module in net.named_modules():
        record = {
            "parameters": {k: list(v.shape) for k, v in module.named_parameters(recurse=False)},
            "buffers": {k: list(v.shape) for k, v in module.named_buffers(recurse=False) if v is not None},
            "attributes": {k: module.__dict__[k] for k in WIDTH_ATTRIBUTES if k in module.__dict__},
        }
        if any(record.values()):
            shapes[name] = record
    return shapes


def reshape_to(net: nn.Module, shapes: dict[str, dict[str, Any]]) -> None:
    """Give the unpruned `net` the recorded (pruned) shapes: empty tensors the state dict then fills."""
    modules = dict(net.named_modules())
    missing = sorted(set(shapes) - set(modules))
    if missing:
        raise ConfigError(f"The pruned checkpoint names layers this network does not have "
                          f"({', '.join(missing[:5])}): build it with the checkpoint's own model config.")
    for name, record in shapes.items():
        module = modules[name]
        for key, shape in record["parameters"].items():
            old = getattr(module, key)
            setattr(module, key, nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad))
        for key, shape in record["buffers"].items():
            old = getattr(module, key)
            persistent = key not in module._non_persistent_buffers_set
            module.register_buffer(key, old.new_empty(shape), persistent=persistent)
        for key, value in record["attributes"].items():
            setattr(module, key, tuple(value) if isinstance(value, list) else value)

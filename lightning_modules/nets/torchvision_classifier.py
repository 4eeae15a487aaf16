"""torchvision classification models by name: pretrained weights, new head, 1-channel input, freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import load_file as load_safetensors
from torch import nn
from torchvision.models import WeightsEnum

from core.errors import CheckpointError, ConfigError

WEIGHTS_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".safetensors"}


class TorchvisionClassifier(nn.Module):
    """A torchvision model with a new head; `freeze_backbone` trains only the head.

    Frozen batch-norm layers are kept in eval mode during training by the classification task's
    `lightning_modules.finetuning.BackboneFinetuning`, which can also unfreeze the backbone later.
    """

    def __init__(self, model: nn.Module, freeze_backbone: bool = False) -> None:
        super().__init__()
        self.model = model
        self.head_name = "model." + _last_linear_name(model)  # the new head; the rest is the backbone
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for name, param in self.named_parameters():
                param.requires_grad = name.startswith(self.head_name + ".")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_classifier(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str | None = None,
    freeze_backbone: bool = False,
) -> TorchvisionClassifier:
    """Build torchvision model `name` with `num_classes` outputs and `in_channels` inputs.

    `weights` is None (random init), a torchvision weights name (`DEFAULT`, `IMAGENET1K_V2`),
    or the path of a local state-dict file, for machines without internet access.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            f"Unknown torchvision model {name!r}. Choose model.name from: {', '.join(available)}"
        )
    if weights is not None and is_weights_file(weights):
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(load_state_dict(weights))
    else:
        model = _get_model_with_weights(name, weights)
    replace_head(model, num_classes)
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return TorchvisionClassifier(model, freeze_backbone)


def is_weights_file(weights: str) -> bool:
    """Whether a `weights` setting names a local file rather than torchvision weights."""
    return Path(weights).suffix in WEIGHTS_SUFFIXES or Path(weights).exists()


def _get_model_with_weights(name: str, weights: str | None) -> nn.Module:
    resolved = resolve_weights(name, weights) if weights is not None else None
    return get_model_or_explain(name, weights=resolved)


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """The member `weights` (`DEFAULT`, `IMAGENET1K_V2`, ...) of torchvision model `name`'s weights."""
    try:
        return torchvision.models.get_model_weights(name).verify(weights)
    except (KeyError, ValueError) as err:
        names = ["DEFAULT"] + [w.name for w in torchvision.models.get_model_weights(name)]
        raise ConfigError(
            f"Unknown weights {weights!r} for {name}. Choose one of {names} or a local .pth file."
        ) from err


def get_model_or_explain(name: str, **kwargs: Any) -> nn.Module:
    """torchvision's `get_model`; a failed weights download says which file to put where instead."""
    try:
        return torchvision.models.get_model(name, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        wanted = [(key, w) for key, w in kwargs.items() if isinstance(w, WeightsEnum)]
        hints = "; ".join(
            f"copy {w.url} to {Path(torch.hub.get_dir()) / 'checkpoints' / Path(w.url).name} "
            f"(or set model.{key} to a local state-dict file)" for key, w in wanted
        )
        raise RuntimeError(
            f"Could not download the weights for {name} ({err}). On a machine without internet, "
            f"{hints}."
        ) from err


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a file (torch or safetensors): plain, or inside a `state_dict`/`model` entry."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist: check model.weights (a torchvision "
                              "weights name or a .pth file).")
    if path.suffix == ".safetensors":
        return load_safetensors(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _last_linear_name(model: nn.Module) -> str:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no linear classification head to replace.")
    return names[-1]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path `name` by `module`."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Replace the last linear layer by a freshly initialised one with `num_classes` outputs."""
    name = _last_linear_name(model)
    head = model.get_submodule(name)
    if head.out_features != num_classes:
        set_submodule(model, name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the first convolution take `in_channels` inputs, keeping what pretrained RGB filters know."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
    )
    with torch.no_grad():
        mean_filter = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean_filter.repeat(1, in_channels, 1, 1) * 3 / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    set_submodule(model, name, new)

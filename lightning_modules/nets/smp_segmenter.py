"""segmentation_models_pytorch architectures x encoders, with offline-friendly encoder weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import CheckpointError, ConfigError
from lightning_modules.nets.torchvision_classifier import is_weights_file
from lightning_modules.nets.torchvision_segmenter import load_backbone

TIMM_PREFIX = "tu-"


class PaddedSegmenter(nn.Module):
    """Pads inputs to a multiple of the encoder's output stride and crops the logits back.

    smp's encoders need sides divisible by their stride; evaluation runs at full resolution.
    """

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.model(x)[..., :height, :width]


def build_smp(
    arch: str,
    encoder: str,
    num_classes: int,
    in_channels: int = 3,
    encoder_weights: str | None = None,
    **options: Any,
) -> PaddedSegmenter:
    """smp model `arch` (Unet, DeepLabV3Plus, Segformer, ...) on `encoder` (resnet50, mit_b0, tu-<timm>).

    `encoder_weights`: None (random), a pretrained name of smp's (`imagenet`, `ssl`, ...; for
    `tu-` encoders any name loads timm's default weights), or a local state-dict file.
    `options` go to the architecture (e.g. `encoder_output_stride`, `decoder_channels`).
    """
    arch_class = _architecture(arch)
    _check_encoder(encoder, encoder_weights)
    if encoder_weights is not None and is_weights_file(str(encoder_weights)):
        model = _with_local_weights(arch_class, encoder, str(encoder_weights), num_classes, in_channels,
                                    options)
    else:
        weights = True if encoder.startswith(TIMM_PREFIX) and encoder_weights else encoder_weights
        try:
            model = arch_class(encoder_name=encoder, encoder_weights=weights, in_channels=in_channels,
                               classes=num_classes, **options)
        except OSError as err:  # huggingface_hub's LocalEntryNotFoundError is a FileNotFoundError
            raise CheckpointError(_download_hint(encoder, str(encoder_weights), err)) from err
    return PaddedSegmenter(model, model.encoder.output_stride)


def _architecture(arch: str) -> type[nn.Module]:
    try:
        return smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()]
    except KeyError:
        names = ", ".join(a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values())
        raise ConfigError(f"Unknown smp architecture model.arch={arch!r}. Choose one of: {names}.") from None


def _check_encoder(encoder: str, weights: str | None) -> None:
    if encoder.startswith(TIMM_PREFIX):
        return
    if encoder in smp.encoders.encoders:
        known = smp.encoders.encoders[encoder]["pretrained_settings"]
        if weights is None or weights in known or is_weights_file(str(weights)):
            return
        raise ConfigError(f"smp encoder {encoder} has no weights {weights!r}: set model.encoder_weights to "
                          f"one of {sorted(known)}, null, or a local state-dict file.")
    raise ConfigError(
        f"Unknown smp encoder model.encoder={encoder!r}. Choose one of smp's encoders "
        f"({', '.join(smp.encoders.get_encoder_names()[:12])}, ...; all in "
        "segmentation_models_pytorch.encoders.get_encoder_names()) or any timm model as tu-<name>."
    )


def _with_local_weights(
    arch_class: type[nn.Module], encoder: str, path: str, num_classes: int, in_channels: int,
    options: dict[str, Any],
) -> nn.Module:
    if not Path(path).is_file():
        raise CheckpointError(f"model.encoder_weights={path}: no such file. Give the encoder's state "
                              "dict (.safetensors, .pth), or null for random weights.")
    if encoder.startswith(TIMM_PREFIX):  # timm reads the file itself, dropping the classifier
        return arch_class(encoder_name=encoder, encoder_weights=True, in_channels=in_channels,
                          classes=num_classes, pretrained_cfg_overlay={"file": path}, **options)
    model = arch_class(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes,
                       **options)
    try:
        load_backbone(model.encoder, path)
    except ValueError as err:
        raise CheckpointError(f"model.encoder_weights: {err}") from err
    model.encoder.set_in_channels(in_channels, pretrained=True)
    return model


def hub_weights_dir(encoder: str, weights: str) -> tuple[str, Path]:
    """smp's Hugging Face repository of `encoder`'s `weights` and the cache folder its files go to."""
    settings = smp.encoders.encoders[encoder]["pretrained_settings"][weights]
    repo = settings["repo_id"]
    folder = huggingface_hub.constants.HF_HUB_CACHE
    cache = Path(folder) / f"models--{repo.replace('/', '--')}" / "snapshots" / settings["revision"]
    return repo, cache


def _download_hint(encoder: str, weights: str, err: Exception) -> str:
    if encoder.startswith(TIMM_PREFIX):
        where = ("download timm's weights of that model (model.safetensors or pytorch_model.bin) "
                 f"elsewhere and set model.encoder_weights=/path/to/{encoder[len(TIMM_PREFIX):]}.safetensors")
    else:
        repo, cache = hub_weights_dir(encoder, weights)
        where = (f"copy config.json and model.safetensors of https://huggingface.co/{repo} to {cache}/ "
                 "(or set model.encoder_weights to the local model.safetensors)")
    return (f"Could not download the {weights} weights of smp encoder {encoder} ({type(err).__name__}). "
            f"On a machine without internet, {where}.")

"""torchvision segmentation models by name (DeepLabV3, FCN, LRASPP): weights, class count, input channels."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from core.errors import CheckpointError, ConfigError
from lightning_modules.nets.torchvision_classifier import (
    adapt_first_conv,
    get_model_or_explain,
    is_weights_file,
    load_state_dict,
    resolve_weights,
    set_submodule,
)


def build_segmenter(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str | None = None,
    weights_backbone: str | None = None,
    aux_loss: bool = True,
) -> nn.Module:
    """torchvision segmentation model `name` with `num_classes` outputs; it returns `{"out", "aux"}`.

    `weights` (the whole model: `DEFAULT`, `COCO_WITH_VOC_LABELS_V1` or a local .pth file) takes
    precedence over `weights_backbone` (ImageNet backbone: `DEFAULT`, `IMAGENET1K_V1` or a local
    file of the classification model's state dict). Pretrained heads are replaced when
    `num_classes` differs from theirs. `aux_loss` adds the auxiliary head (DeepLabV3 and FCN).
    """
    available = torchvision.models.list_models(module=torchvision.models.segmentation)
    if name not in available:
        raise ConfigError(f"Unknown torchvision segmentation model {name!r}. Choose model.name from: "
                         f"{', '.join(available)}")
    has_aux = not name.startswith("lraspp")
    options = {"aux_loss": True} if has_aux else {}
    if weights is not None and is_weights_file(weights):
        state = load_state_dict(weights)
        options["aux_loss"] = has_aux and any(key.startswith("aux_classifier.") for key in state)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                             num_classes=_classes_in(state), **options)
        model.load_state_dict(state)
    elif weights is not None:
        model = get_model_or_explain(name, weights=resolve_weights(name, weights), **options)
    else:
        options["aux_loss"] = has_aux and aux_loss
        local_backbone = weights_backbone is not None and is_weights_file(weights_backbone)
        backbone = None if local_backbone else weights_backbone
        model = get_model_or_explain(
            name, weights=None, num_classes=num_classes, **options,
            weights_backbone=resolve_weights(backbone_name(name), backbone) if backbone else None,
        )
        if local_backbone:
            load_backbone(model.backbone, weights_backbone)
    replace_class_convs(model, num_classes)
    if has_aux and not aux_loss:
        model.aux_classifier = None
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model


def backbone_name(name: str) -> str:
    """The classification model a segmentation model is built on: `deeplabv3_resnet50` -> `resnet50`."""
    return name.split("_", 1)[1]


def _classes_in(state: dict[str, torch.Tensor]) -> int:
    convs = [value for key, value in state.items() if key.startswith("classifier.") and value.ndim == 4]
    if not convs:
        raise CheckpointError("The weights file holds no `classifier.*` convolution: is it a torchvision "
                         "segmentation model's state dict? (use model.weights_backbone for a backbone)")
    return convs[-1].shape[0]


def replace_class_convs(model: nn.Module, num_classes: int) -> None:
    """Give every per-class output convolution of the main and auxiliary heads `num_classes` outputs."""
    for head_name in ("classifier", "aux_classifier"):
        head = getattr(model, head_name, None)
        if head is None:
            continue
        convs = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Conv2d)]
        old = convs[-1][1].out_channels  # the last convolution of a head scores the classes
        for conv_name, conv in convs:
            if conv.out_channels == old and old != num_classes:
                new = nn.Conv2d(conv.in_channels, num_classes, conv.kernel_size, conv.stride,
                                conv.padding, bias=conv.bias is not None)
                set_submodule(model, f"{head_name}.{conv_name}", new)


def load_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Load a classification model's state dict (e.g. resnet50's ImageNet file) into a backbone."""
    state = {key.removeprefix("features."): value for key, value in load_state_dict(path).items()}
    expected = backbone.state_dict()
    missing = [key for key in expected if key not in state or state[key].shape != expected[key].shape]
    if missing:
        raise CheckpointError(
            f"{path} does not fit this backbone: {len(missing)} tensors missing or of another shape "
            f"({', '.join(missing[:4])}, ...). model.weights_backbone takes the state dict of the "
            "classification model the segmenter is built on (e.g. resnet50 for deeplabv3_resnet50)."
        )
    backbone.load_state_dict({key: state[key] for key in expected})

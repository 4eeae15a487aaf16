"""`visualize.filters=LAYER`: images that maximise each of a layer's first filters, for a trained checkpoint
(`ckpt_path=CKPT`) or a torchvision classifier by name (`visualize.model=vgg19`); one grid per layer as PNG
and to the loggers that take images, and each filter's activation before and after in `filters.json`."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image
from torch import nn

from app.build import instantiate_all
from app.feature_visualization import PARAMETERIZATIONS, LayerReader, Regularisers, visualize_filters
from app.overrides import command_line_overrides
from app.trained_model import build_from_checkpoint, load_checkpoint
from callbacks.figure_logging import log_image_to
from core.errors import ConfigError
from core.figures import captioned_grid
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.nets.layers import find_layers, unwrapped
from lightning_modules.nets.vgg_features import vgg_layer_names

KEY = "visualize.filters"


@dataclass
class Network:
    """A network to look into, with what its input needs: channels, normalisation, its own image size."""

    net: nn.Module
    channels: int
    mean: Sequence[float]
    std: Sequence[float]
    image_size: int
    source: str


def checkpoint_network(cfg: DictConfig) -> Network:
    """The trained network of `ckpt_path`, with the preprocessing its data used."""
    config, checkpoint = load_checkpoint(cfg.ckpt_path, command_line_overrides())
    datamodule, module = build_from_checkpoint(config, checkpoint)
    preprocessing = datamodule.inference_preprocessing()
    channels = 1 if preprocessing.mode == "L" else 3
    return Network(module.net, channels, preprocessing.mean, preprocessing.std,
                   int(config.data.get("crop_size") or config.data.image_size), str(cfg.ckpt_path))


def torchvision_network(name: str, weights: str | None) -> Network:
    """torchvision classifier `name` with `weights` (DEFAULT, a weights name, a local file, or null)."""
    import torchvision

    from lightning_modules.nets.torchvision_classifier import (
        get_model_or_explain,
        is_weights_file,
        load_state_dict,
        resolve_weights,
    )

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(f"visualize.model={name!r} is not a torchvision classifier. Choose one of: "
                          f"{', '.join(available)}.")
    if weights is not None and is_weights_file(str(weights)):
        net = torchvision.models.get_model(name, weights=None)
        net.load_state_dict(load_state_dict(str(weights)))
    else:
        net = get_model_or_explain(name, weights=resolve_weights(name, str(weights)) if weights else None)
    return Network(net, 3, IMAGENET_MEAN, IMAGENET_STD, 224, f"{name} ({weights or 'random'} weights)")


def vgg_aliases(net: nn.Module) -> dict[str, str]:
    """Gatys-style names of a VGG's feature layers (`conv5_1`, `relu4_2`) -> module names (`features.28`)."""
    for name, module in unwrapped(net).named_modules():
        if name.rsplit(".", 1)[-1] == "features" and isinstance(module, nn.Sequential):
            try:
                return {alias: f"{name}.{index}" for index, alias in enumerate(vgg_layer_names(module))}
            except ValueError:  # not a plain VGG stack (batch norm, other layers)
                return {}
    return {}


def requested_layers(cfg: DictConfig) -> list[str]:
    """`visualize.filters` as a list of names (one name or a list)."""
    value = cfg.visualize.filters
    return [str(v) for v in value] if isinstance(value, ListConfig | list) else [str(value)]


def chosen_filters(cfg: DictConfig, activation: torch.Tensor, layer: str) -> list[int]:
    """`visualize.filter_indices`, or the first `visualize.num_filters` of the layer's channels."""
    available = activation.shape[1]
    if activation.ndim not in (2, 4):
        raise ConfigError(f"{KEY}={layer}: its output has shape {tuple(activation.shape)}; filters are the "
                          "channels of a (batch, channels, H, W) map or the units of a (batch, units) layer.")
    indices = cfg.visualize.get("filter_indices")
    first = min(int(cfg.visualize.num_filters), available)
    chosen = [int(i) for i in indices] if indices else list(range(first))
    wrong = [i for i in chosen if not 0 <= i < available]
    if wrong:
        raise ConfigError(f"visualize.filter_indices={wrong}: {layer} has {available} filters "
                          f"(0-{available - 1}).")
    return chosen


def regularisers(cfg: DictConfig) -> Regularisers:
    """The `visualize.*` regularisation settings, checked."""
    options = cfg.visualize
    if options.parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"visualize.parameterization={options.parameterization!r}: use fourier "
                          "(decorrelated spectrum) or pixel (blurred every visualize.blur_every steps).")
    return Regularisers(str(options.parameterization), int(options.jitter),
                        tuple(float(s) for s in options.scales or ()), int(options.pad),
                        int(options.blur_every), float(options.blur_sigma))


def chosen_network(cfg: DictConfig) -> Network:
    """`visualize.model` (a torchvision classifier) or the checkpoint of `ckpt_path`: exactly one."""
    if cfg.visualize.model and cfg.ckpt_path:
        raise ConfigError("Give visualize.model (a torchvision classifier) or ckpt_path (a trained run), "
                          "not both.")
    if cfg.visualize.model:
        return torchvision_network(str(cfg.visualize.model), cfg.visualize.weights)
    if cfg.ckpt_path:
        return checkpoint_network(cfg)
    raise ConfigError(f"{KEY} needs a network: ckpt_path=CKPT (a classify or segment checkpoint) or "
                      "visualize.model=NAME (a torchvision classifier, e.g. vgg19, with visualize.weights).")


def chosen_layers(network: Network, requested: list[str]) -> dict[str, nn.Module]:
    """The modules `visualize.filters` names (VGGs: also by Gatys's names), keyed as requested."""
    aliases = vgg_aliases(network.net)
    try:
        modules = find_layers(network.net, [aliases.get(name, name) for name in requested], KEY)
    except ConfigError as error:
        vgg = f" This VGG also takes the names {', '.join(aliases)}." if aliases else ""
        raise ConfigError(f"{error}{vgg}") from None
    return {name: modules[aliases.get(name, name)] for name in requested}


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """`visualize.filters=LAYER[S]` with `ckpt_path=CKPT` or `visualize.model=NAME`: grids, filters.json."""
    settings = regularisers(cfg)
    network = chosen_network(cfg)
    layers = chosen_layers(network, requested_layers(cfg))
    accelerator = cfg.trainer.get("accelerator")
    device = torch.device("cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu")
    net = unwrapped(network.net).eval().requires_grad_(False).to(device)
    size = int(cfg.visualize.image_size or network.image_size)
    normalize = Normalization(network, device)
    filters = {name: layer_filters(cfg, network, net, name, layer, size, normalize)
               for name, layer in layers.items()}
    output_dir = Path(cfg.paths.output_dir) / "filters"
    output_dir.mkdir(parents=True, exist_ok=True)
    loggers = instantiate_all(cfg.get("logger"))
    print(f"Visualising filters of {network.source} at {size} px, {cfg.visualize.steps} steps "
          f"({cfg.visualize.parameterization} parameterisation).")
    results = {name: visualize_layer(cfg, net, name, layers[name], chosen, size, normalize, settings,
                                     output_dir, loggers) for name, chosen in filters.items()}
    for logger in loggers:
        logger.save()
    options = OmegaConf.to_container(cfg.visualize, resolve=True)
    (output_dir / "filters.json").write_text(json.dumps({"settings": options, "image_size": size,
                                                         "layers": results}, indent=2))
    return results


class Normalization:
    """[0, 1] images -> the network's input: (x - mean) / std."""

    def __init__(self, network: Network, device: torch.device) -> None:
        self.mean = torch.tensor(network.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(network.std, device=device).view(1, -1, 1, 1)
        self.channels = network.channels

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def layer_filters(cfg: DictConfig, network: Network, net: nn.Module, name: str, layer: nn.Module, size: int,
                  normalize: Normalization) -> list[int]:
    """The filters to visualise of one layer, checked on a grey image before any optimisation starts."""
    grey = torch.full((1, network.channels, size, size), 0.5, device=normalize.mean.device)
    try:
        with torch.no_grad():
            return chosen_filters(cfg, LayerReader(net, layer)(normalize(grey)), name)
    except RuntimeError as err:  # the layer sits behind a part that needs another input size
        raise ConfigError(f"{KEY}={name}: the network cannot run at visualize.image_size={size} up to this "
                          f"layer ({str(err).splitlines()[0]}). Use its own input size, "
                          f"visualize.image_size={network.image_size}.") from err


def visualize_layer(cfg: DictConfig, net: nn.Module, name: str, layer: nn.Module, filters: list[int],
                    size: int, normalize: Normalization, settings: Regularisers, output_dir: Path,
                    loggers: list[Any]) -> dict[str, Any]:
    """One layer's filters optimised, written as `<name>.png` and `filters/<name>` in the image loggers."""
    started = time.perf_counter()
    read = LayerReader(net, layer)
    result = visualize_filters(read, filters, normalize.channels, size, normalize,
                               int(cfg.visualize.steps), float(cfg.visualize.lr), settings,
                               int(cfg.seed), normalize.mean.device)
    seconds = time.perf_counter() - started
    captions = [f"{index}: {value:.3g}" for index, value in zip(filters, result.reached, strict=True)]
    grid = captioned_grid(list(result.images), captions, columns=math.ceil(math.sqrt(len(filters))))
    file = output_dir / f"{name}.png"
    Image.fromarray((grid * 255).round().byte().permute(1, 2, 0).numpy()).save(file)
    log_image_to(loggers, f"filters/{name}", grid, 0)
    start, reached = (sum(values) / len(values) for values in (result.start, result.reached))
    print(f"  {name}: {len(filters)} filters, mean activation {start:.3g} -> {reached:.3g} "
          f"in {seconds:.1f} s: {file}")
    return {"module": next(n for n, m in net.named_modules() if m is layer), "filters": filters,
            "objective": "mean pre-activation (the ReLU's input)" if read.reads_input else "mean activation",
            "start": result.start, "reached": result.reached, "seconds": seconds}

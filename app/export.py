"""`export.format=onnx|torchscript`: a checkpoint's network exported, verified against eager on real
samples, with `model.json` (classes, preprocessing, inference options; a style network's inputs) beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from app.exporters import GraphInput, export_network
from app.inputs import PredictionInputs, list_inputs
from app.overrides import command_line_overrides
from app.runtime import STYLIZED_NAME
from app.stylize import style_network
from app.trained_model import (
    PREDICTABLE_TASKS,
    build_from_checkpoint,
    class_names,
    load_checkpoint,
    style_names,
)
from core.contracts import ModelInfo, Preprocessing, StyleNetwork
from core.errors import ConfigError, DataError
from datamodules.transforms import preprocessing_transform
from lightning_modules.style_inference import inference_graph


def verification_samples(cfg: DictConfig, datamodule: Any, preprocessing: Preprocessing) -> torch.Tensor:
    """`export.samples` images, cropped to the size they share: from `export.verify_input`, or else the first
    test batches (style networks' test images are whole, one per batch)."""
    count = int(cfg.export.samples)
    if cfg.export.verify_input:
        inputs = PredictionInputs(list_inputs(str(cfg.export.verify_input))[:count],
                                  preprocessing_transform(preprocessing), preprocessing.mode)
        images = [image for i in range(len(inputs)) if (image := inputs[i]["image"]) is not None]
        if not images:
            raise DataError(f"export.verify_input={cfg.export.verify_input}: no readable image.")
        return cropped_together(images)
    try:
        datamodule.setup("test")
        images: list[torch.Tensor] = []
        for batch in datamodule.test_dataloader():
            images += list(batch["content"] if isinstance(batch, dict) else batch[0])
            if len(images) >= count:
                break
        return cropped_together(images[:count])
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"Export verifies on real samples, and the checkpoint's test data cannot be read "
                        f"({err}). Give images to verify on with export.verify_input=PATH.") from err


def cropped_together(images: list[torch.Tensor]) -> torch.Tensor:
    """The images' top-left parts of the size they all have, as one batch."""
    height, width = (min(image.shape[dim] for image in images) for dim in (-2, -1))
    return torch.stack([image[..., :height, :width] for image in images])


def style_graph_inputs(network: StyleNetwork, samples: torch.Tensor) -> list[GraphInput]:
    """A style graph's inputs after the images, to trace and verify it with: blends of the learned styles,
    or (AdaIN) style images made of the samples, two and then three of them at two sizes, and two alphas."""
    if network.conditioning == "none":
        return []
    if network.conditioning == "style_weights":
        count = len(network.styles)
        second = torch.nn.functional.one_hot(torch.tensor(count - 1), count).float()
        return [GraphInput("style_weights", torch.full((count,), 1 / count), second)]
    height, width = samples.shape[-2:]
    low = network.style_min_size or 1
    first = (max(low, height * 3 // 4), max(low, width * 3 // 4))
    styles = [samples[:1], samples[-1:].flip(-1), samples[:1].flip(-2)]
    example = torch.nn.functional.interpolate(torch.cat(styles[:2]), size=first, mode="bilinear")
    second = torch.nn.functional.interpolate(torch.cat(styles), size=(first[0] + 8, first[1] + 16),
                                             mode="bilinear")
    sides = {0: ("styles", 1), 2: ("style_height", low), 3: ("style_width", low)}
    return [GraphInput("styles", example, second, sides),
            GraphInput("style_weights", torch.tensor([0.6, 0.4]), torch.tensor([0.5, 0.3, 0.2]),
                       {0: ("styles", 1)}),
            GraphInput("alpha", torch.tensor(0.75), torch.tensor(1.0))]


def export_style_network(cfg: DictConfig, module: Any, checkpoint: dict[str, Any], folder: Path,
                         samples: torch.Tensor
                         ) -> tuple[Path, dict[str, Any], StyleNetwork, list[GraphInput]]:
    """A style network's inference graph exported with dynamic batch, height and width (and AdaIN's style
    inputs dynamic too), verified against the eager graph; its `StyleNetwork` for model.json."""
    refused = [f"export.quantize={cfg.export.quantize}"] if cfg.export.get("quantize") else []
    refused += ["export.format=tensorrt"] if cfg.export.format == "tensorrt" else []
    if refused:
        raise ConfigError(f"{', '.join(refused)} is for classify and segment networks; export a style "
                          "network with export.format=onnx or torchscript.")
    net = module.network
    network = style_network(net, style_names(checkpoint, getattr(net, "num_styles", 1)))
    extra = style_graph_inputs(network, samples)
    path, facts = export_network(inference_graph(net), str(cfg.export.format), folder, samples,
                                 int(cfg.export.opset), dynamic_hw=True,
                                 tolerance=float(cfg.export.tolerance), extra=extra,
                                 min_side=network.min_size, output_name=STYLIZED_NAME)
    return path, facts, network, extra


def task_options(module: pl.LightningModule) -> dict[str, Any]:
    """The trained module's test/predict options as `task.*` keys, resolved (a slide stride included)."""
    inference = getattr(module, "inference", None)
    if inference is not None:
        return inference.task_options()
    return {"tta": {"flip": bool(getattr(module, "tta_flip", False))}}


def export(cfg: DictConfig) -> Path:
    """`export.format=onnx|torchscript|tensorrt ckpt_path=CKPT`: `<run dir>/export/model.*`, `model.json`."""
    if cfg.export.format == "tensorrt":
        from app.tensorrt import require_tensorrt

        require_tensorrt()  # before any loading: no CUDA device, no engine
    config, checkpoint = load_checkpoint(cfg.ckpt_path, command_line_overrides(), PREDICTABLE_TASKS)
    datamodule, module = build_from_checkpoint(config, checkpoint)
    preprocessing = datamodule.inference_preprocessing()
    samples = verification_samples(cfg, datamodule, preprocessing)
    task = str(config.task_name)
    folder = Path(cfg.paths.output_dir) / "export"
    if task == "style_net":
        path, facts, network, extra = export_style_network(cfg, module, checkpoint, folder, samples)
        info = ModelInfo(task=task, classes=[], num_classes=0, channels=3, input_size=None,
                         preprocessing=preprocessing, ignore_index=None, task_options={},
                         checkpoint=str(Path(cfg.ckpt_path).resolve()), style=network, **facts)
        write_model_info(info, folder, path)
        report_export_costs(cfg, inference_graph(module.network), path, samples,
                            tuple(graph_input.example for graph_input in extra))
        return path
    if cfg.export.format == "tensorrt":
        from app.tensorrt import export_tensorrt

        path, facts = export_tensorrt(module.net, folder, samples, int(cfg.export.opset), task == "segment",
                                      float(cfg.export.tensorrt_tolerance), bool(cfg.export.tensorrt_fp16))
    else:
        path, facts = export_network(module.net, str(cfg.export.format), folder, samples,
                                     int(cfg.export.opset), dynamic_hw=task == "segment",
                                     tolerance=float(cfg.export.tolerance))
    int8 = None
    if cfg.export.get("quantize"):
        from app.quantize import quantize_onnx

        int8 = quantize_onnx(cfg, path, datamodule, task, int(config.data.num_classes),
                             config.data.get("ignore_index"), samples if cfg.export.verify_input else None)
    info = ModelInfo(task=task, classes=class_names(checkpoint, int(config.data.num_classes)),
                     num_classes=int(config.data.num_classes), channels=int(config.data.channels),
                     input_size=None if task == "segment" else [int(config.data.image_size)] * 2,
                     preprocessing=preprocessing, ignore_index=config.data.get("ignore_index"),
                     task_options=task_options(module), checkpoint=str(Path(cfg.ckpt_path).resolve()),
                     int8=int8, **facts)
    write_model_info(info, folder, path)
    report_export_costs(cfg, module.net, path, samples)
    return path


def write_model_info(info: ModelInfo, folder: Path, path: Path) -> None:
    """`model.json` beside the exported file."""
    (folder / "model.json").write_text(json.dumps(info.to_json(), indent=2))
    print(f"Exported {path} and {folder / 'model.json'}")


def report_export_costs(cfg: DictConfig, net: torch.nn.Module, path: Path, samples: torch.Tensor,
                        extra: tuple[torch.Tensor, ...] = ()) -> None:
    """metrics.json of an export run: the network's parameters and compute, the file's size, and the
    exported model's images/s on the verification samples (onnxruntime or torch.jit, this machine)."""
    from app.costs import file_size, images_per_second, network_costs, peak_memory, report_mode_costs
    from app.runtime import ExportedModel

    speed = images_per_second(ExportedModel(path), samples.float(), extra=extra)
    costs = {**network_costs(net, (1, *samples.shape[1:]), extra), **file_size(path, "cost/export_bytes"),
             **file_size(cfg.ckpt_path, "cost/checkpoint_bytes"), "cost/inference_images_per_s": speed,
             **peak_memory()}
    int8 = path.with_name("model.int8.onnx")
    if cfg.export.get("quantize") and int8.is_file():
        costs |= {**file_size(int8, "cost/int8_export_bytes"),
                  "cost/int8_inference_images_per_s": images_per_second(ExportedModel(int8),
                                                                        samples.float())}
    report_mode_costs(cfg.paths.output_dir, costs)

"""`export.format=onnx|torchscript`: a checkpoint's network exported, verified against eager on real
samples, with `model.json` (classes, preprocessing, inference options) beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from app.exporters import export_network
from app.inputs import PredictionInputs, list_inputs
from app.overrides import command_line_overrides
from app.trained_model import build_from_checkpoint, class_names, load_checkpoint
from core.contracts import ModelInfo, Preprocessing
from core.errors import DataError
from datamodules.transforms import preprocessing_transform


def verification_samples(cfg: DictConfig, datamodule: Any, preprocessing: Preprocessing) -> torch.Tensor:
    """`export.samples` images: from `export.verify_input` (cropped to the size they share), or else the
    first test batch."""
    count = int(cfg.export.samples)
    if cfg.export.verify_input:
        inputs = PredictionInputs(list_inputs(str(cfg.export.verify_input))[:count],
                                  preprocessing_transform(preprocessing), preprocessing.mode)
        images = [image for i in range(len(inputs)) if (image := inputs[i]["image"]) is not None]
        if not images:
            raise DataError(f"export.verify_input={cfg.export.verify_input}: no readable image.")
        height, width = (min(image.shape[dim] for image in images) for dim in (-2, -1))
        return torch.stack([image[..., :height, :width] for image in images])
    try:
        datamodule.setup("test")
        return next(iter(datamodule.test_dataloader()))[0][:count]
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"Export verifies on real samples, and the checkpoint's test data cannot be read "
                        f"({err}). Give images to verify on with export.verify_input=PATH.") from err


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
    config, checkpoint = load_checkpoint(cfg.ckpt_path, command_line_overrides())
    datamodule, module = build_from_checkpoint(config, checkpoint)
    preprocessing = datamodule.inference_preprocessing()
    samples = verification_samples(cfg, datamodule, preprocessing)
    task = str(config.task_name)
    folder = Path(cfg.paths.output_dir) / "export"
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
    (folder / "model.json").write_text(json.dumps(info.to_json(), indent=2))
    print(f"Exported {path} and {folder / 'model.json'}")
    report_export_costs(cfg, module.net, path, samples)
    return path


def report_export_costs(cfg: DictConfig, net: torch.nn.Module, path: Path, samples: torch.Tensor) -> None:
    """metrics.json of an export run: the network's parameters and compute, the file's size, and the
    exported model's images/s on the verification samples (onnxruntime or torch.jit, this machine)."""
    from app.costs import file_size, images_per_second, network_costs, peak_memory, report_mode_costs
    from app.runtime import ExportedModel

    costs = {**network_costs(net, (1, *samples.shape[1:])), **file_size(path, "cost/export_bytes"),
             **file_size(cfg.ckpt_path, "cost/checkpoint_bytes"),
             "cost/inference_images_per_s": images_per_second(ExportedModel(path), samples.float()),
             **peak_memory()}
    int8 = path.with_name("model.int8.onnx")
    if cfg.export.get("quantize") and int8.is_file():
        costs |= {**file_size(int8, "cost/int8_export_bytes"),
                  "cost/int8_inference_images_per_s": images_per_second(ExportedModel(int8),
                                                                        samples.float())}
    report_mode_costs(cfg.paths.output_dir, costs)

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
    """`export.format=onnx|torchscript ckpt_path=CKPT`: `<run dir>/export/model.*` and `model.json`."""
    config, checkpoint = load_checkpoint(cfg.ckpt_path, command_line_overrides())
    datamodule, module = build_from_checkpoint(config, checkpoint)
    preprocessing = datamodule.inference_preprocessing()
    samples = verification_samples(cfg, datamodule, preprocessing)
    task = str(config.task_name)
    folder = Path(cfg.paths.output_dir) / "export"
    path, facts = export_network(module.net, str(cfg.export.format), folder, samples, int(cfg.export.opset),
                                 dynamic_hw=task == "segment", tolerance=float(cfg.export.tolerance))
    info = ModelInfo(task=task, classes=class_names(checkpoint, int(config.data.num_classes)),
                     num_classes=int(config.data.num_classes), channels=int(config.data.channels),
                     input_size=None if task == "segment" else [int(config.data.image_size)] * 2,
                     preprocessing=preprocessing, ignore_index=config.data.get("ignore_index"),
                     task_options=task_options(module), checkpoint=str(Path(cfg.ckpt_path).resolve()),
                     **facts)
    (folder / "model.json").write_text(json.dumps(info.to_json(), indent=2))
    print(f"Exported {path} and {folder / 'model.json'}")
    return path

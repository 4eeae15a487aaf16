"""`predict.input=...`: a checkpoint's network (or an exported model) in Lightning's predict loop, with the
task's prediction writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from app.build import instantiate_all
from app.costs import file_size, parameter_counts, peak_memory, report_mode_costs
from app.inputs import PredictionInputs, collate_inputs, list_inputs
from app.overrides import apply_overrides, command_line_overrides, override_key
from app.runtime import ExportedModel, read_model_info
from app.trained_model import build_from_checkpoint, check_task, class_names, load_checkpoint
from app.writers import ClassificationWriter, PredictionWriter, SegmentationWriter
from callbacks.cam import PredictionCAM
from callbacks.throughput import Throughput
from core.contracts import ModelInfo, Preprocessing, SegmentationInference, stride_follows_crop
from core.errors import ConfigError, DataError
from datamodules.base import loader_workers
from datamodules.transforms import preprocessing_transform
from lightning_modules.inference import classify_logits, predict_batch, segment_logits


class ExportedTask(pl.LightningModule):
    """Predicts with an exported model (onnxruntime or torch.jit) in Lightning's predict loop."""

    def __init__(self, model: ExportedModel, task: str, task_options: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.flip = bool((task_options.get("tta") or {}).get("flip"))
        self.inference = SegmentationInference.from_task(task_options) if task == "segment" else None

    def inference_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.inference is None:
            return classify_logits(self.model, images, flip=self.flip)
        return segment_logits(self.model, images, **self.inference.logits_options())

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return predict_batch(batch, self.inference_logits)


def exported_task_options(info: ModelInfo, overrides: Sequence[str]) -> dict[str, Any]:
    """An export's task options with the command line's `task.*` overrides, as a checkpoint's get them."""
    options = OmegaConf.create({"task": info.task_options})
    apply_overrides(options, overrides, ("task",))
    stride_follows_crop(options.task, [override_key(o) for o in overrides])
    return OmegaConf.to_container(options.task)


def make_writer(task: str, cfg: DictConfig, inputs: PredictionInputs, classes: list[str]) -> PredictionWriter:
    """The writer of `task`'s results, configured by `predict.*`."""
    output_dir = Path(cfg.paths.output_dir)
    if task == "classify":
        return ClassificationWriter(output_dir, inputs.paths, inputs.names, classes, cfg.predict.top_k,
                                    cfg.predict.contact_sheet_images)
    return SegmentationWriter(output_dir, inputs.paths, inputs.names, classes, cfg.predict.save_probabilities,
                              cfg.predict.overlay_alpha)


def cam_writers(cfg: DictConfig, module: pl.LightningModule, inputs: PredictionInputs, classes: list[str],
                preprocessing: Preprocessing) -> list[pl.Callback]:
    """`predict.cam=true`: the Grad-CAM overlay writer (layer and class from `callbacks.cam.*`)."""
    if not cfg.predict.get("cam"):
        return []
    if isinstance(module, ExportedTask):
        raise ConfigError("predict.cam=true needs the network's gradients: give ckpt_path=CKPT instead of "
                          f"predict.model={cfg.predict.model} (an exported model has none).")
    return [PredictionCAM(cfg.paths.output_dir, inputs.names, classes, preprocessing.mean,
                          preprocessing.std, layer=OmegaConf.select(cfg, "callbacks.cam.layer"),
                          class_name=OmegaConf.select(cfg, "callbacks.cam.class_name"),
                          alpha=OmegaConf.select(cfg, "callbacks.cam.alpha", default=0.5))]


def run_predict_loop(cfg: DictConfig, module: pl.LightningModule, task: str, preprocessing: Preprocessing,
                     classes: list[str], num_workers: int) -> PredictionWriter:
    """List the inputs, then Lightning's predict loop with the task's writer (DDP splits the inputs)."""
    from hydra.utils import instantiate

    inputs = PredictionInputs(list_inputs(str(cfg.predict.input)), preprocessing_transform(preprocessing),
                              preprocessing.mode)
    loader = DataLoader(inputs, batch_size=cfg.predict.batch_size, num_workers=num_workers,
                        collate_fn=collate_inputs)
    writer = make_writer(task, cfg, inputs, classes)
    callbacks = [writer, *cam_writers(cfg, module, inputs, classes, preprocessing)]
    loggers = instantiate_all(cfg.get("logger"))
    throughput = Throughput()
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, throughput], logger=loggers or False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if trainer.is_global_zero and len(writer.gathered_skipped) == len(inputs):
        raise DataError(f"None of the {len(inputs)} input image(s) could be read: see "
                        f"{Path(cfg.paths.output_dir) / 'skipped.txt'}.")
    if trainer.is_global_zero:
        report_predict_costs(cfg, module, throughput, writer.metrics)
    return writer


def report_predict_costs(cfg: DictConfig, module: pl.LightningModule, throughput: Throughput,
                         scores: dict[str, float]) -> None:
    """metrics.json of a predict run: the writer's scores (a labelled run's classification report), images/s,
    and the network's parameters or the exported file's size."""
    costs: dict[str, Any] = dict(scores)
    speed = throughput.images_per_second("predict")
    if speed is not None:
        costs["cost/inference_images_per_s"] = speed
    if isinstance(module, ExportedTask):
        costs.update(file_size(module.model.path, "cost/export_bytes"))
    else:
        costs.update(parameter_counts(module.net))
        costs.update(file_size(cfg.ckpt_path, "cost/checkpoint_bytes"))
    costs.update(peak_memory(module.device))
    report_mode_costs(cfg.paths.output_dir, costs)


def predict(cfg: DictConfig) -> None:
    """`predict.input=PATH` with `ckpt_path=CKPT` or `predict.model=model.onnx|model.pt`."""
    overrides = command_line_overrides()
    if cfg.predict.model:
        model = ExportedModel(cfg.predict.model)
        info = read_model_info(cfg.predict.model)
        check_task(info.task, overrides, str(cfg.predict.model))
        module = ExportedTask(model, info.task, exported_task_options(info, overrides))
        run_predict_loop(cfg, module, info.task, info.preprocessing, info.classes, num_workers=0)
        return
    config, checkpoint = load_checkpoint(cfg.ckpt_path, overrides)
    datamodule, module = build_from_checkpoint(config, checkpoint)
    run_predict_loop(cfg, module, str(config.task_name), datamodule.inference_preprocessing(),
                     class_names(checkpoint, int(config.data.num_classes)),
                     loader_workers(config.data.get("num_workers", 0)))

"""`predict.input=...`: a checkpoint's network (or an exported model) in Lightning's predict loop, with the
task's prediction writer; a style network also styles videos (`app.stylize`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from app.boundary import is_rank_zero
from app.build import instantiate_all
from app.costs import file_size, parameter_counts, peak_memory, report_mode_costs
from app.inputs import PredictionInputs, collate_inputs, is_video_name, list_inputs
from app.overrides import apply_overrides, command_line_overrides, override_key
from app.runtime import ExportedModel, read_model_info
from app.stylize import (
    StyleModel,
    StylizeTask,
    check_sizes,
    image_transform,
    inference_device,
    refuse_style_options,
    style_choices,
    style_options,
    stylize_videos,
)
from app.trained_model import (
    PREDICTABLE_TASKS,
    build_from_checkpoint,
    check_task,
    class_names,
    load_checkpoint,
    style_names,
)
from app.video import VideoFacts
from app.writers import ClassificationWriter, PredictionWriter, SegmentationWriter, StyleWriter
from callbacks.cam import PredictionCAM
from callbacks.throughput import Throughput
from core.contracts import ModelInfo, Preprocessing, SegmentationInference, stride_follows_crop
from core.errors import ConfigError, DataError
from datamodules.base import loader_workers
from datamodules.image_files import output_names
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


def run_predict_loop(cfg: DictConfig, module: pl.LightningModule, inputs: PredictionInputs,
                     writer: PredictionWriter, num_workers: int, callbacks: Sequence[pl.Callback] = ()
                     ) -> dict[str, Any]:
    """Lightning's predict loop over `inputs` with `writer` (DDP splits the inputs); returns the run's costs
    (on rank 0; empty elsewhere)."""
    from hydra.utils import instantiate

    loader = DataLoader(inputs, batch_size=cfg.predict.batch_size, num_workers=num_workers,
                        collate_fn=collate_inputs)
    loggers = instantiate_all(cfg.get("logger"))
    throughput = Throughput()
    trainer = instantiate(cfg.trainer, callbacks=[writer, *callbacks, throughput], logger=loggers or False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if trainer.is_global_zero and len(writer.gathered_skipped) == len(inputs):
        raise DataError(f"None of the {len(inputs)} input image(s) could be read: see "
                        f"{Path(cfg.paths.output_dir) / 'skipped.txt'}.")
    return predict_costs(cfg, module, throughput) if trainer.is_global_zero else {}


def predict_labels(cfg: DictConfig, module: pl.LightningModule, task: str, preprocessing: Preprocessing,
                   classes: list[str], num_workers: int) -> None:
    """A classify or segment network on the inputs, with the task's writer (and Grad-CAM's)."""
    refuse_style_options(style_options(cfg.predict), task)
    inputs = PredictionInputs(list_inputs(str(cfg.predict.input)), preprocessing_transform(preprocessing),
                              preprocessing.mode)
    writer = make_writer(task, cfg, inputs, classes)
    costs = run_predict_loop(cfg, module, inputs, writer, num_workers,
                             cam_writers(cfg, module, inputs, classes, preprocessing))
    if costs:  # rank 0: the writer's scores (a labelled run's classification report) beside the costs
        report_mode_costs(cfg.paths.output_dir, {**writer.metrics, **costs})


def predict_styles(cfg: DictConfig, model: StyleModel, num_workers: int) -> None:
    """A style network on the images and videos of `predict.input`, in the style(s) `predict.*` chooses:
    every option, style image, video and image size is checked before anything is styled."""
    if cfg.predict.get("cam"):
        raise ConfigError("predict.cam=true explains a class decision; a style network makes none. Remove "
                          "it.")
    options = style_options(cfg.predict)
    choices = style_choices(options, model.network)
    paths = list_inputs(str(cfg.predict.input), videos=True)
    names = dict(zip(paths, output_names(paths), strict=True))
    images = [path for path in paths if not is_video_name(path)]
    videos = [VideoFacts.probe(path) for path in paths if is_video_name(path)]
    device = inference_device(str(cfg.trainer.get("accelerator", "auto"))) if videos else None
    check_sizes(images, videos, model.network.min_size, options["image_size"])
    output_dir = Path(cfg.paths.output_dir)
    costs = model_costs(cfg, model.net, model.forward)
    if images:
        inputs = PredictionInputs(images, image_transform(options["image_size"]), "RGB",
                                  names=[names[path] for path in images])
        writer = StyleWriter(output_dir, inputs.paths, inputs.names, [choice.label for choice in choices])
        costs |= run_predict_loop(cfg, StylizeTask(model, choices), inputs, writer, num_workers)
    if not is_rank_zero():
        return
    if videos:  # not split between processes: rank 0 styles them all
        speed = stylize_videos(model, choices, videos, [names[video.path] for video in videos], output_dir,
                               int(cfg.predict.batch_size), options["image_size"], device,
                               bool(cfg.trainer.get("enable_progress_bar", True)))
        costs |= {"cost/video_frames_per_s": speed} if speed is not None else {}
    report_mode_costs(cfg.paths.output_dir, costs)


def model_costs(cfg: DictConfig, net: torch.nn.Module | None, model: Any) -> dict[str, Any]:
    """The exported file's size, or the network's parameters and the checkpoint's size."""
    if isinstance(model, ExportedModel):
        return file_size(model.path, "cost/export_bytes")
    return {**parameter_counts(net), **file_size(cfg.ckpt_path, "cost/checkpoint_bytes")}


def predict_costs(cfg: DictConfig, module: pl.LightningModule, throughput: Throughput) -> dict[str, Any]:
    """A predict run's costs: images/s, peak memory, the network's parameters or the exported file's size."""
    costs: dict[str, Any] = {}
    speed = throughput.images_per_second("predict")
    if speed is not None:
        costs["cost/inference_images_per_s"] = speed
    costs.update(model_costs(cfg, getattr(module, "net", None), getattr(module, "model", None)))
    costs.update(peak_memory(module.device))
    return costs


def predict(cfg: DictConfig) -> None:
    """`predict.input=PATH` with `ckpt_path=CKPT` or `predict.model=model.onnx|model.pt`."""
    overrides = command_line_overrides()
    if cfg.predict.model:
        model = ExportedModel(cfg.predict.model)
        info = read_model_info(cfg.predict.model)
        check_task(info.task, overrides, str(cfg.predict.model))
        if info.style is not None:
            predict_styles(cfg, StyleModel.exported(model, info.style), num_workers=0)
            return
        module = ExportedTask(model, info.task, exported_task_options(info, overrides))
        predict_labels(cfg, module, info.task, info.preprocessing, info.classes, num_workers=0)
        return
    config, checkpoint = load_checkpoint(cfg.ckpt_path, overrides, PREDICTABLE_TASKS)
    datamodule, module = build_from_checkpoint(config, checkpoint)
    num_workers = loader_workers(config.data.get("num_workers", 0))
    if config.task_name == "style_net":
        net = module.network
        names = style_names(checkpoint, getattr(net, "num_styles", 1))
        predict_styles(cfg, StyleModel.eager(net, names, str(cfg.ckpt_path)), num_workers)
        return
    predict_labels(cfg, module, str(config.task_name), datamodule.inference_preprocessing(),
                   class_names(checkpoint, int(config.data.num_classes)), num_workers)

"""`predict.input=...`: a checkpoint's network (or an exported model) in Lightning's predict loop, with the
task's prediction writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from app.build import instantiate_all
from app.inputs import PredictionInputs, collate_inputs, list_inputs
from app.overrides import apply_overrides, command_line_overrides
from app.runtime import ExportedModel
from app.trained_model import build_from_checkpoint, check_task, class_names, load_checkpoint
from app.writers import ClassificationWriter, PredictionWriter, SegmentationWriter
from callbacks.cam import PredictionCAM
from core.errors import ConfigError, DataError
from datamodules.transforms import preprocessing_transform
from lightning_modules.inference import classify_logits, predict_batch, segment_logits


class ExportedTask(pl.LightningModule):
    """Predicts with an exported model (onnxruntime or torch.jit) in Lightning's predict loop."""

    def __init__(self, model: ExportedModel, task: str, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.options = options

    def inference_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.task == "classify":
            return classify_logits(self.model, images, flip=bool(self.options.get("tta", {}).get("flip")))
        options = {k: self.options.get(k) for k in ("inference", "crop_size", "stride")}
        tta = self.options.get("tta") or {}
        return segment_logits(self.model, images, flip=bool(tta.get("flip")),
                              scales=tta.get("scales") or [1.0], **options)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return predict_batch(batch, self.inference_logits)


def make_writer(task: str, cfg: DictConfig, inputs: PredictionInputs, classes: list[str]) -> PredictionWriter:
    """The writer of `task`'s results, configured by `predict.*`."""
    output_dir = Path(cfg.paths.output_dir)
    if task == "classify":
        return ClassificationWriter(output_dir, inputs.paths, inputs.names, classes, cfg.predict.top_k,
                                    cfg.predict.contact_sheet_images)
    return SegmentationWriter(output_dir, inputs.paths, inputs.names, classes, cfg.predict.save_probabilities,
                              cfg.predict.overlay_alpha)


def cam_writers(cfg: DictConfig, module: pl.LightningModule, inputs: PredictionInputs, classes: list[str],
                preprocessing: dict[str, Any]) -> list[pl.Callback]:
    """`predict.cam=true`: the Grad-CAM overlay writer (layer and class from `callbacks.cam.*`)."""
    if not cfg.predict.get("cam"):
        return []
    if isinstance(module, ExportedTask):
        raise ConfigError("predict.cam=true needs the network's gradients: give ckpt_path=CKPT instead of "
                          f"predict.model={cfg.predict.model} (an exported model has none).")
    return [PredictionCAM(cfg.paths.output_dir, inputs.names, classes, preprocessing["mean"],
                          preprocessing["std"], layer=OmegaConf.select(cfg, "callbacks.cam.layer"),
                          class_name=OmegaConf.select(cfg, "callbacks.cam.class_name"),
                          alpha=OmegaConf.select(cfg, "callbacks.cam.alpha", default=0.5))]


def run_predict_loop(cfg: DictConfig, module: pl.LightningModule, task: str, preprocessing: dict[str, Any],
                     classes: list[str], num_workers: int) -> PredictionWriter:
    """List the inputs, then Lightning's predict loop with the task's writer (DDP splits the inputs)."""
    from hydra.utils import instantiate

    inputs = PredictionInputs(list_inputs(str(cfg.predict.input)), preprocessing_transform(preprocessing),
                              preprocessing["mode"])
    loader = DataLoader(inputs, batch_size=cfg.predict.batch_size, num_workers=num_workers,
                        collate_fn=collate_inputs)
    writer = make_writer(task, cfg, inputs, classes)
    callbacks = [writer, *cam_writers(cfg, module, inputs, classes, preprocessing)]
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if trainer.is_global_zero and len(writer.gathered_skipped) == len(inputs):
        raise DataError(f"None of the {len(inputs)} input image(s) could be read: see "
                        f"{Path(cfg.paths.output_dir) / 'skipped.txt'}.")
    return writer


def predict(cfg: DictConfig) -> None:
    """`predict.input=PATH` with `ckpt_path=CKPT` or `predict.model=model.onnx|model.pt`."""
    overrides = command_line_overrides()
    if cfg.predict.model:
        model = ExportedModel(cfg.predict.model)
        check_task(model.info["task"], overrides, str(cfg.predict.model))
        options = OmegaConf.create({"task": model.info.get("task_options", {})})
        apply_overrides(options, overrides, ("task",))
        module = ExportedTask(model, model.info["task"], OmegaConf.to_container(options.task))
        run_predict_loop(cfg, module, model.info["task"], model.info["preprocessing"], model.info["classes"],
                         num_workers=0)
        return
    config, checkpoint = load_checkpoint(cfg.ckpt_path, overrides)
    datamodule, module = build_from_checkpoint(config, checkpoint)
    run_predict_loop(cfg, module, str(config.task_name), datamodule.inference_preprocessing(),
                     class_names(checkpoint, int(config.data.num_classes)),
                     int(config.data.get("num_workers", 0)))

"""`predict.input=...` and `export.format=...` runs: the network, preprocessing and classes from a
checkpoint's stored run config (or an exported model's model.json), with command-line overrides."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from callbacks.run_config import CHECKPOINT_KEY as CONFIG_KEY
from callbacks.run_config import CLASSES_KEY
from core.errors import CheckpointError, ConfigError, DataError
from datamodules.base import loader_workers
from datamodules.transforms import preprocessing_transform
from lightning_modules.inference.export import export_network
from lightning_modules.inference.inputs import PredictionInputs, collate_inputs, list_inputs, predict_batch
from lightning_modules.inference.modes import classify_logits, segment_logits
from lightning_modules.inference.runtime import ExportedModel
from lightning_modules.inference.writers import ClassificationWriter, PredictionWriter, SegmentationWriter

STORED_GROUPS = ("data", "model", "task")  # what a checkpoint decides and the command line may override
PREDICTABLE_TASKS = ("classify", "segment")


def command_line_overrides() -> list[str]:
    """This run's command-line overrides (Hydra's), or none outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def apply_overrides(config: DictConfig, overrides: Sequence[str],
                    groups: Sequence[str] = STORED_GROUPS) -> None:
    """Apply the `group.key=value` overrides of `groups` to a stored config (`~key` deletes, `+key` adds)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if "." not in key or key.split(".")[0] not in groups:
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(config, parent)
            if node is not None and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(config, key, override.value(), merge=True, force_add=True)


def chosen_task(overrides: Sequence[str]) -> str | None:
    """The `task=` option given on the command line, if any."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("task=")]
    return chosen[-1] if chosen else None


def check_task(trained_for: str, overrides: Sequence[str], source: str) -> None:
    """A checkpoint or export of another task than the command line's, or of one that cannot predict."""
    asked = chosen_task(overrides)
    if asked is not None and asked != trained_for:
        raise CheckpointError(f"{source} was trained for task={trained_for}, but this run asks for "
                              f"task={asked}. Drop task={asked} (the checkpoint sets the task) or give a "
                              f"task={asked} checkpoint.")
    if trained_for not in PREDICTABLE_TASKS:
        raise CheckpointError(f"{source} is a task={trained_for} run: only classify and segment "
                              "networks predict or export (style runs write their images in "
                              "<run dir>/stylized/).")


def load_checkpoint(ckpt_path: str | None, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any]]:
    """The checkpoint's run config with the command line's data/model/task overrides, and the checkpoint."""
    if not ckpt_path:
        raise ConfigError("Predicting or exporting needs a trained network: give ckpt_path=PATH (a .ckpt "
                          "of a classify or segment run), or predict.model=PATH of an exported model.")
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"ckpt_path={ckpt_path} cannot be read as a checkpoint ({err}).") from err
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} holds no visionlab run config ({CONFIG_KEY}): only checkpoints "
                              "written by run.py's training can be used for predict and export.")
    config = OmegaConf.create(checkpoint[CONFIG_KEY])
    check_task(str(config.get("task_name")), overrides, str(path))
    apply_overrides(config, overrides)
    return config, checkpoint


def build_from_checkpoint(config: DictConfig, checkpoint: dict[str, Any]) -> tuple[Any, pl.LightningModule]:
    """The datamodule (for its preprocessing and test data) and the task module with the trained weights."""
    from hydra.utils import instantiate

    model_config = config.model.copy()
    for key in ("weights", "weights_backbone"):  # the checkpoint holds the trained weights: download nothing
        if key in model_config:
            model_config[key] = None
    datamodule = instantiate(config.data)
    module = instantiate(config.task, net=instantiate(model_config), optimizer=None, scheduler=None,
                         compile=False)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"The checkpoint's weights do not fit the network its config builds: {err}. "
                              "Drop the model.* overrides that change the architecture.") from err
    return datamodule, module.eval()


def class_names(checkpoint: dict[str, Any], num_classes: int) -> list[str]:
    """The class names stored with the checkpoint, or the class indices."""
    stored = checkpoint.get(CLASSES_KEY)
    return [str(name) for name in stored] if stored and len(stored) == num_classes else [
        str(i) for i in range(num_classes)]


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


def run_predict_loop(cfg: DictConfig, module: pl.LightningModule, task: str, preprocessing: dict[str, Any],
                     classes: list[str], num_workers: int) -> PredictionWriter:
    """List the inputs, then Lightning's predict loop with the task's writer (DDP splits the inputs)."""
    from hydra.utils import instantiate

    inputs = PredictionInputs(list_inputs(str(cfg.predict.input)), preprocessing_transform(preprocessing),
                              preprocessing["mode"])
    loader = DataLoader(inputs, batch_size=cfg.predict.batch_size, num_workers=num_workers,
                        collate_fn=collate_inputs)
    writer = make_writer(task, cfg, inputs, classes)
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()
               if node and "_target_" in node]
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=loggers or False)
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
        apply_overrides(options, overrides, groups=("task",))
        module = ExportedTask(model, model.info["task"], OmegaConf.to_container(options.task))
        run_predict_loop(cfg, module, model.info["task"], model.info["preprocessing"], model.info["classes"],
                         num_workers=0)
        return
    config, checkpoint = load_checkpoint(cfg.ckpt_path, overrides)
    datamodule, module = build_from_checkpoint(config, checkpoint)
    run_predict_loop(cfg, module, str(config.task_name), datamodule.inference_preprocessing(),
                     class_names(checkpoint, int(config.data.num_classes)),
                     loader_workers(config.data.get("num_workers", 0)))


def verification_samples(cfg: DictConfig, datamodule: Any, preprocessing: dict[str, Any]) -> torch.Tensor:
    """`export.samples` images: from `export.verify_input`, or else the first test batch."""
    count = int(cfg.export.samples)
    if cfg.export.verify_input:
        inputs = PredictionInputs(list_inputs(str(cfg.export.verify_input))[:count],
                                  preprocessing_transform(preprocessing), preprocessing["mode"])
        images = collate_inputs([inputs[i] for i in range(len(inputs))])["images"]
        if images is None:
            raise DataError(f"export.verify_input={cfg.export.verify_input}: no readable image.")
        return images
    try:
        datamodule.setup("test")
        return next(iter(datamodule.test_dataloader()))[0][:count]
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"Export verifies on real samples, and the checkpoint's test data cannot be read "
                        f"({err}). Give images to verify on with export.verify_input=PATH.") from err


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
    task_options = {k: v for k, v in OmegaConf.to_container(config.task, resolve=True).items()
                    if k in ("inference", "crop_size", "stride", "tta")}
    info = {"task": task, "classes": class_names(checkpoint, int(config.data.num_classes)),
            "num_classes": int(config.data.num_classes), "channels": int(config.data.channels),
            "input_size": None if task == "segment" else [int(config.data.image_size)] * 2,
            "mean": preprocessing["mean"], "std": preprocessing["std"], "preprocessing": preprocessing,
            "ignore_index": config.data.get("ignore_index"), "task_options": task_options,
            "checkpoint": str(Path(cfg.ckpt_path).resolve()), **facts}
    (folder / "model.json").write_text(json.dumps(info, indent=2))
    print(f"Exported {path} and {folder / 'model.json'}")
    return path


def mode_of(cfg: DictConfig) -> Callable[[DictConfig], Any] | None:
    """`predict` or `export` when the config asks for it, else None (train/test)."""
    if cfg.get("export", {}).get("format"):
        return export
    if cfg.get("predict", {}).get("input"):
        return predict
    return None

"""A trained model for the modes that use one (predict, export): the network, datamodule and class names
rebuilt from a checkpoint's stored run config, with the command line's overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from app.overrides import apply_overrides, chosen_option
from core.contracts import CHECKPOINT_KEY, CLASSES_KEY
from core.errors import CheckpointError, ConfigError
from lightning_modules.checkpoint_io import read_checkpoint

STORED_GROUPS = ("data", "model", "task")  # what a checkpoint decides and the command line may override
PREDICTABLE_TASKS = ("classify", "segment")


def check_task(trained_for: str, overrides: Sequence[str], source: str) -> None:
    """A checkpoint or export of another task than the command line's, or of one that cannot predict."""
    asked = chosen_option(overrides, "task")
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
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} holds no visionlab run config ({CHECKPOINT_KEY}): only checkpoints "
                              "written by run.py's training can be used for predict and export.")
    config = OmegaConf.create(checkpoint[CHECKPOINT_KEY])
    check_task(str(config.get("task_name")), overrides, str(path))
    apply_overrides(config, overrides, STORED_GROUPS)
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
        module.on_load_checkpoint(checkpoint)  # a pruned network takes its stored shapes first
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



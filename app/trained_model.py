"""A trained model for the modes that use one (predict, export, serve, ...): the network, datamodule and class
(or style) names rebuilt from a checkpoint's stored run config, with the command line's overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from app.overrides import apply_overrides, chosen_option, override_key
from app.renamed_keys import move_renamed_keys
from core.contracts import CHECKPOINT_KEY, CLASSES_KEY, STYLES_KEY, stride_follows_crop
from core.errors import CheckpointError, ConfigError
from lightning_modules.checkpoint_io import read_checkpoint

STORED_GROUPS = ("data", "model", "task")  # what a checkpoint decides and the command line may override
LABELLING_TASKS = ("classify", "segment")  # networks that give class scores: compress, visualise, distil
PREDICTABLE_TASKS = (*LABELLING_TASKS, "style_net")  # networks that predict, export and serve
TRAINING_ONLY_TASK_KEYS = ("loss_network",)  # what only measures training: not built to run the network


def check_task(trained_for: str, overrides: Sequence[str], source: str,
               tasks: Sequence[str] = PREDICTABLE_TASKS) -> None:
    """A checkpoint or export of another task than the command line's, or of one this mode cannot use."""
    asked = chosen_option(overrides, "task")
    if asked is not None and asked != trained_for:
        raise CheckpointError(f"{source} was trained for task={trained_for}, but this run asks for "
                              f"task={asked}. Drop task={asked} (the checkpoint sets the task) or give a "
                              f"task={asked} checkpoint.")
    if trained_for not in tasks:
        hint = " (style runs write their images in <run dir>/stylized/)" if trained_for == "style" else ""
        raise CheckpointError(f"{source} is a task={trained_for} run: only {', '.join(tasks[:-1])} and "
                              f"{tasks[-1]} networks can be used here{hint}.")


def load_checkpoint(ckpt_path: str | None, overrides: Sequence[str], tasks: Sequence[str] = LABELLING_TASKS
                    ) -> tuple[DictConfig, dict[str, Any]]:
    """The checkpoint's run config with the command line's data/model/task overrides, and the checkpoint
    (of one of `tasks`)."""
    if not ckpt_path:
        raise ConfigError("Predicting or exporting needs a trained network: give ckpt_path=PATH (a .ckpt "
                          f"of a {' or '.join(tasks)} run), or predict.model=PATH of an exported model.")
    path = Path(ckpt_path).expanduser()
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} holds no visionlab run config ({CHECKPOINT_KEY}): only checkpoints "
                              "written by run.py's training can be used for predict and export.")
    config = OmegaConf.create(checkpoint[CHECKPOINT_KEY])
    move_renamed_keys(config, quiet=True)  # the keys of older checkpoints are no one's to rename
    check_task(str(config.get("task_name")), overrides, str(path), tasks)
    apply_overrides(config, overrides, STORED_GROUPS)
    stride_follows_crop(config.task, [override_key(o) for o in overrides])
    return config, checkpoint


# data key -> the model key that conf/model/*.yaml interpolates from it: what a network is built for
NETWORK_INPUTS = {"channels": "in_channels", "num_classes": "num_classes", "image_size": "image_size"}
WEIGHT_SOURCES = ("weights", "weights_backbone", "encoder_weights")  # where training started: no architecture


def follow_data_keys(stored: dict[str, Any], config: DictConfig) -> list[str]:
    """Give `config.model` the overridden data keys its network was built from (a checkpoint stores the
    resolved config, so the `${data.image_size}` link is gone), as a new run's config would; returns the
    data overrides so followed, e.g. `data.image_size=64`."""
    followed = []
    for data_key, model_key in NETWORK_INPUTS.items():
        trained = (stored.get("data") or {}).get(data_key)
        built_for = (stored.get("model") or {}).get(model_key)
        asked = config.data.get(data_key)
        overridden = config.model.get(model_key) != built_for  # model.* given too: the weights check says
        if trained is None or built_for != trained or asked == trained or overridden:
            continue
        config.model[model_key] = asked
        followed.append(f"data.{data_key}={asked}")
    return followed


def differing_options(trained: Any, current: Any, prefix: str = "model") -> list[tuple[str, Any, Any]]:
    """(key, trained value, current value) of every `prefix.*` option that differs, pretrained weight
    sources aside (they only say where training started)."""
    trained, current = dict(trained or {}), dict(current or {})
    keys = sorted(trained.keys() | current.keys())
    return [(f"{prefix}.{key}", trained.get(key), current.get(key)) for key in keys
            if key not in WEIGHT_SOURCES and trained.get(key) != current.get(key)]


def misfit_reason(stored: dict[str, Any], model_config: Any, followed: list[str]) -> str:
    """Why trained weights do not fit the network a config builds, named by the options that differ."""
    differing = differing_options(stored.get("model"), model_config)
    if not differing:
        return "no model option differs from the checkpoint's run."
    shown = " ".join(f"{key}={trained}" for key, trained, _ in differing)
    now = ", ".join(f"{key}={current}" for key, _, current in differing)
    if followed:
        return (f"{' '.join(followed)} changes what the stored network was built for ({now}; it was trained "
                f"with {shown}): its trained weights cannot take it. Drop {' '.join(followed)} (images are "
                "then prepared as in training), or train a network for it.")
    return (f"the checkpoint's run built it with {shown}, this run's config has {now}. Give the checkpoint's "
            f"values ({shown}) or drop the overrides that change them.")


def build_from_checkpoint(config: DictConfig, checkpoint: dict[str, Any]) -> tuple[Any, pl.LightningModule]:
    """The datamodule (for its preprocessing and test data) and the task module with the trained weights."""
    from hydra.utils import instantiate

    followed = follow_data_keys(checkpoint[CHECKPOINT_KEY], config)
    model_config = config.model.copy()
    for key in WEIGHT_SOURCES:  # the checkpoint holds the trained weights: download nothing
        if key in model_config:
            model_config[key] = None
    datamodule = instantiate(config.data)
    unused = {key: None for key in TRAINING_ONLY_TASK_KEYS if key in config.task}  # e.g. VGG19: never loaded
    module = instantiate(config.task, net=instantiate(model_config), optimizer=None, scheduler=None,
                         compile=False, **unused)
    try:
        module.on_load_checkpoint(checkpoint)  # a pruned network takes its stored shapes first
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        reason = misfit_reason(checkpoint[CHECKPOINT_KEY], config.model, followed)
        raise CheckpointError(f"The checkpoint's weights do not fit the network its config builds: "
                              f"{reason}") from err
    return datamodule, module.eval()


def style_names(checkpoint: dict[str, Any], count: int) -> list[str]:
    """The names of the styles a style network learned, as stored with the checkpoint, or `style<i>`."""
    stored = checkpoint.get(STYLES_KEY)
    return [str(name) for name in stored] if stored and len(stored) == count else [
        f"style{i}" for i in range(count)]


def class_names(checkpoint: dict[str, Any], num_classes: int) -> list[str]:
    """The class names stored with the checkpoint, or the class indices."""
    stored = checkpoint.get(CLASSES_KEY)
    return [str(name) for name in stored] if stored and len(stored) == num_classes else [
        str(i) for i in range(num_classes)]



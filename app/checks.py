"""Checks of the composed config that run before anything heavy is built, once per run: every problem
found here is a ConfigError or CheckpointError naming the key, where it was set and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from app.config_keys import check_target_keys, check_values_given
from app.overrides import where_set
from core.errors import CheckpointError, ConfigError

# The numbers users type most: (key, kind, may be null, an example, the smallest valid value). Checked
# before anything is built, so that `trainer.max_epochs=abc` or `optimizer.lr=-1` is named instead of
# failing deep inside Lightning or torch.
TYPED_KEYS = (
    ("seed", "whole", False, "42", None),
    ("trainer.max_epochs", "whole", True, "10 (-1: no limit)", -1),
    ("trainer.min_epochs", "whole", True, "1", 0),
    ("trainer.max_steps", "whole", False, "1000 (-1: no limit)", -1),
    ("trainer.num_nodes", "whole", False, "1", 1),
    ("trainer.accumulate_grad_batches", "whole", False, "4", 1),
    ("trainer.check_val_every_n_epoch", "whole", True, "1", 1),
    ("trainer.log_every_n_steps", "whole", True, "10", 1),
    ("trainer.limit_train_batches", "number", True, "0.25 (a fraction) or 10 (batches)", 0),
    ("trainer.limit_val_batches", "number", True, "0.25 (a fraction) or 10 (batches)", 0),
    ("trainer.limit_test_batches", "number", True, "0.25 (a fraction) or 10 (batches)", 0),
    ("trainer.gradient_clip_val", "number", True, "1.0", 0),
    ("data.batch_size", "whole", False, "64", 1),
    ("data.num_workers", "workers", False, "4 or auto", 0),
    ("optimizer.lr", "number", False, "1e-3", 0),
    ("optimizer.weight_decay", "number", True, "1e-4", 0),
    ("optimizer.momentum", "number", True, "0.9", 0),
)


KINDS = {"whole": "a whole number", "number": "a number", "workers": "a whole number or auto"}


ABSENT = object()


def has_kind(value: Any, kind: str) -> bool:
    """Whether `value` is a whole number ("whole"; "workers": or `auto`) or any real number ("number")."""
    if kind == "workers":
        return value == "auto" or has_kind(value, "whole")
    numeric = (int,) if kind == "whole" else (int, float)
    return isinstance(value, numeric) and not isinstance(value, bool)


def valid_devices(devices: Any) -> bool:
    """Lightning's `devices`: a count (-1: all), "auto", a list of indices, or a string of them."""
    if isinstance(devices, str):
        return devices == "auto" or re.fullmatch(r"-?\d+|(\d+,)*\d+,?", devices.strip()) is not None
    if isinstance(devices, list | ListConfig):
        return all(has_kind(index, "whole") for index in devices)
    return has_kind(devices, "whole") and devices >= -1


def check_value_types(cfg: DictConfig) -> None:
    """Name the key, where it was set and an example when a number users type is not a number, or is
    out of its range."""
    for key, kind, nullable, example, minimum in TYPED_KEYS:
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT or (value is None and nullable):
            continue
        if not has_kind(value, kind):
            raise ConfigError(f"{key}={value!r} is not {KINDS[kind]}: {where_set(key)}. "
                              f"Give {KINDS[kind]}, e.g. {key}={example}.")
        if minimum is not None and value != "auto" and value < minimum:
            raise ConfigError(f"{key}={value!r} is below {minimum}, the smallest value it takes: "
                              f"{where_set(key)}. Give e.g. {key}={example}.")
        if key.startswith("trainer.limit_") and isinstance(value, float) and value > 1 and value % 1:
            raise ConfigError(f"{key}={value!r} is neither a fraction of the batches (0 to 1) nor a number "
                              f"of batches: {where_set(key)}. Give e.g. {key}={example}.")
    devices = OmegaConf.select(cfg, "trainer.devices", default="auto")
    if not valid_devices(devices):
        where = where_set("trainer.devices")
        raise ConfigError(f"trainer.devices={devices!r} is not a device count: {where}. "
                          "Give a count (trainer.devices=2; -1 for all), a list of indices "
                          "(trainer.devices=[0,1]) or trainer.devices=auto.")


def checkpoint_to_read(cfg: DictConfig) -> Path | None:
    """The checkpoint file `ckpt_path` names: a path, or `last` when the run directory has one."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, "best", "hpc"):
        return None
    if ckpt_path == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None  # Lightning starts afresh, with a warning
    return Path(str(ckpt_path)).expanduser()


def network_and_task(config: dict[str, Any] | DictConfig) -> tuple[str, str]:
    """The network a config builds (model.name, or its class) and its task name."""
    model = config.get("model") or {}
    network = model.get("name") or str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    return str(network), str(config.get("task_name", "?"))


def check_checkpoint(cfg: DictConfig) -> None:
    """The checkpoint to resume or evaluate is readable and holds the network and task this run builds."""
    from core.contracts import CHECKPOINT_KEY
    from lightning_modules.checkpoint_io import read_checkpoint

    path = checkpoint_to_read(cfg)
    if path is None:
        return
    stored = read_checkpoint(path, mmap=True).get(CHECKPOINT_KEY)
    if not stored:
        return  # written before runs stored their config: checkpoint_loading names a misfit
    (trained_net, trained_task), (net, task) = network_and_task(stored), network_and_task(cfg)
    if (trained_net, trained_task) != (net, task):
        data = str((stored.get("data") or {}).get("_target_", "?")).rsplit(".", 1)[-1]
        raise CheckpointError(
            f"Checkpoint {path} holds network {trained_net} trained for task={trained_task} ({data}), but "
            f"this run builds {net} for task={task}. Give the checkpoint's network and task on the command "
            f"line (task={trained_task} and the model= option of {trained_net}), or a checkpoint of {net}."
        )
    if cfg.train:
        check_schedule_length(cfg, stored, path)


def check_schedule_length(cfg: DictConfig, stored: dict[str, Any], path: Path) -> None:
    """A resumed one-cycle schedule is not asked to run longer than the length it was built for, which
    OneCycleLR fixes at its first step (past it, it stops with "Tried to step N times")."""
    target = str(((stored.get("scheduler") or {}).get("scheduler") or {}).get("_target_", ""))
    if not target.endswith("OneCycleLR"):
        return
    trained = stored.get("trainer") or {}
    for key in ("max_epochs", "max_steps"):
        before, now = trained.get(key), cfg.trainer.get(key)
        if before is not None and now is not None and 0 < int(before) < int(now):
            raise ConfigError(
                f"trainer.{key}={now}: ckpt_path={path} continues a one-cycle schedule built for "
                f"trainer.{key}={before}, which cannot run longer. Resume with trainer.{key}={before}, or "
                f"start a new run (without ckpt_path) for {now}."
            )


def check_config(cfg: DictConfig) -> None:
    """Stop early, with the fix in the message, on settings that cannot work together."""
    check_value_types(cfg)

    precision = str(cfg.trainer.get("precision", "32-true"))
    optimizer = str(cfg.optimizer.get("_target_", ""))
    if optimizer.endswith("LBFGS") and precision.startswith("16"):
        raise ConfigError(
            f"optimizer=lbfgs cannot run with precision={precision}: fp16 mixed precision scales "
            "the loss with a GradScaler, which cannot step a closure-based optimizer. Use "
            "precision=32 or precision=bf16-mixed (no scaler) with L-BFGS."
        )
    strategy = cfg.trainer.get("strategy")
    strategy_name = str(strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if "FSDP" in strategy_name.upper() and runs_on_cpu(accelerator):
        raise ConfigError(
            "strategy=fsdp needs CUDA GPUs, and this run would be on the CPU. Use strategy=ddp "
            "(with trainer.devices=N) to train on several CPU processes."
        )
    if not cfg.train and cfg.ckpt_path is None:
        raise ConfigError("train=false evaluates a checkpoint: give it with ckpt_path=PATH.")
    if not cfg.train and not cfg.test:
        raise ConfigError("train=false and test=false: there is nothing to do.")
    if not uses_a_trained_model(cfg):  # predict and export rebuild the checkpoint's own network
        check_checkpoint(cfg)
    built = ("trainer", "callbacks", "logger") if uses_a_trained_model(cfg) else None  # None: all
    check_values_given(cfg, built)
    check_target_keys(cfg, built)


def uses_a_trained_model(cfg: DictConfig) -> bool:
    """Whether the run predicts, exports, serves, compresses or visualises a trained model
    (`predict.input`, `export.format`, `serve.model`, `compress.prune.ratio`, `visualize.filters`) instead of
    training."""
    return bool(any(OmegaConf.select(cfg, key) for key in ("predict.input", "export.format", "serve.model",
                                                           "visualize.filters"))
                or OmegaConf.select(cfg, "compress.prune.ratio") is not None)


def runs_on_cpu(accelerator: str) -> bool:
    """Whether `trainer.accelerator` puts the run on the CPU (imports torch only when it must ask CUDA)."""
    if accelerator != "auto":
        return accelerator == "cpu"
    import torch

    return not torch.cuda.is_available()

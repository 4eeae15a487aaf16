"""Everything a run is made of, instantiated from its config: datamodule, network, task module, loggers,
callbacks and Trainer."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from app.overrides import command_line_overrides, override_key

# What build() passes to constructors besides their config keys: every task takes these arguments,
# and the Trainer these two.
TASK_ARGUMENTS = ("net", "optimizer", "scheduler", "param_groups", "compile")
TRAINER_ARGUMENTS = ("callbacks", "logger")


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a `callbacks` or `logger` config group that has a `_target_`."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def usable_callbacks(callbacks: list[Any], has_logger: bool, progress_bar: bool) -> list[Any]:
    """Drop the callbacks that the rest of the config switched off: LR monitor, progress bar."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar

    return [
        cb for cb in callbacks
        if (has_logger or not isinstance(cb, LearningRateMonitor))
        and (progress_bar or not isinstance(cb, ProgressBar))
    ]


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Seed, then instantiate the datamodule, task (with its network) and trainer of a checked `cfg`."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    if cfg.get("channels_last"):  # NHWC weights: cuDNN then runs the convolutions NHWC (tensor cores)
        net = net.to(memory_format=torch.channels_last)
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    module = instantiate(  # param_groups as a config node: Hydra instantiates it inside the task's
        cfg.task, net=net, optimizer=instantiate(cfg.optimizer), scheduler=scheduler,  # config (an
        param_groups=cfg.param_groups, compile=cfg.compile,  # instance given here would become one)
    )
    if OmegaConf.select(cfg, "task.distill.teacher"):
        from app.teacher import load_teacher

        module.attach_teacher(load_teacher(cfg))
    loggers = instantiate_all(cfg.get("logger"))
    from callbacks.finite_loss import StopOnNonFiniteLoss
    from callbacks.run_config import RunConfigInCheckpoint
    from callbacks.stop_checkpoint import CheckpointOnSIGTERM
    from callbacks.throughput import Throughput

    callbacks = usable_callbacks(
        instantiate_all(cfg.get("callbacks")), has_logger=bool(loggers),
        progress_bar=cfg.trainer.get("enable_progress_bar", True),
    )
    callbacks += [
        RunConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)),
        StopOnNonFiniteLoss(),
        CheckpointOnSIGTERM(Path(cfg.paths.output_dir) / "checkpoints", resume_command(cfg)),
        Throughput(),
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def resume_command(cfg: DictConfig) -> str:
    """The command line that continues this run in its own directory (ckpt_path to be added)."""
    kept = [o for o in command_line_overrides() if override_key(o) not in ("ckpt_path", "hydra.run.dir")]
    return shlex.join(["python", "run.py", *kept, f"hydra.run.dir={cfg.paths.output_dir}"])

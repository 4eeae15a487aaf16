"""Fit, then test the best checkpoint; `metrics.json` and the closing summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from app.build import build
from app.console import run_summary
from app.trained_model import differing_options, misfit_reason
from core.errors import CheckpointError


@contextmanager
def checkpoint_loading(ckpt_path: Any, cfg: DictConfig) -> Iterator[None]:
    """Turn a state dict that does not fit the network into a CheckpointError naming the file and the
    model options that differ from the checkpoint's run (every checkpoint stores its run's config)."""
    try:
        yield
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        raise CheckpointError(f"Checkpoint {ckpt_path} does not fit the network this run builds:\n"
                              f"{misfit_details(ckpt_path, cfg, error)}") from error


def misfit_details(ckpt_path: Any, cfg: DictConfig, error: RuntimeError) -> str:
    """The model options of the checkpoint's run that this run changes, or the state dict's complaint."""
    from app.checks import checkpoint_to_read
    from core.contracts import CHECKPOINT_KEY
    from lightning_modules.checkpoint_io import read_checkpoint

    path = Path(str(ckpt_path)) if ckpt_path and Path(str(ckpt_path)).is_file() else checkpoint_to_read(cfg)
    stored = read_checkpoint(path, mmap=True).get(CHECKPOINT_KEY) if path and path.is_file() else None
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if stored and differing_options(stored.get("model"), model):
        return misfit_reason(stored, model, followed=[])
    lines = str(error).splitlines()
    first_lines = "\n".join(line[:300] for line in lines[:4])
    return f"{first_lines}\nUse the model= and data.num_classes that the checkpoint was trained with."


def input_shape(cfg: DictConfig) -> tuple[int, ...] | None:
    """One image at the run's input size, (1, channels, side, side), for a classify or segment run."""
    if cfg.get("task_name") not in ("classify", "segment"):
        return None
    return (1, int(cfg.data.channels), int(cfg.data.image_size), int(cfg.data.image_size))


def run_costs(cfg: DictConfig, module: Any, trainer: Any) -> dict[str, Any]:
    """What the run's model costs (`cost/...`): parameters, compute, checkpoint, memory, images/s."""
    from app.costs import file_size, network_costs, peak_memory
    from callbacks.throughput import Throughput

    costs: dict[str, Any] = {}
    shape = input_shape(cfg)
    if shape is not None:
        costs.update(network_costs(module.net, shape))
    checkpoint = trainer.checkpoint_callback
    saved = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint is not None else None
    costs.update(file_size(saved or (cfg.ckpt_path if not cfg.train else None), "cost/checkpoint_bytes"))
    costs.update(peak_memory(module.device))
    throughput = next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)
    speed = throughput.images_per_second("train") if throughput is not None else None
    if speed is not None:
        costs["cost/train_images_per_s"] = speed
    return costs


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from `cfg`, fit, test the best checkpoint; return the final metrics."""
    datamodule, module, trainer = build(cfg)
    log_hyperparameters(cfg, trainer)
    metrics = fit_and_test(cfg, datamodule, module, trainer)
    return finish(cfg, module, trainer, metrics)


def log_hyperparameters(cfg: DictConfig, trainer: Any) -> None:
    """The resolved config as every logger's hyperparameters."""
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)


def fit_and_test(cfg: DictConfig, datamodule: Any, module: Any, trainer: Any) -> dict[str, float]:
    """Fit (`train`), then test the best checkpoint, or `ckpt_path` without training (`test`)."""
    metrics: dict[str, float] = {}
    if cfg.train:
        with checkpoint_loading(cfg.ckpt_path, cfg):
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = (best or None) if cfg.train else cfg.ckpt_path
        with checkpoint_loading(ckpt_path, cfg):
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    for callback in trainer.callbacks:  # what a callback keeps out of the console's table (per class)
        metrics.update(getattr(callback, "reported_metrics", {}))
    return metrics


def finish(cfg: DictConfig, module: Any, trainer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The best monitored value and the costs added to `metrics`; metrics.json and the summary written."""
    from app.hparams import log_hyperparameters_with_metrics

    checkpoint = trainer.checkpoint_callback
    if cfg.train and checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    metrics.update(run_costs(cfg, module, trainer))
    log_hyperparameters_with_metrics(trainer.loggers, OmegaConf.to_container(cfg, resolve=True), metrics)
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        logging.getLogger("run").info(run_summary(cfg, trainer, metrics))
    return metrics

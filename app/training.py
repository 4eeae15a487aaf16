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
from core.errors import CheckpointError


@contextmanager
def checkpoint_loading(ckpt_path: Any) -> Iterator[None]:
    """Turn a state dict that does not fit the network into a CheckpointError naming the file."""
    try:
        yield
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        lines = str(error).splitlines()
        shown = "\n".join(line[:300] for line in lines[:4])
        raise CheckpointError(
            f"Checkpoint {ckpt_path} does not fit the network this run builds:\n{shown}\n"
            "Use the model= and data.num_classes that the checkpoint was trained with."
        ) from error


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from `cfg`, fit, test the best checkpoint; return the final metrics."""
    from app.hparams import log_hyperparameters_with_metrics

    datamodule, module, trainer = build(cfg)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)
    metrics: dict[str, float] = {}
    if cfg.train:
        with checkpoint_loading(cfg.ckpt_path):
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = (best or None) if cfg.train else cfg.ckpt_path
        with checkpoint_loading(ckpt_path):
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    for callback in trainer.callbacks:  # what a callback keeps out of the console's table (per class)
        metrics.update(getattr(callback, "reported_metrics", {}))
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    log_hyperparameters_with_metrics(trainer.loggers, hyperparameters, metrics)
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        logging.getLogger("run").info(run_summary(cfg, trainer, metrics))
    return metrics

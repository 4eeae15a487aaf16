"""Each run's hyperparameters next to its final metrics, in every logger (TensorBoard: the HPARAMS view)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger

# Prefixes of the final metrics compared across runs (per-class and step values are left out).
HPARAM_METRIC_PREFIXES = ("best/", "val/", "test/")


def hparam_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The final metrics worth comparing across runs, renamed `hp/<name>` to keep them apart."""
    return {f"hp/{key}": value for key, value in metrics.items() if key.startswith(HPARAM_METRIC_PREFIXES)}


def log_hyperparameters_with_metrics(
    loggers: Iterable[Logger], hyperparameters: dict[str, Any], metrics: Mapping[str, float]
) -> None:
    """Log the final metrics (`hp/...`) beside the hyperparameters each logger already holds.

    TensorBoard pairs them in one HPARAMS session, so it gets the hyperparameters again with them;
    the other loggers (CSV, MLflow, W&B) take the final metrics as ordinary metrics.
    """
    final = hparam_metrics(metrics)
    if not final:
        return
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hyperparameters, metrics=final)
        else:
            logger.log_metrics(final)
        logger.save()

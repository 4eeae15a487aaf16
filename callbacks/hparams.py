"""TensorBoard's HPARAMS view: each run's hyperparameters next to its final metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytorch_lightning.loggers import Logger

# Prefixes of the final metrics shown in the HPARAMS view (per-class and step values are left out).
HPARAM_METRIC_PREFIXES = ("best/", "val/", "test/")


def hparam_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The final metrics worth comparing across runs, renamed `hp/<name>` to keep them apart."""
    return {f"hp/{key}": value for key, value in metrics.items() if key.startswith(HPARAM_METRIC_PREFIXES)}


def log_hyperparameters_with_metrics(
    loggers: Iterable[Logger], hyperparameters: dict[str, Any], metrics: Mapping[str, float]
) -> None:
    """Log the run's hyperparameters with its final metrics (TensorBoard: the HPARAMS tab)."""
    final = hparam_metrics(metrics)
    if not final:
        return
    for logger in loggers:
        logger.log_hyperparams(hyperparameters, metrics=final)

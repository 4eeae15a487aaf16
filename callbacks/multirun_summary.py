"""At the end of a multirun: one table of every job's overrides and final metrics, and summary.csv."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def read_job(job_dir: Path) -> tuple[dict[str, str], dict[str, float]]:
    """One job's overrides (key -> value) and final metrics (empty if it did not finish)."""
    overrides = {}
    for override in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"):
        key, _, value = str(override).partition("=")
        overrides[key.lstrip("+~")] = value
    metrics_file = job_dir / "metrics.json"
    return overrides, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}


def rank_rows(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Rows sorted best first by `metric` (`mode` max or min); rows without it go last."""
    def key(row: dict[str, Any]) -> float:
        value = row.get(metric)
        if value is None or math.isnan(value):
            return math.inf
        return -value if mode == "max" else value

    return sorted(rows, key=key)


def varying_keys(dicts: list[dict[str, Any]]) -> list[str]:
    """Keys, in first-seen order, whose value differs between the dicts (or is missing from one)."""
    keys: list[str] = []
    for d in dicts:
        keys += [key for key in d if key not in keys]
    return [key for key in keys if len({str(d.get(key)) for d in dicts}) > 1]


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write `rows` to `path` as CSV with the given columns (blank where a row lacks one)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def print_summary(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print the rows as a rich table, the best job first and highlighted."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for index, row in enumerate(rows):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row.get(c, "") for c in columns)]
        table.add_row(*cells, style="bold green" if index == 0 else None)
    Console(width=max(120, 14 * len(columns))).print(table)


class MultirunSummary(Callback):
    """Hydra callback: after all jobs of a sweep, rank them by the monitored metric."""

    def __init__(self, metric_prefixes: tuple[str, ...] = ("best/", "test/"), filename: str = "summary.csv"):
        self.metric_prefixes = tuple(metric_prefixes)
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Collect each job's overrides and metrics.json, print the table and write the CSV."""
        sweep_dir = Path(config.hydra.sweep.dir)
        job_dirs = sorted(
            (d.parent.parent for d in sweep_dir.glob("*/.hydra/overrides.yaml")),
            key=lambda d: (len(d.name), d.name),
        )
        if not job_dirs:
            return
        jobs = [read_job(d) for d in job_dirs]
        override_keys = list(dict.fromkeys(k for overrides, _ in jobs for k in overrides))
        metric_keys = sorted({k for _, metrics in jobs for k in metrics})
        rows = [
            {"job": d.name, **overrides, **metrics, "status": "done" if metrics else "failed"}
            for d, (overrides, metrics) in zip(job_dirs, jobs, strict=True)
        ]
        metric = f"best/{config.monitor.metric}"
        rows = rank_rows(rows, metric, config.monitor.mode)
        write_csv(sweep_dir / self.filename, rows, ["job", "status", *override_keys, *metric_keys])
        shown = ["job", *varying_keys([o for o, _ in jobs]),
                 *(k for k in metric_keys if k.startswith(self.metric_prefixes))]
        print_summary(f"{len(rows)} jobs ranked by {metric} ({config.monitor.mode}); "
                      f"all overrides and metrics in {sweep_dir / self.filename}", rows, shown)

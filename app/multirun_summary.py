"""At the end of a multirun: one table of every job's overrides and final metrics, and summary.csv.

summary.csv is rewritten after every job, so that it is there even when a sweeper stops early
(Optuna when no trial completed). Failed jobs are rows marked `failed` with the last line of
their `error.txt`; trials stopped by Optuna's pruner are marked `pruned`. Jobs that differ only in
`data.fold` (k-fold cross-validation) are also grouped into one row per setting with the mean and
standard deviation of each metric.
The sweep exits with code 1 when any job failed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

FOLD_KEY = "data.fold"
PRUNED_ERROR = "TrialPruned"
log = logging.getLogger(__name__)


def read_job(job_dir: Path) -> tuple[dict[str, str], dict[str, float]]:
    """One job's overrides (key -> value) and final metrics (empty if it did not finish)."""
    overrides = {}
    for override in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"):
        key, _, value = str(override).partition("=")
        overrides[key.lstrip("+~")] = value
    metrics_file = job_dir / "metrics.json"
    return overrides, json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}


def job_status(job_dir: Path, metrics: dict[str, float] | bool) -> tuple[str, str]:
    """(`done`, `failed` or `pruned`, the last line of the job's error or why there is none), from the job's
    final metrics (or whether it wrote metrics.json) and its error.txt."""
    error_file = job_dir / "error.txt"
    if error_file.is_file():
        lines = [line for line in error_file.read_text().splitlines() if line.strip()]
        status = "pruned" if lines and lines[0].startswith(PRUNED_ERROR) else "failed"
        return status, lines[-1] if lines else "error.txt is empty"
    if metrics:
        return "done", ""
    return "failed", "no metrics.json and no error.txt: the job was killed or is still running"


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


def fold_groups(rows: list[dict[str, Any]], setting_keys: list[str],
                metric_keys: list[str]) -> list[dict[str, Any]]:
    """One row per setting (the values of `setting_keys`) over its fold jobs: the number of folds
    done, and `<metric>` (mean) and `<metric>_std` (sample standard deviation) of each metric."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(k, "")) for k in setting_keys), []).append(row)
    summary = []
    for setting, members in groups.items():
        done = [row for row in members if row["status"] == "done"]
        grouped: dict[str, Any] = dict(zip(setting_keys, setting, strict=True))
        grouped["folds"] = f"{len(done)}/{len(members)}"
        for key in metric_keys:
            values = [row[key] for row in done if key in row]
            if values:
                grouped[key] = statistics.fmean(values)
                grouped[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(grouped)
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write `rows` to `path` as CSV with the given columns (blank where a row lacks one)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def print_summary(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print the rows as a rich table, the best job first and highlighted, failed jobs in red.

    Every string is a rich Text, printed as given: overrides and error messages quote lists of paths
    (`[/data/a.jpg]`) and library messages that rich would otherwise read as markup.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    for index, row in enumerate(rows):
        values = (row.get(column, "") for column in columns)
        cells = [Text(f"{v:.4g}" if isinstance(v, float) else str(v)) for v in values]
        style = "red" if row.get("status") == "failed" else "bold green" if index == 0 else None
        table.add_row(*cells, style=style)
    import shutil

    terminal = shutil.get_terminal_size((80, 24)).columns
    Console(width=max(120, 14 * len(columns), terminal)).print(table)


def print_fold_summary(title: str, rows: list[dict[str, Any]], setting_keys: list[str],
                       metric_keys: list[str]) -> None:
    """Print the cross-validation rows as `mean ± std` per metric."""
    formatted = [{**row, **{k: f"{row[k]:.4g} ± {row[k + '_std']:.2g}" for k in metric_keys if k in row}}
             for row in rows]
    print_summary(title, formatted, [*setting_keys, "folds", *metric_keys])


class SweepJobs(NamedTuple):
    """Every job of a sweep: rows ranked best first, and the override and metric names they hold."""

    rows: list[dict[str, Any]]
    override_keys: list[str]
    varying_keys: list[str]
    metric_keys: list[str]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep, in job order."""
    return sorted((d.parent.parent for d in sweep_dir.glob("*/.hydra/overrides.yaml")),
                  key=lambda d: (len(d.name), d.name))


def failed_jobs(sweep_dir: Path) -> list[str]:
    """The jobs of a sweep that did not finish (no metrics.json) and were not pruned: from the files
    alone, for when the summary itself cannot be made; every job when even they cannot be read."""
    try:
        return [d.name for d in job_dirs(sweep_dir)
                if job_status(d, (d / "metrics.json").is_file())[0] == "failed"]
    except Exception:  # noqa: BLE001 - unreadable files: a sweep that cannot be checked did not succeed
        return ["(unknown: the job directories could not be read)"]


def collect_jobs(sweep_dir: Path, metric: str, mode: str) -> SweepJobs:
    """Each job directory's overrides, metrics.json and error.txt, ranked by `metric` in `mode`."""
    dirs = job_dirs(sweep_dir)
    jobs = [read_job(d) for d in dirs]
    rows = []
    for job_dir, (overrides, metrics) in zip(dirs, jobs, strict=True):
        status, error = job_status(job_dir, metrics)
        rows.append({"job": job_dir.name, **overrides, **metrics, "status": status, "error": error})
    return SweepJobs(
        rows=rank_rows(rows, metric, mode),
        override_keys=list(dict.fromkeys(k for overrides, _ in jobs for k in overrides)),
        varying_keys=varying_keys([overrides for overrides, _ in jobs]),
        metric_keys=sorted({k for _, metrics in jobs for k in metrics}),
    )


class MultirunSummary(Callback):
    """Hydra callback: summary.csv after each job of a sweep (so that it exists even when a sweeper
    stops early), and after the last one the ranked table, the k-fold table and the exit code."""

    def __init__(self, metric_prefixes: tuple[str, ...] = ("best/", "test/"), filename: str = "summary.csv",
                 folds_filename: str = "summary_folds.csv"):
        self.metric_prefixes = tuple(metric_prefixes)
        self.filename = filename
        self.folds_filename = folds_filename

    def write_summary(self, sweep_dir: Path, config: DictConfig) -> SweepJobs:
        """Collect the jobs of `sweep_dir` and write summary.csv (replaced whole, never half-written)."""
        jobs = collect_jobs(sweep_dir, f"best/{config.monitor.metric}", config.monitor.mode)
        partial = sweep_dir / f".{self.filename}.tmp"
        write_csv(partial, jobs.rows, ["job", "status", *jobs.override_keys, *jobs.metric_keys, "error"])
        partial.replace(sweep_dir / self.filename)
        return jobs

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """After each job of a multirun: summary.csv with the jobs so far."""
        if config.hydra.mode == RunMode.MULTIRUN:
            self.write_summary(Path(config.hydra.runtime.output_dir).parent, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write summary.csv, print the tables (and the k-fold CSV); exit with code 1 when a job failed.

        The exit code does not depend on the tables: if writing or printing them fails, the failure
        is logged and the sweep still exits with code 1 when a job failed.
        """
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            failed, total = self.report(sweep_dir, config)
        except Exception:  # noqa: BLE001 - whatever broke the summary, the exit code must stay true
            log.exception("The sweep summary could not be written or printed; the exit code still says "
                          "whether a job failed (each job's error.txt and metrics.json: %s).", sweep_dir)
            failed, total = failed_jobs(sweep_dir), len(job_dirs(sweep_dir))
        if failed:
            raise SystemExit(f"{len(failed)} of {total} jobs failed: job(s) {', '.join(failed)} "
                             "(see their error.txt and run.log).")

    def report(self, sweep_dir: Path, config: DictConfig) -> tuple[list[str], int]:
        """summary.csv and the printed tables; the names of the failed jobs and the number of jobs."""
        jobs = self.write_summary(sweep_dir, config)
        if not jobs.rows:
            return [], 0
        metric = f"best/{config.monitor.metric}"
        shown_metrics = [k for k in jobs.metric_keys if k.startswith(self.metric_prefixes)]
        failed = [row["job"] for row in jobs.rows if row["status"] == "failed"]
        print_summary(f"{len(jobs.rows)} jobs ranked by {metric} ({config.monitor.mode}); "
                      f"all overrides and metrics in {sweep_dir / self.filename}", jobs.rows,
                      ["job", "status", *jobs.varying_keys, *shown_metrics, *(["error"] if failed else [])])
        if FOLD_KEY in jobs.varying_keys:
            self.summarize_folds(sweep_dir, jobs.rows, [k for k in jobs.varying_keys if k != FOLD_KEY],
                                 shown_metrics, metric, config.monitor.mode)
        return failed, len(jobs.rows)

    def summarize_folds(self, sweep_dir: Path, rows: list[dict[str, Any]], setting_keys: list[str],
                        metric_keys: list[str], metric: str, mode: str) -> None:
        """The k-fold table: one row per setting, mean and standard deviation over its folds."""
        grouped = rank_rows(fold_groups(rows, setting_keys, metric_keys), metric, mode)
        columns = [*setting_keys, "folds", *(c for k in metric_keys for c in (k, f"{k}_std"))]
        write_csv(sweep_dir / self.folds_filename, grouped, columns)
        print_fold_summary(f"Cross-validation over {FOLD_KEY}: mean ± sample standard deviation "
                           f"(also in {sweep_dir / self.folds_filename})", grouped, setting_keys, metric_keys)

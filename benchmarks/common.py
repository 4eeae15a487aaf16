"""Shared measuring helpers for the benchmark scripts: medians of repeated, warmed-up runs."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the scripts import run.py and the project's packages from here
    sys.path.insert(0, str(ROOT))


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments every benchmark takes: `--quick` (a smoke run: tiny sizes, one repeat) and `--repeats`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--repeats", type=int, default=5, help="measured repetitions (median)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` unmeasured calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function, alternating them so that machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def interleaved_self_timed(fns: dict[str, Callable[[], float]], repeats: int = 5) -> dict[str, float]:
    """Median of the seconds each function returns (timing itself, warm-up excluded), alternating them."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(ts) for name, ts in times.items()}



def style_lbfgs(target: str | None = None) -> Callable[..., Any]:
    """task=style's optimizer factory from conf/optimizer/lbfgs.yaml; `target` swaps in another class."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(ROOT / "conf" / "optimizer" / "lbfgs.yaml")
    return instantiate(config, **({"_target_": target} if target else {}))

def print_table(title: str, rows: list[dict[str, object]]) -> None:
    """Print result rows (dicts with the same keys) as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=200).print(table)  # whole figures, also when the output is a file


def machine_description() -> str:
    """CPU count and model, and the GPU's name when there is one."""
    import os
    import platform

    import torch

    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text

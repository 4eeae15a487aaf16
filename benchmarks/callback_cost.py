"""What the insight callbacks cost: seconds of a training epoch (its training batches, then validation with
every callback's epoch-end work) with one callback at its default settings against the run without it.

The callbacks: the classification report (on by default; its precision/recall/F1 states updated on
every validation batch and reduced at the epoch's end), feature maps of two layers, and Grad-CAM. The
baseline run has none of them. Each run trains `--epochs` epochs built by run.py's `app.build` (Trainer,
default callbacks, TensorBoard logger; no progress bar) and times each epoch after the first (the first
finds Grad-CAM's default layer and warms everything up); the runs alternate, `--repeats` times, and each
figure is the median over all timed epochs.

Two measures of the cost: the ratio of the epoch medians with and without the callback (separate runs:
on a busy machine their noise can exceed the cost), and the seconds spent inside the callback's own
hooks in each epoch, as a share of the rest of that same epoch (one run: load slows both alike).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from common import machine_description, parse_args, print_table

COMMON = ["~callbacks.rich_progress_bar", "~callbacks.rich_model_summary",
          "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
WITHOUT_REPORT = ["~callbacks.classification_report"]
CASES = {
    "small CNN, digits (the default run)": {
        "overrides": ["data=digits", "model=mnist_cnn"],
        "layers": "[features.0,features.3]",
    },
    "ResNet-18, 32x32 synthetic CIFAR-10": {
        "overrides": ["data=cifar10", "model=resnet18", "data.val_size=285", "data.root={data_dir}",
                      "data.verify_checksums=false", "trainer.limit_train_batches=20"],
        "layers": "[model.layer1,model.layer4]",
    },
}


def sides_of(layers: str) -> dict[str, list[str]]:
    """The baseline's overrides (no insight callback) and each callback's (it alone)."""
    return {
        "baseline": WITHOUT_REPORT,
        "classification report": [],
        "feature maps": [*WITHOUT_REPORT, f"callbacks.feature_maps.layers={layers}"],
        "Grad-CAM": [*WITHOUT_REPORT, "callbacks.cam.enabled=true"],
    }


INSIGHT_CALLBACKS = ("ClassificationReportLogger", "FeatureMaps", "GradCAMFigure")


class HookTimer:
    """Seconds spent inside the hooks that a callback overrides, summed (its instance's hooks wrapped)."""

    def __init__(self, callback: pl.Callback) -> None:
        self.seconds = 0.0
        for name in dir(pl.Callback):
            if (name.startswith("on_") or name in ("setup", "teardown")) and \
                    getattr(type(callback), name) is not getattr(pl.Callback, name):
                setattr(callback, name, self.timed(getattr(callback, name)))

    def timed(self, hook: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return run


class EpochTimer(pl.Callback):
    """Seconds of each training epoch (validation and its callbacks included), and of the insight
    callback's hooks within it; the first epoch left out."""

    def __init__(self, hooks: HookTimer | None) -> None:
        self.hooks = hooks
        self.start = self.hooks_start = 0.0
        self.seconds: list[float] = []
        self.in_hooks: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.hooks_start = self.hooks.seconds if self.hooks else 0.0
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.seconds.append(time.perf_counter() - self.start)
            self.in_hooks.append(self.hooks.seconds - self.hooks_start if self.hooks else 0.0)


def epoch_seconds(overrides: list[str], epochs: int, output_dir: Path) -> tuple[list[float], list[float]]:
    """The timed epochs of one run of run.py's config for `overrides`, and the seconds of each spent in
    the insight callback's hooks (zeros without one)."""
    from app.build import build
    from app.compose import compose_config

    cfg = compose_config([*COMMON, *overrides, f"trainer.max_epochs={epochs}", "trainer.max_steps=-1",
                          "test=false"], output_dir)
    datamodule, module, trainer = build(cfg)
    active = [cb for cb in trainer.callbacks if type(cb).__name__ in INSIGHT_CALLBACKS
              and getattr(cb, "active", True)]
    assert len(active) <= 1, f"one insight callback at a time, not {active}"
    timer = EpochTimer(HookTimer(active[0]) if active else None)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds, timer.in_hooks


def add_options(parser: argparse.ArgumentParser) -> None:
    """Epochs per run and the cases."""
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--case", choices=list(CASES), action="append", help="only this case (repeatable)")


def measure(name: str, case: dict[str, Any], args: argparse.Namespace, work: Path, extra: list[str]
            ) -> list[dict[str, Any]]:
    """Median epoch seconds of the baseline and of each callback, runs alternating."""
    overrides = [o.format(data_dir=work / "data") for o in case["overrides"]] + extra
    sides = sides_of(case["layers"])
    times: dict[str, list[float]] = {side: [] for side in sides}
    shares: dict[str, list[float]] = {side: [] for side in sides}  # in the hooks / the rest of the epoch
    hooks: dict[str, list[float]] = {side: [] for side in sides}
    runs = 0
    for _ in range(args.repeats):
        for side, options in sides.items():
            runs += 1
            seconds, in_hooks = epoch_seconds([*overrides, *options], args.epochs, work / f"run{runs}")
            times[side] += seconds
            hooks[side] += in_hooks
            shares[side] += [inside / (total - inside)
                             for total, inside in zip(seconds, in_hooks, strict=True)]
    base = statistics.median(times["baseline"])
    rows = []
    for side in list(sides)[1:]:
        seconds, share = statistics.median(times[side]), statistics.median(shares[side])
        rows.append({"case": name, "callback": side, "epoch s (without)": base, "epoch s (with)": seconds,
                     "ratio": seconds / base, "cost %": 100 * (seconds / base - 1),
                     "in its hooks s": statistics.median(hooks[side]),
                     "hooks / rest of epoch %": 100 * share})
        print(f"ratio with/without [{name}, {side}]: {seconds / base:.3f} "
              f"(cost {100 * (seconds / base - 1):+.1f}% of an epoch; in its hooks {100 * share:.1f}% of the "
              "rest of the same epoch; target < 5%)")
    return rows


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other jobs on the machine), where the OS tells them."""
    import os

    return " ".join(f"{load:.1f}" for load in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def main() -> None:
    """Measure every case and print one ratio line per callback and the table."""
    import torch

    args = parse_args(__doc__.splitlines()[0], add_options)
    cases = {name: CASES[name] for name in args.case or CASES}
    extra: list[str] = []
    if args.quick:
        args.epochs, args.repeats = 2, 1
        cases = {name: cases[name] for name in list(cases)[:1]}
        extra = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "data.batch_size=8"]
    print(f"Machine: {machine_description()}; torch threads: {torch.get_num_threads()}; "
          f"load average at the start: {load_average()}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from datamodules.synthetic import write_cifar10

        if any("cifar10" in " ".join(case["overrides"]) for case in cases.values()):
            write_cifar10(work / "data", per_batch=1140, n_test=20)
        for name, case in cases.items():
            rows += measure(name, case, args, work, extra)
    print(f"Load average at the end: {load_average()}")
    print_table(f"Epoch seconds with each callback against without, {args.epochs - 1} timed epochs per run, "
                f"{args.repeats} runs each", rows)


if __name__ == "__main__":
    main()

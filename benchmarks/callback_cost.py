"""What the insight callbacks cost: seconds of a training epoch (its training batches, then validation with
every callback's epoch-end work) with one callback at its default settings against the run without it.

The callbacks: the classification report (on by default; its precision/recall/F1 states updated on
every validation batch and reduced at the epoch's end), feature maps of two layers, and Grad-CAM. The
baseline run has none of them. Each run trains `--epochs` epochs built by run.py's `app.build` (Trainer,
default callbacks, TensorBoard logger; no progress bar) and times each epoch after the first (the first
finds Grad-CAM's default layer and warms everything up); the runs alternate, `--repeats` times, and each
figure is the median over all timed epochs.
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


class EpochTimer(pl.Callback):
    """Seconds of each training epoch (validation and its callbacks included), the first one left out."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.seconds.append(time.perf_counter() - self.start)


def epoch_seconds(overrides: list[str], epochs: int, output_dir: Path) -> list[float]:
    """The timed epochs of one run of run.py's config for `overrides`."""
    from app.build import build
    from app.compose import compose_config

    cfg = compose_config([*COMMON, *overrides, f"trainer.max_epochs={epochs}", "trainer.max_steps=-1",
                          "test=false"], output_dir)
    datamodule, module, trainer = build(cfg)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds


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
    runs = 0
    for _ in range(args.repeats):
        for side, options in sides.items():
            runs += 1
            times[side] += epoch_seconds([*overrides, *options], args.epochs, work / f"run{runs}")
    base = statistics.median(times["baseline"])
    rows = []
    for side in list(sides)[1:]:
        seconds = statistics.median(times[side])
        rows.append({"case": name, "callback": side, "epoch s (without)": base, "epoch s (with)": seconds,
                     "ratio": seconds / base, "cost %": 100 * (seconds / base - 1)})
        print(f"ratio with/without [{name}, {side}]: {seconds / base:.3f} "
              f"(cost {100 * (seconds / base - 1):+.1f}% of an epoch; target < 5%)")
    return rows


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
    print(f"Machine: {machine_description()}; torch threads: {torch.get_num_threads()}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from datamodules.synthetic import write_cifar10

        if any("cifar10" in " ".join(case["overrides"]) for case in cases.values()):
            write_cifar10(work / "data", per_batch=1140, n_test=20)
        for name, case in cases.items():
            rows += measure(name, case, args, work, extra)
    print_table(f"Epoch seconds with each callback against without, {args.epochs - 1} timed epochs per run, "
                f"{args.repeats} runs each", rows)


if __name__ == "__main__":
    main()

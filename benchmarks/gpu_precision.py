"""Training throughput of a classification run by precision, channels_last and torch.compile (CUDA).

    python benchmarks/gpu_precision.py            # resnet18 on 224x224 digits, every combination
    python benchmarks/gpu_precision.py --quick    # tiny smoke run (also on CPU)

Each combination is a real run.py run (its composed config, run.train) with a timing callback;
the first batches (cuDNN autotuning, compilation) are not measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import machine_description, parse_args, print_table  # also puts the project on sys.path

RESULT_FILE = "throughput.json"


class ThroughputTimer(pl.Callback):
    """Times training batches after `warmup` of them; writes images/s to the run directory."""

    def __init__(self, output_dir: str, warmup: int) -> None:
        self.output_dir = Path(output_dir)
        self.warmup = warmup
        self.seconds: list[float] = []
        self.images = 0
        self._start = 0.0

    def _synchronize(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._synchronize(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._synchronize(pl_module)
        if trainer.global_step > self.warmup:
            self.seconds.append(time.perf_counter() - self._start)
            self.images += batch[0].shape[0]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = {"images_per_s": self.images / sum(self.seconds), "steps": len(self.seconds)}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / RESULT_FILE).write_text(json.dumps(result))


def throughput(overrides: list[str], output_dir: Path, warmup: int) -> dict[str, Any]:
    """Train through run.py with `overrides` and return the measured throughput."""
    import run
    from tests.conftest import compose_config

    timer = [
        "+callbacks.throughput._target_=benchmarks.gpu_precision.ThroughputTimer",
        f"+callbacks.throughput.output_dir={output_dir}",
        f"+callbacks.throughput.warmup={warmup}",
    ]
    run.train(compose_config([*overrides, *timer], output_dir))
    return json.loads((output_dir / RESULT_FILE).read_text())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, image size, batch size and measured steps."""
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="measured training steps per combination")
    parser.add_argument("--warmup", type=int, default=15, help="unmeasured first steps (compilation)")


def main() -> None:
    """Measure every combination (a CPU smoke subset with --quick) and print a table."""
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("skipped: no CUDA device")
        return
    if args.quick:
        args.model, args.image_size, args.batch_size, args.steps, args.warmup = "mnist_cnn", 28, 16, 2, 1
    precisions = ["32", "16-mixed", "bf16-mixed"] if cuda else ["32"]
    compiles = [False, True] if cuda else [False]
    base = [
        f"model={args.model}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        f"data.pin_memory={cuda}", f"trainer.accelerator={'gpu' if cuda else 'cpu'}",
        "trainer.max_epochs=-1", f"trainer.max_steps={args.warmup + args.steps + 1}",
        "trainer.limit_val_batches=0", "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false", "trainer.enable_progress_bar=false",
        "trainer.benchmark=true", "callbacks=none", "logger=none", "test=false",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (precision, channels_last, compile_) in enumerate(
            itertools.product(precisions, [False, True], compiles)
        ):
            overrides = [*base, f"precision='{precision}'", f"channels_last={channels_last}",
                         f"compile={compile_}"]
            result = throughput(overrides, Path(tmp) / str(index), args.warmup)
            rows.append({"precision": precision, "channels_last": channels_last, "compile": compile_,
                         "images/s": result["images_per_s"], "steps": result["steps"]})
    reference = rows[0]["images/s"]
    for row in rows:
        row["speed-up"] = row["images/s"] / reference
    print_table(f"Training throughput: {args.model}, {args.image_size}px, batch {args.batch_size} "
                f"({machine_description()})", rows)


if __name__ == "__main__":
    main()

"""GPU training throughput, run.py against a plain loop: on synthetic pinned batches and a real JPEG loader.

    python benchmarks/gpu_precision.py          # ResNet-50, 224 px, batch 128, bf16-mixed + channels_last
    python benchmarks/gpu_precision.py --grid   # synthetic data: every precision x channels_last x compile
    python benchmarks/gpu_precision.py --quick  # tiny smoke run (also on the CPU)

Rows (each: run.py's Trainer as `trainer=gpu_fast` builds it, against a hand-written loop with the
same autocast, memory format and torch.compile, both from benchmarks/training.py):
- synthetic: `--batches` distinct batches of random images already in pinned memory, served as whole
  batches (no workers, no collation), so nothing but the training step and the copy to the GPU is
  timed; eager and compiled. This is the framework-against-plain ratio.
- JPEG loader: MIT67's datamodule on a generated folder of realistic JPEGs (300-800 px), workers
  `data.num_workers=auto`, decoding on the CPU (`data.decode=cpu`) and on the GPU (`data.decode=gpu`),
  eager: what the whole input pipeline sustains.

Both sides of a row alternate `--repeats` times and the medians are printed. Each measurement starts
from `torch._dynamo.reset()` (a compiled side compiles its own network) and times steps `--warmup`
to `--warmup + --steps` only: the first steps, where cuDNN (`trainer.benchmark=true`) times its
algorithms and torch.compile compiles, are outside the window, and every batch has the same shape
(the last partial batch is dropped), so nothing re-tunes or recompiles inside it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import interleaved_self_timed, machine_description, parse_args, print_table
from torch.utils.data import DataLoader, Dataset

from benchmarks.training import framework_seconds_per_step, plain_seconds_per_step

# Epoch-end work that short epochs would make look per-step: checkpoint files (no validation metric
# to choose them by) and terminal drawing.
ROWS = {  # name: (kind, options)
    "synthetic": ("synthetic", {}),
    "synthetic-compiled": ("synthetic", {"compile_": True}),
    "jpeg-cpu": ("jpeg", {"decode": "cpu"}),
    "jpeg-gpu": ("jpeg", {"decode": "gpu"}),
}
LEFT_OUT = ["~callbacks.model_checkpoint", "~callbacks.last_checkpoint", "~callbacks.early_stopping",
            "~callbacks.rich_progress_bar", "~callbacks.rich_model_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, sizes, measured steps and which rows."""
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="measured training steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured first steps (cuDNN, compilation)")
    parser.add_argument("--batches", type=int, default=8, help="distinct synthetic batches")
    parser.add_argument("--images", type=int, default=1536, help="generated JPEGs for the loader rows")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--grid", action="store_true",
                        help="synthetic data: every precision (32, 16-mixed, bf16) x channels_last x compile")


class WholeBatches(Dataset):
    """`length` items cycling over prepared (images, labels) batches: each item is a whole batch."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[index % len(self.batches)]


class PinnedBatches(pl.LightningDataModule):
    """Random normalised images and labels, pinned on CUDA machines: one epoch of `length` batches."""

    def __init__(self, count: int, batch_size: int, image_size: int, num_classes: int, length: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        pin = torch.cuda.is_available()
        self.batches = [
            (torch.randn(batch_size, 3, image_size, image_size, generator=generator),
             torch.randint(0, num_classes, (batch_size,), generator=generator))
            for _ in range(count)
        ]
        if pin:
            self.batches = [(images.pin_memory(), labels.pin_memory()) for images, labels in self.batches]
        self.length = length

    def train_dataloader(self) -> DataLoader:
        return DataLoader(WholeBatches(self.batches, self.length), batch_size=None, shuffle=False)


def base_overrides(args: argparse.Namespace, cuda: bool) -> list[str]:
    """The run's config: trainer=gpu_fast (or the CPU for a smoke run), a fixed number of steps."""
    trainer = ["trainer=gpu_fast"] if cuda else ["trainer.accelerator=cpu"]
    return [
        *trainer, f"model={args.model}", f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}", "data.drop_last=true", "trainer.max_epochs=-1",
        f"trainer.max_steps={args.warmup + args.steps}", "trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "test=false",
        "print_config=none", *LEFT_OUT,
    ]


def measure(overrides: list[str], args: argparse.Namespace, work: Path,
            datamodule: Any = None) -> dict[str, float]:
    """Median images/s of both sides over `args.repeats` alternating measurements."""
    from app.compose import compose_config

    runs = itertools.count()

    def side(seconds_per_step: Any) -> Any:
        def timed() -> float:
            torch._dynamo.reset()  # each measurement compiles its own network
            cfg = compose_config(overrides, work / f"run{next(runs)}")
            return seconds_per_step(cfg, args.warmup, args.steps, datamodule)
        return timed

    seconds = interleaved_self_timed({"plain": side(plain_seconds_per_step),
                                      "run.py": side(framework_seconds_per_step)}, args.repeats)
    return {name: args.batch_size / s for name, s in seconds.items()}


def synthetic_row(args: argparse.Namespace, cuda: bool, work: Path, precision: str = "bf16-mixed",
                  channels_last: bool = True, compile_: bool = False) -> dict[str, Any]:
    """run.py against the plain loop on pinned synthetic batches."""
    data = PinnedBatches(args.batches, args.batch_size, args.image_size, 1000, args.warmup + args.steps + 1)
    overrides = [*base_overrides(args, cuda), "data=image_folder", f"data.root={work}",
                 "data.num_classes=1000", f"precision='{precision}'", f"channels_last={channels_last}",
                 f"compile={compile_}"]
    rates = measure(overrides, args, work, data)
    return {"data": "synthetic, pinned", "precision": precision, "channels_last": channels_last,
            "compile": compile_, **row_rates(rates)}


def jpeg_row(args: argparse.Namespace, cuda: bool, work: Path, root: Path, classes: int,
             decode: str) -> dict[str, Any]:
    """run.py against the plain loop on MIT67's datamodule over generated JPEGs."""
    overrides = [*base_overrides(args, cuda), "data=mit67", f"data.root={root}",
                 f"data.num_classes={classes}", f"data.resize_size={args.image_size * 8 // 7}",
                 "data.num_workers=auto", f"data.decode={decode}", "data.val_fraction=0.02"]
    if not cuda:
        overrides.append("precision='32'")
    rates = measure(overrides, args, work)
    return {"data": f"JPEG loader, {decode} decode", "precision": "bf16-mixed" if cuda else "32",
            "channels_last": cuda, "compile": False, **row_rates(rates)}


def row_rates(rates: dict[str, float]) -> dict[str, float]:
    return {"run.py images/s": rates["run.py"], "plain images/s": rates["plain"],
            "ratio": rates["run.py"] / rates["plain"]}


def rows_to_measure(args: argparse.Namespace, cuda: bool) -> list[tuple[str, dict[str, Any]]]:
    """(kind, options) of every row this invocation measures."""
    if args.grid and cuda:
        combinations = itertools.product(["32", "16-mixed", "bf16-mixed"], [False, True], [False, True])
        return [("synthetic", {"precision": p, "channels_last": c, "compile_": k})
                for p, c, k in combinations]
    if not cuda:  # a CPU smoke run: float32, no compilation, no GPU decoding
        cpu_rows = {"synthetic": ("synthetic", {"precision": "32", "channels_last": False}),
                    "jpeg-cpu": ("jpeg", {"decode": "cpu"})}
        return [cpu_rows[name] for name in args.rows if name in cpu_rows]
    return [ROWS[name] for name in args.rows]


def main() -> None:
    """Measure every row (a CPU smoke run with --quick) and print the table and the ratios."""
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("skipped: no CUDA device")
        return
    if args.quick:
        args.model, args.image_size, args.batch_size, args.steps, args.warmup = "resnet18", 32, 4, 2, 1
        args.batches, args.images, args.repeats = 2, 48, 1
    from input_pipeline import write_mit67_jpegs

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root, classes = None, 8
        for kind, options in rows_to_measure(args, cuda):
            if kind == "synthetic":
                rows.append(synthetic_row(args, cuda, work, **options))
            else:
                root = root or write_mit67_jpegs(work / "mit67", args.images, classes)
                rows.append(jpeg_row(args, cuda, work, root, classes, **options))
            row = rows[-1]
            what = f"{row['data']}, {row['precision']}, channels_last={row['channels_last']}"
            print(f"ratio run.py/plain [{what}, compile={row['compile']}]: {row['ratio']:.3f} "
                  f"(target >= 0.95; run.py {row['run.py images/s']:.4g} images/s, plain loop "
                  f"{row['plain images/s']:.4g})", flush=True)
    if not rows:
        print("ratio run.py/plain: no row to measure without CUDA (torch.compile and GPU decoding rows)")
        return
    print_table(f"Training throughput: {args.model}, {args.image_size} px, batch {args.batch_size}, "
                f"{args.steps} steps after {args.warmup}, median of {args.repeats} ({machine_description()})",
                rows)
    print(f"median ratio run.py/plain over the rows: {statistics.median(r['ratio'] for r in rows):.3f}")


if __name__ == "__main__":
    main()

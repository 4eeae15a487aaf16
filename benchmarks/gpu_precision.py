"""GPU training throughput by precision, channels_last and torch.compile: run.py against a plain loop.

    python benchmarks/gpu_precision.py          # ResNet-50, 224 px, bf16-mixed, channels_last, compile off/on
    python benchmarks/gpu_precision.py --grid   # every precision x channels_last x compile combination
    python benchmarks/gpu_precision.py --quick  # tiny smoke run (also on the CPU)

For each combination both sides train the same network on the same batches (scikit-learn's digits
upsampled to --image-size, in memory; the smaller last batch dropped, so no step recompiles):
run.py's Trainer as its config builds it (TensorBoard logger, torchmetrics; no checkpoint files or
progress bar), and a hand-written loop with the same autocast, GradScaler, memory format and
torch.compile. The first --warmup steps (cuDNN autotuning, compilation) are not timed.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch
from common import machine_description, parse_args, print_table

from benchmarks.training import framework_seconds_per_step, plain_seconds_per_step

# Epoch-end work that a 9-step epoch of digits would make look per-step: checkpoint files
# (the run measures no validation metric to stop early on), and terminal drawing.
LEFT_OUT = ["~callbacks.model_checkpoint", "~callbacks.last_checkpoint", "~callbacks.early_stopping",
            "~callbacks.rich_progress_bar", "~callbacks.rich_model_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, image size, batch size, measured steps and which combinations."""
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25, help="measured training steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured first steps (compilation)")
    parser.add_argument("--grid", action="store_true",
                        help="every precision (32, 16-mixed, bf16-mixed) x channels_last x compile")


def combinations(args: argparse.Namespace, cuda: bool) -> list[tuple[str, bool, bool]]:
    """(precision, channels_last, compile) triples to measure."""
    if not cuda:
        return [("32", False, False)]
    if args.grid:
        return list(itertools.product(["32", "16-mixed", "bf16-mixed"], [False, True], [False, True]))
    return [("bf16-mixed", True, False), ("bf16-mixed", True, True)]


def main() -> None:
    """Measure both sides for every combination (a CPU smoke run with --quick) and print a table."""
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("skipped: no CUDA device")
        return
    if args.quick:
        args.model, args.image_size, args.batch_size, args.steps, args.warmup = "mnist_cnn", 28, 16, 2, 1
    from app.compose import compose_config

    base = [
        f"model={args.model}", f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
        "data.drop_last=true", f"data.pin_memory={cuda}", f"trainer.accelerator={'gpu' if cuda else 'cpu'}",
        "trainer.max_epochs=-1", f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.benchmark=true", "test=false", *LEFT_OUT,
    ]
    sides = {"run.py": framework_seconds_per_step, "plain": plain_seconds_per_step}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (precision, channels_last, compile_) in enumerate(combinations(args, cuda)):
            overrides = [*base, f"precision='{precision}'", f"channels_last={channels_last}",
                         f"compile={compile_}"]
            rates = {}
            for side, seconds_per_step in sides.items():
                torch._dynamo.reset()  # each side compiles its own network from scratch
                cfg = compose_config(overrides, Path(tmp) / f"{index}-{side}")
                rates[side] = args.batch_size / seconds_per_step(cfg, args.warmup, args.steps)
            rows.append({"precision": precision, "channels_last": channels_last, "compile": compile_,
                         "run.py images/s": rates["run.py"], "plain images/s": rates["plain"],
                         "ratio": rates["run.py"] / rates["plain"]})
            print(f"ratio run.py/plain [{precision}, channels_last={channels_last}, compile={compile_}]: "
                  f"{rows[-1]['ratio']:.3f}")
    print_table(f"Training throughput: {args.model}, {args.image_size}px, batch {args.batch_size}, "
                f"{args.steps} steps after {args.warmup} ({machine_description()})", rows)


if __name__ == "__main__":
    main()

"""Framework overhead: training images/s of a run.py classification run against a plain PyTorch loop.

Both sides train the same network on the same DataLoader with the same optimizer and batch size,
in the same process and torch thread count. The framework side is run.py's own config (Lightning
Trainer, default callbacks, TensorBoard logger, torchmetrics) built by `run.build`; the plain side
is the textbook zero_grad / forward / cross-entropy / backward / step loop. Each side times
`--steps` steps after `--warmup` unmeasured ones; repeats alternate the two sides.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import interleaved_self_timed, machine_description, parse_args, print_table

from benchmarks.training import framework_seconds_per_step, plain_seconds_per_step

# Left out of the framework side, and why: a run whose output goes to a file or pipe does not
# want a progress bar redrawn at every step.
DISABLED = {"~callbacks.rich_progress_bar": "rich progress bar (output is not a terminal)"}

CASES = {
    # the workload of the earlier figures: python run.py's recipe before it moved to 16 px, shifts,
    # AdamW with a one-cycle schedule and label smoothing
    "small CNN, digits": ["data=digits", "model=mnist_cnn", "data.image_size=28", "data.translate=0",
                          "optimizer=adam", "optimizer.lr=1e-3", "scheduler=none", "task.label_smoothing=0"],
    "ResNet-18, 32x32 synthetic": ["data=cifar10", "model=resnet18", "data.val_size=100",
                                   "data.root={data_dir}", "data.verify_checksums=false"],
}


def add_options(parser: argparse.ArgumentParser) -> None:
    """Steps per measurement and warm-up steps."""
    parser.add_argument("--steps", type=int, default=16, help="measured training steps")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first steps")
    parser.add_argument("--case", choices=list(CASES), action="append",
                        help="measure only this case (repeatable); default: all")


def compose(overrides: list[str], output_dir: Path) -> Any:
    """run.py's config for `overrides` on the CPU, writing under `output_dir`."""
    from app.compose import compose_config

    return compose_config(
        ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *DISABLED, *overrides],
        output_dir,
    )


def measure(name: str, overrides: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Images/s of both sides for one case, and their ratio."""
    runs = iter(range(10**6))

    def framework() -> float:
        stop = f"trainer.max_steps={args.warmup + args.steps}"
        cfg = compose([*overrides, stop], work / f"run{next(runs)}")
        return framework_seconds_per_step(cfg, args.warmup, args.steps)

    def plain() -> float:
        return plain_seconds_per_step(compose(overrides, work / "plain"), args.warmup, args.steps)

    batch_size = compose(overrides, work / "plain").data.batch_size
    seconds = interleaved_self_timed({"plain": plain, "framework": framework}, args.repeats)
    rates = {side: batch_size / s for side, s in seconds.items()}
    return {
        "case": name, "batch": batch_size, "plain img/s": rates["plain"],
        "framework img/s": rates["framework"], "ratio": rates["framework"] / rates["plain"],
    }


def main() -> None:
    """Measure every case and print the table and one ratio line per case."""
    import torch

    args = parse_args(__doc__.splitlines()[0], add_options)
    extra = []
    cases = {name: CASES[name] for name in args.case or CASES}
    if args.quick:
        args.steps, args.warmup, args.repeats = 2, 1, 1
        extra = ["data.batch_size=16"]
        cases = {name: cases[name] for name in list(cases)[:1]}
    threads = torch.get_num_threads()
    print(f"Machine: {machine_description()}; torch threads (both sides): {threads}")
    print("Disabled in the framework run: " + "; ".join(DISABLED.values()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from datamodules.synthetic import write_cifar10

        write_cifar10(work / "data", per_batch=80 if args.quick else 600, n_test=20)
        for name, overrides in cases.items():
            overrides = [o.format(data_dir=work / "data") for o in overrides] + extra
            rows.append(measure(name, overrides, args, work))
            print(f"ratio framework/plain [{name}]: {rows[-1]['ratio']:.3f} (target >= 0.95)")
    print_table(f"Training throughput, {args.steps} steps after {args.warmup} warm-up, "
                f"median of {args.repeats}", rows)


if __name__ == "__main__":
    main()

"""Host-device synchronisations per step: what makes a GPU wait, counted on any machine.

    python benchmarks/host_syncs.py [--quick] [--device cpu|cuda] [--explain]

On a CUDA device some operations make the host wait until the queued work is done: reading a
value (`.item()`, `float()`, `bool()`), boolean-mask indexing and `nonzero` (the result's size),
`unique`, `bincount` (it reads the maximum), blocking copies to the host. Each wait leaves the GPU
idle while the host then launches the next kernels, which is what costs when steps are short.

With `--device cpu` (the default) `callbacks.host_syncs.SyncCounter` counts them on the CPU: it
follows which tensors would live on the GPU (the model's, the batch's and everything computed from
them) and counts the operations above on those, so the figures need no GPU. With `--device cuda` the
same cases train on the GPU and torch's own `torch.cuda.set_sync_debug_mode("warn")` counts. Counted:

- task=classify as `python run.py` runs it (default callbacks, TensorBoard, rich progress bar), per
  training step: every callback, the logger, the progress bar, the optimizer and the loading of the
  next batch fall inside the window (one step's start to the next's, within one epoch, after warm-up);
  then with the TQDM bar instead, and with the weights' EMA (`task.ema.decay`);
- task=segment, per training step, with the training metrics on every batch, every 10th, or off
  (`task.train_metrics_every_n_batches`; the metrics count the confusion with `scatter_add_`, where
  torchmetrics' masking of the ignore index and `bincount` would wait);
- task=style, per L-BFGS function evaluation: torch.optim.LBFGS against lightning_modules.lbfgs.LBFGS.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import machine_description, parse_args, print_table, style_lbfgs

from callbacks.host_syncs import CountHostSyncs, SyncCounter
from core.host_copy import HostCopy

CLASSIFY = {
    "python run.py (rich progress bar)": [],
    "TQDM progress bar": ["~callbacks.rich_progress_bar"],
    "EMA of the weights": ["task.ema.decay=0.999"],
}
SEGMENT = {"train metrics every batch": 1, "train metrics every 10th batch": 10, "train metrics off": 0}


def add_options(parser: argparse.ArgumentParser) -> None:
    """Evaluations and steps counted, the device, and where each sync comes from."""
    parser.add_argument("--evaluations", type=int, default=300, help="L-BFGS evaluations of task=style")
    parser.add_argument("--steps", type=int, default=15, help="counted training steps (within one epoch)")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted first training steps")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: count on the CPU what CUDA would wait for; cuda: torch's sync debug mode")
    parser.add_argument("--explain", action="store_true", help="print each counted operation and its caller")


def training_syncs_per_step(overrides: list[str], args: argparse.Namespace, work: Path) -> float:
    """Synchronisations per steady-state training step of run.py's Trainer for `overrides`."""
    from app import build as app_build
    from app.compose import compose_config

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    base = [*overrides, f"trainer.accelerator={accelerator}", "test=false", "print_config=none"]
    from hydra.utils import instantiate

    datamodule = instantiate(compose_config(base, work / "probe").data)  # to keep the window in one epoch
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    steps = min(args.steps, batches - args.warmup - 1)
    cfg = compose_config([*base, f"trainer.max_steps={args.warmup + steps + 1}"], work / "run")
    datamodule, module, trainer = app_build.build(cfg)
    counter = SyncCounter(explain=args.explain) if args.device == "cpu" else None
    counting = CountHostSyncs(args.warmup, steps, counter)
    trainer.callbacks.insert(0, counting)
    if counter is None:
        trainer.fit(module, datamodule=datamodule)
    else:
        with counter:
            trainer.fit(module, datamodule=datamodule)
        explain(counter, steps)
    assert counting.counted_steps == steps, (counting.counted_steps, steps)
    return counting.per_step


def explain(counter: SyncCounter, steps: int) -> None:
    """With --explain: each counted operation, its caller and its count per step."""
    for where, count in counter.where.most_common():
        print(f"  {count / steps:.2f}/step  {where}")


def style_syncs_per_evaluation(optimizer: str, evaluations: int, size: int) -> float:
    """Synchronisations per evaluation of task=style's `stylize`, with `optimizer` as the L-BFGS class."""
    from lightning_modules.nets.vgg_features import VGGFeatures
    from lightning_modules.style_transfer import StyleTransferModule

    torch.manual_seed(0)
    module = StyleTransferModule(VGGFeatures(weights=None), style_lbfgs(optimizer),
                                 ["relu4_2"], {"relu1_1": 0.5, "relu3_1": 0.5}, evaluations=evaluations,
                                 progress_every=0)
    images = torch.rand(2, 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    sample = {"name": "noise", "content": images[0], "styles": [images[1]], "style_names": ["noise"],
              "style_weights": torch.tensor([1.0])}
    with SyncCounter() as counter:
        counter.on_device(module, sample)
        counter.active = True
        history = module.stylize(sample)["history"]
    return counter.count / len(history)


def training_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per classify and segment case."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, overrides) in enumerate(CLASSIFY.items()):
            syncs = training_syncs_per_step(overrides, args, Path(tmp) / f"classify{index}")
            rows.append({"case": "task=classify, per training step", "variant": label, "syncs": syncs})
        segment = ["task=segment", "model.base_width=8", "data.image_size=64", "data.batch_size=4",
                   "data.train_scenes=128", "data.val_scenes=4", "data.test_scenes=4"]
        for label, every in SEGMENT.items():
            overrides = [*segment, f"task.train_metrics_every_n_batches={every}"]
            syncs = training_syncs_per_step(overrides, args, Path(tmp) / f"segment{every}")
            rows.append({"case": "task=segment, per training step", "variant": label, "syncs": syncs})
    return rows


def main() -> None:
    """Count every case and print one table."""
    args = parse_args(__doc__.splitlines()[0], add_options)
    if args.quick:
        args.evaluations, args.steps, args.warmup = 12, 3, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: --device cuda needs a CUDA device")
        return
    rows = training_rows(args)
    default = rows[0]["syncs"]
    if args.device == "cpu":
        for optimizer in ("torch.optim.LBFGS", "lightning_modules.lbfgs.LBFGS"):
            syncs = style_syncs_per_evaluation(optimizer, args.evaluations, size=32)
            rows.append({"case": f"task=style, per L-BFGS evaluation ({args.evaluations})",
                         "variant": optimizer, "syncs": syncs})
    counted_by = "SyncCounter on the CPU" if args.device == "cpu" else "torch.cuda.set_sync_debug_mode"
    print_table(f"Host-device synchronisations, {args.steps} steps after {args.warmup} "
                f"({counted_by}; {machine_description()})", rows)
    print(f"host syncs per training step [python run.py defaults]: {default:.3g}")
    print(f"host copies that had to wait for the device: {HostCopy.waits}")
    if args.device == "cpu":
        ratio = rows[-2]["syncs"] / max(rows[-1]["syncs"], 1e-9)
        print(f"ratio torch.optim.LBFGS/LBFGS [syncs per style evaluation]: {ratio:.1f}")


if __name__ == "__main__":
    main()

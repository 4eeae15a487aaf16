"""Host-device synchronisations per step: what makes a GPU wait, counted on any machine.

    python benchmarks/host_syncs.py [--quick]

On a CUDA device some operations make the host wait until the queued work is done: reading a
scalar (`.item()`, `float()`, a 0-dim tensor passed where a Python number is expected),
boolean-mask indexing and `nonzero` (the result's size), `bincount` (it reads the maximum). Each
wait leaves the GPU idle while the host then launches the next kernels, which is what costs when
steps are short. The operations are counted here by a TorchDispatchMode on the CPU, so the figures
need no GPU and are the same on every machine. Counted:

- task=style, per L-BFGS function evaluation: torch.optim.LBFGS against lightning_modules.lbfgs.LBFGS
  (the config's optimizer: strong Wolfe line search, history 100);
- task=segment, per training step of run.py's Trainer (forward, loss, backward, metrics, logging;
  not Adam's update, see CountSteps): training-stage metrics on every batch, on every 10th, or off
  (`task.train_metrics_every_n_batches`). The plain loop of benchmarks/segmentation.py reads nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import machine_description, parse_args, print_table, style_lbfgs
from torch.utils._python_dispatch import TorchDispatchMode

ALWAYS_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "_unique2",
                  "unique_consecutive", "unique_dim", "repeat_interleave"}
MASK_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


def synchronises(name: str, args: tuple[Any, ...]) -> bool:
    """Whether the aten operation `name` called with `args` waits for a CUDA device."""
    if name in ALWAYS_SYNCING:
        return True
    indices = args[1] if name in MASK_INDEXING and len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class SyncCounter(TorchDispatchMode):
    """Counts the operations that would synchronise a CUDA device, while `active`."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active and synchronises(func.overloadpacket.__name__, args):
            self.count += 1
        return func(*args, **(kwargs or {}))


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
        history = module.stylize(sample)["history"]
    return counter.count / len(history)


class CountSteps(pl.Callback):
    """Switches a SyncCounter on from training step `warmup`, off during Adam's update; counts the steps.

    Adam keeps its step counter on the CPU even for CUDA parameters (unless `capturable`), so its
    scalar reads, which the CPU count would include, cost a GPU run nothing.
    """

    def __init__(self, counter: SyncCounter, warmup: int) -> None:
        self.counter, self.warmup, self.steps = counter, warmup, 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.counter.active = trainer.global_step >= self.warmup
        self.steps += self.counter.active

    def on_before_optimizer_step(self, *args: Any) -> None:
        self.counter.active = False

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.counter.active = trainer.global_step > self.warmup  # the logger's reads come after this


def segmentation_syncs_per_step(every: int, steps: int, warmup: int, work: Path) -> float:
    """Synchronisations per training step of run.py's segmentation Trainer (steps after `warmup`)."""
    from app import build as app_build
    from app.compose import compose_config

    cfg = compose_config([
        "task=segment", "model.base_width=8", "data.image_size=64", "data.batch_size=4",
        f"data.train_scenes={4 * (steps + warmup)}", "data.val_scenes=4", "data.test_scenes=4",
        f"trainer.max_steps={steps + warmup}", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=10", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar", "test=false",
        f"task.train_metrics_every_n_batches={every}",
    ], work / f"every{every}")
    datamodule, module, trainer = app_build.build(cfg)
    counter = SyncCounter()
    counting = CountSteps(counter, warmup)
    trainer.callbacks.append(counting)
    counter.active = False
    with counter:
        trainer.fit(module, datamodule=datamodule)
    return counter.count / counting.steps


def add_options(parser: argparse.ArgumentParser) -> None:
    """Evaluations and steps counted."""
    parser.add_argument("--evaluations", type=int, default=300, help="L-BFGS evaluations of task=style")
    parser.add_argument("--steps", type=int, default=30, help="counted segmentation training steps")


def main() -> None:
    """Count both cases and print one table."""
    args = parse_args(__doc__.splitlines()[0], add_options)
    if args.quick:
        args.evaluations, args.steps = 12, 3
    rows: list[dict[str, object]] = []
    for optimizer in ("torch.optim.LBFGS", "lightning_modules.lbfgs.LBFGS"):
        syncs = style_syncs_per_evaluation(optimizer, args.evaluations, size=32)
        rows.append({"case": f"task=style, {args.evaluations} evaluations", "variant": optimizer,
                     "syncs": syncs, "per": "evaluation"})
    with tempfile.TemporaryDirectory() as tmp:
        for every, label in [(1, "every batch"), (10, "every 10th batch"), (0, "off")]:
            syncs = segmentation_syncs_per_step(every, args.steps, warmup=2, work=Path(tmp))
            rows.append({"case": f"task=segment, {args.steps} steps", "variant": f"train metrics {label}",
                         "syncs": syncs, "per": "training step"})
    print_table(f"Host-device synchronisations ({machine_description()})", rows)
    ratio = rows[0]["syncs"] / max(rows[1]["syncs"], 1e-9)
    print(f"ratio torch.optim.LBFGS/LBFGS [syncs per style evaluation]: {ratio:.1f}")


if __name__ == "__main__":
    main()

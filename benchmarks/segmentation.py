"""Training throughput of segmentation: run.py's composed Lightning run against a hand-written loop.

    python benchmarks/segmentation.py [--quick] [--repeats 5] [--size 256] [--batch-size 8] [--set K=V ...]

Both sides train the same network on the same digit-scene batches (upscaled to --size) with the
same Adam optimizer and loss; the Lightning side adds everything run.py composes (Trainer,
callbacks, TensorBoard logger, torchmetrics). Steps before --warmup are not timed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl  # noqa: E402  (after common, which makes the project importable)
import torch  # noqa: E402
from common import machine_description, parse_args, print_table

TIMES: list[float] = []  # seconds per timed step of each Lightning run


class StepTimer(pl.Callback):
    """Times the training steps after the first `warmup` ones, appending seconds per step to TIMES."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Stop at the last step's end: epoch-end work (checkpoint files) is not per-step cost.
        if trainer.global_step >= trainer.max_steps:
            synchronize()
            TIMES.append((time.perf_counter() - self.start) / (trainer.global_step - self.warmup))


def synchronize() -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compose(model: str, args, output_dir: Path):
    """run.py's config for a segmentation training run of `args.steps` steps of `model`."""
    from tests.conftest import compose_config

    overrides = [
        "task=segment", "data=digit_scenes", f"model={model}", f"data.image_size={args.size}",
        f"data.digit_sizes=[{args.size // 4},{args.size // 2}]", f"data.batch_size={args.batch_size}",
        f"data.train_scenes={args.batch_size * args.steps}", "data.val_scenes=2", "data.test_scenes=2",
        f"trainer.max_steps={args.steps}", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "test=false",
        "~callbacks.rich_model_summary", "~callbacks.rich_progress_bar", "~callbacks.early_stopping",
        "+callbacks.step_timer._target_=benchmarks.segmentation.StepTimer",
        f"+callbacks.step_timer.warmup={args.warmup}",
        *args.set,
    ]
    return compose_config(overrides, output_dir)


def lightning_images_per_second(model: str, args) -> float:
    """Images/s of the timed steps of a run.train() call."""
    import run

    with tempfile.TemporaryDirectory() as tmp:
        run.train(compose(model, args, Path(tmp)))
    # Hydra builds the timer from `benchmarks.segmentation`, which is not this module when run as a script
    times = sys.modules["benchmarks.segmentation"].TIMES
    return args.batch_size / times[-1]


def plain_images_per_second(model: str, args) -> float:
    """Images/s of a minimal PyTorch loop: same network, batches, optimizer and loss."""
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(model, args, Path(tmp))
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    net = instantiate(cfg.model).to(device).train()
    module = instantiate(cfg.task, net=net, optimizer=None)  # its loss: cross-entropy (+ aux head)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    start = 0.0
    for step, (images, masks) in enumerate(datamodule.train_dataloader()):
        if step == args.warmup:
            synchronize()
            start = time.perf_counter()
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        loss = module.compute_loss(net(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize()
    return args.batch_size * (args.steps - args.warmup) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Measure both sides for each model; print and return the table rows."""

    def extra(parser):
        parser.add_argument("--models", nargs="+", default=["unet", "deeplabv3_resnet50"])
        parser.add_argument("--size", type=int, default=256)
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--steps", type=int, default=30)
        parser.add_argument("--warmup", type=int, default=5)
        parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                            help="extra run.py overrides for both sides, e.g. model.base_width=32")

    args = parse_args("Segmentation training throughput: run.py vs a plain loop.", extra, argv)
    if args.quick:
        args.size, args.batch_size, args.steps, args.warmup = 32, 2, 3, 1
    rows = []
    for model in args.models:
        results: dict[str, list[float]] = {"run.py (Lightning)": [], "plain PyTorch": []}
        for _ in range(args.repeats):  # alternating, so that machine noise hits both alike
            results["run.py (Lightning)"].append(lightning_images_per_second(model, args))
            results["plain PyTorch"].append(plain_images_per_second(model, args))
        lightning, plain = (statistics.median(v) for v in results.values())
        rows.append({"model": model, "size": args.size, "batch": args.batch_size,
                     "run.py images/s": lightning, "plain images/s": plain, "ratio": lightning / plain})
    print_table(f"Segmentation training throughput ({machine_description()})", rows)
    return rows


if __name__ == "__main__":
    main()

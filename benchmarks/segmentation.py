"""Training throughput of segmentation: run.py's composed Lightning run against a hand-written loop.

    python benchmarks/segmentation.py [--quick] [--repeats 5] [--size 256] [--batch-size 8] [--set K=V ...]
    python benchmarks/segmentation.py --models unet_resnet34 segformer_mit_b0   # smp models (random encoders)

Both sides train the same network on the same digit-scene batches (upscaled to --size) with the
same Adam optimizer and loss; the Lightning side adds everything run.py composes (Trainer,
callbacks, TensorBoard logger, torchmetrics). Steps before --warmup are not timed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import machine_description, parse_args, print_table

from benchmarks.training import framework_seconds_per_step, plain_seconds_per_step


def compose(model: str, args, output_dir: Path):
    """run.py's config for a segmentation training run of `args.steps` steps of `model`."""
    from app.compose import compose_config

    overrides = [
        "task=segment", "data=digit_scenes", f"model={model}", f"data.image_size={args.size}",
        f"data.digit_sizes=[{args.size // 4},{args.size // 2}]", f"data.batch_size={args.batch_size}",
        f"data.train_scenes={args.batch_size * args.steps}", "data.val_scenes=2", "data.test_scenes=2",
        f"trainer.max_steps={args.steps}", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "test=false",
        "~callbacks.rich_model_summary", "~callbacks.rich_progress_bar", "~callbacks.early_stopping",
        *args.set,
    ]
    return compose_config(overrides, output_dir)


def images_per_second(side: str, model: str, args) -> float:
    """Images/s of the timed steps of one side ("run.py" or "plain") for `model`."""
    seconds = {"run.py": framework_seconds_per_step, "plain": plain_seconds_per_step}[side]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(model, args, Path(tmp))
        return args.batch_size / seconds(cfg, args.warmup, args.steps - args.warmup)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Measure both sides for each model; print and return the table rows."""

    def extra(parser):
        parser.add_argument("--models", nargs="+", metavar="MODEL_CONFIG",
                            default=["unet", "deeplabv3_resnet50", "unet_resnet34", "deeplabv3plus_resnet50",
                                     "segformer_mit_b0"],
                            help="conf/model options, e.g. smp's unet_resnet34 or segformer_mit_b0")
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
        results: dict[str, list[float]] = {"run.py": [], "plain": []}
        for _ in range(args.repeats):  # alternating, so that machine noise hits both alike
            for side, rates in results.items():
                rates.append(images_per_second(side, model, args))
        lightning, plain = (statistics.median(v) for v in results.values())
        rows.append({"model": model, "size": args.size, "batch": args.batch_size,
                     "run.py images/s": lightning, "plain images/s": plain, "ratio": lightning / plain})
    print_table(f"Segmentation training throughput ({machine_description()})", rows)
    return rows


if __name__ == "__main__":
    main()

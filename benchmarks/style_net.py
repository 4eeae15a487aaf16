"""Training throughput of task=style_net: run.py's composed Lightning run against a hand-written loop.

    python benchmarks/style_net.py [--quick] [--repeats 3] [--size 256] [--batch-size 4] [--set K=V ...]

Both sides train the same Johnson et al. network (conf/model/transformer_net.yaml) with the same
perceptual loss (the same frozen VGG19 truncated after relu4_3, the same layers and weights, the
style's Gram matrices computed once), the same Adam optimizer and the same batches of crops of the
bundled photos (the datamodule's own loader). The Lightning side adds everything run.py composes:
Trainer, default callbacks, TensorBoard logger, the module's logged terms and metrics. Steps before
--warmup are not timed; repeats alternate the sides, so that machine noise hits both alike.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

from common import machine_description, parse_args, print_table

from app.compose import compose_config
from benchmarks.training import AUTOCAST, framework_seconds_per_step, synchronize


def compose(args, output_dir: Path):
    """run.py's config for `args.steps` training steps of task=style_net on the bundled photos."""
    crops = -(-args.batch_size * args.steps // 6)  # 6 training photos: enough crops for one epoch
    overrides = [
        "task=style_net", f"data.image_size={args.size}", f"data.resize_size={args.size}",
        f"data.batch_size={args.batch_size}", f"data.crops_per_image={crops}", "data.num_workers=2",
        "task.loss_network.weights=null", f"trainer.max_steps={args.steps}", "trainer.max_epochs=1",
        "trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "test=false", "~callbacks.rich_model_summary", "~callbacks.rich_progress_bar",
        "~callbacks.early_stopping", "~callbacks.style_net_grid", *args.set,
    ]
    return compose_config(overrides, output_dir)


def plain_seconds_per_step(cfg, warmup: int, steps: int) -> float:
    """Seconds per step of a hand-written Johnson et al. training loop with `cfg`'s data, network,
    loss network, layers, weights and optimizer (and precision): nothing else."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from lightning_modules.nets.loss_networks import build_loss_network
    from lightning_modules.style_losses import LossWeights, gram_matrix, perceptual_losses

    pl.seed_everything(cfg.seed, workers=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    task = cfg.task
    style_layers = {layer: 1.0 for layer in task.style_layers}
    net = instantiate(cfg.model).to(device).train()
    vgg = build_loss_network(**task.loss_network, layers=[*task.content_layers, *style_layers]).to(device)
    weights = LossWeights(task.content_weight, task.style_weight, task.tv_weight)
    with torch.no_grad():
        style = vgg(datamodule.styles[0][1].to(device))
        grams = {layer: gram_matrix(style[layer]) for layer in style_layers}
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    dtype = AUTOCAST.get(str(cfg.trainer.get("precision", "32")))
    loader = datamodule.train_dataloader()
    batches = (batch for _ in itertools.count() for batch in loader)
    start = 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        content = batch["content"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            output = net(content)
            with torch.no_grad():
                target = vgg(content)
            losses = perceptual_losses(output, vgg(output), {k: target[k] for k in task.content_layers},
                                       grams, style_layers, weights)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        if step == warmup + steps - 1:
            synchronize(device)
            return (time.perf_counter() - start) / steps
    raise AssertionError("unreachable: the batches never end")


def images_per_second(side: str, args) -> float:
    """Images/s of the timed steps of one side ("run.py" or "plain")."""
    seconds = {"run.py": framework_seconds_per_step, "plain": plain_seconds_per_step}[side]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(args, Path(tmp))
        return args.batch_size / seconds(cfg, args.warmup, args.steps - args.warmup)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Measure both sides; print and return the table row."""

    def extra(parser):
        parser.add_argument("--size", type=int, default=256, help="training crop side")
        parser.add_argument("--batch-size", type=int, default=4)
        parser.add_argument("--steps", type=int, default=12)
        parser.add_argument("--warmup", type=int, default=3)
        parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                            help="extra run.py overrides for both sides, e.g. precision=bf16-mixed")

    args = parse_args("task=style_net training throughput: run.py vs a plain loop.", extra, argv)
    if args.quick:
        args.size, args.batch_size, args.steps, args.warmup = 32, 2, 3, 1
    results: dict[str, list[float]] = {"run.py": [], "plain": []}
    for _ in range(args.repeats):
        for side, rates in results.items():
            rates.append(images_per_second(side, args))
    lightning, plain = (statistics.median(v) for v in results.values())
    rows = [{"model": "transformer_net", "size": args.size, "batch": args.batch_size,
             "run.py images/s": lightning, "plain images/s": plain, "ratio": lightning / plain}]
    print_table(f"task=style_net training throughput, {args.steps - args.warmup} steps after {args.warmup}, "
                f"median of {args.repeats} ({machine_description()})", rows)
    return rows


if __name__ == "__main__":
    main()

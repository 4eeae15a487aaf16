"""Seconds per L-BFGS evaluation of task=style with each loss network: VGG19, VGG16, MobileNetV3.

    python benchmarks/loss_networks.py [--quick] [--repeats 3] [--sizes 256 512] [--evaluations 10]

The same StyleTransferModule, content and style images (scikit-image's astronaut in the style of
the coffee photo), size and number of function evaluations; only the loss network and its layers
differ: Gatys et al.'s relu4_2 content and relu1_1..relu5_1 style layers for the VGGs, and for
MobileNetV3 their analogues by stage (stage4_2; the first block of each of its five stages). Weights are
random (speed does not depend on them). Sides alternate within each repeat; the ratio is VGG19's
seconds per evaluation over each network's (above 1: faster than VGG19).
"""

from __future__ import annotations

import statistics
import time

from common import machine_description, parse_args, print_table, style_lbfgs

LAYERS = {  # (content layers, style layers with Gatys et al.'s equal weights)
    "vgg19": (["relu4_2"], ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
    "vgg16": (["relu4_2"], ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
    "mobilenet_v3_large": (["stage4_2"], ["stage1_1", "stage2_1", "stage3_1", "stage4_1", "stage5_1"]),
    "mobilenet_v3_small": (["stage4_2"], ["stage1_1", "stage2_1", "stage3_1", "stage4_1", "stage5_1"]),
}


def styler(arch: str, size: int, device: str):
    """A function running N evaluations of task=style with loss network `arch`; returns seconds per one."""
    import torch

    from benchmarks.style_transfer import images
    from lightning_modules.nets.loss_networks import build_loss_network
    from lightning_modules.style_transfer import StyleTransferModule

    torch.manual_seed(0)
    content_layers, style_layers = LAYERS[arch]
    module = StyleTransferModule(build_loss_network(arch, None), style_lbfgs(), content_layers,
                                 {layer: 0.2 for layer in style_layers}, style_weight=1e6, init="content",
                                 progress_every=0).to(device)
    content, style = images(size, device)
    sample = {"name": "astronaut", "content": content, "styles": [style], "style_names": ["coffee"],
              "style_weights": torch.tensor([1.0])}

    def run(evaluations: int) -> float:
        module.evaluations = [evaluations]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        history = module.stylize(sample)["history"]
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / len(history)

    return run


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Measure every loss network at every size; print and return the table rows."""

    def extra(parser):
        parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
        parser.add_argument("--evaluations", type=int, default=10)
        parser.add_argument("--archs", nargs="+", default=list(LAYERS), choices=list(LAYERS))

    args = parse_args(__doc__.splitlines()[0], extra, argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.sizes, args.evaluations = [32], 2
    rows = []
    for size in args.sizes:
        runs = {arch: styler(arch, size, device) for arch in args.archs}
        for run in runs.values():
            run(2)  # warm-up
        seconds: dict[str, list[float]] = {arch: [] for arch in runs}
        for _ in range(args.repeats):
            for arch, run in runs.items():
                seconds[arch].append(run(args.evaluations))
        medians = {arch: statistics.median(values) for arch, values in seconds.items()}
        for arch, value in medians.items():
            ratio = medians["vgg19"] / value if "vgg19" in medians else None
            rows.append({"size": size, "loss network": arch, "s/eval": value, "ratio (vgg19 / this)": ratio})
            if ratio is not None:
                print(f"ratio (vgg19 time / {arch} time) at {size}px: {ratio:.2f} per evaluation")
    print_table(f"task=style seconds per L-BFGS evaluation by loss network, {args.evaluations} evaluations, "
                f"median of {args.repeats} ({machine_description()})", rows)
    return rows


if __name__ == "__main__":
    main()

"""Style transfer speed: task=style against a plain Gatys loop as the PyTorch tutorial writes it.

Both sides use the same VGG19 (same weights), the same layers, loss weights, image size and number
of L-BFGS function evaluations. Each (side, size) runs in its own process so that peak memory is
its own (with --quick, a check that the script runs, both run in this one). Prints seconds per
evaluation, the total loss after N evaluations, peak memory, and the ratio tutorial time / our time
(above 1: we are faster).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

from common import machine_description, parse_args, print_table, style_lbfgs

CONTENT_LAYERS = ["relu4_2"]
STYLE_LAYERS = {"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2, "relu5_1": 0.2}
STYLE_WEIGHT, CONTENT_WEIGHT = 1e6, 1.0


def images(size: int, device: str):
    """Content and style images of the same shape (as the tutorial needs) from scikit-image's photographs."""
    import torch.nn.functional as F

    from datamodules.style_images import load_source

    content = load_source("skimage:astronaut", size, 32).to(device)
    style = F.interpolate(load_source("skimage:coffee", size, 32), size=content.shape[-2:], mode="bilinear")
    return content, style.to(device)


def tutorial_loop(size: int, device: str):
    """The PyTorch tutorial's Gatys loop: a Sequential with loss layers inserted, L-BFGS, clamping.

    Returns a function that runs at least N evaluations (L-BFGS steps of 20 iterations, as the
    tutorial does) and returns the total loss of every evaluation done, and a function that
    evaluates the result's loss (called after the clock stops).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lightning_modules.nets.vgg_features import load_vgg_features, vgg_layer_names

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, x):
            self.loss = F.mse_loss(x, self.target)
            return x

    def gram(x):
        a, b, c, d = x.size()
        f = x.view(a * b, c * d)
        return torch.mm(f, f.t()).div(a * b * c * d)

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean, self.std = mean, std

        def forward(self, x):
            return (x - self.mean) / self.std

    class StyleLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = gram(target).detach()

        def forward(self, x):
            self.loss = F.mse_loss(gram(x), self.target)
            return x

    torch.manual_seed(0)
    cnn = load_vgg_features(None).to(device).eval().requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(-1, 1, 1)
    content, style = images(size, device)
    model = nn.Sequential()
    model.add_module("norm", Normalization(mean, std))
    content_losses, style_losses = [], []
    deepest = max(vgg_layer_names(cnn).index(n) for n in [*CONTENT_LAYERS, *STYLE_LAYERS])
    for name, layer in list(zip(vgg_layer_names(cnn), cnn, strict=True))[: deepest + 1]:
        model.add_module(name, nn.ReLU(inplace=False) if isinstance(layer, nn.ReLU) else layer)
        if name in CONTENT_LAYERS:
            loss = ContentLoss(model(content))
            model.add_module(f"content_{name}", loss)
            content_losses.append(loss)
        if name in STYLE_LAYERS:
            loss = StyleLoss(model(style))
            model.add_module(f"style_{name}", loss)
            style_losses.append((loss, STYLE_LAYERS[name]))

    def total_loss(image):
        model(image)
        return (CONTENT_WEIGHT * sum(c.loss for c in content_losses)
                + STYLE_WEIGHT * sum(w * s.loss for s, w in style_losses))

    def run(evaluations: int) -> tuple[list[float], Callable[[], float]]:
        image = content.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([image])
        totals = []  # device tensors: reading each one would add a synchronisation the tutorial lacks

        def closure():
            with torch.no_grad():
                image.clamp_(0, 1)
            optimizer.zero_grad()
            total = total_loss(image)
            total.backward()
            totals.append(total.detach())
            return total

        while len(totals) < evaluations:
            optimizer.step(closure)

        @torch.no_grad()
        def result_loss() -> float:
            return total_loss(image.clamp(0, 1)).item()  # the tutorial's output is clamped too

        return torch.stack(totals).tolist(), result_loss

    return run


def framework(size: int, device: str, precision: str = "32"):
    """task=style's module and L-BFGS config (same VGG, layers, weights); a runner like `tutorial_loop`.

    With precision "bf16-mixed" the optimisation runs under bfloat16 autocast, as run.py's
    `precision=bf16-mixed` does; the result's loss is still evaluated in float32.
    """
    import torch

    from lightning_modules.nets.vgg_features import VGGFeatures
    from lightning_modules.style_transfer import StyleTransferModule

    torch.manual_seed(0)
    module = StyleTransferModule(
        VGGFeatures(weights=None), style_lbfgs(), CONTENT_LAYERS, STYLE_LAYERS,
        content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT, tv_weight=0.0, init="content",
        progress_every=0,
    ).to(device)
    content, style = images(size, device)
    sample = {"name": "astronaut", "content": content, "styles": [style], "style_names": ["coffee"],
              "style_weights": torch.tensor([1.0])}

    def run(evaluations: int) -> tuple[list[float], Callable[[], float]]:
        module.evaluations = [evaluations]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = module.stylize(sample)

        @torch.no_grad()
        def result_loss() -> float:  # in float32, whatever precision the optimisation ran in
            targets = module.targets(content, [style], sample["style_weights"])
            return module.losses(out["result"], targets)["total"].item()

        return [losses["total"] for losses in out["history"]], result_loss

    return run


def measure(side: str, size: int, evaluations: int, repeats: int, device: str, precision: str) -> dict:
    """Run one side `repeats` times after a warm-up in this process; median seconds per evaluation."""
    import statistics

    import torch

    run = tutorial_loop(size, device) if side == "tutorial" else framework(size, device, precision)
    run(2)
    times, totals, result_loss = [], [], None
    for _ in range(repeats):
        start = time.perf_counter()
        totals, result_loss = run(evaluations)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(totals))
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"side": side, "size": size, "s_per_eval": statistics.median(times),
            "loss": totals[evaluations - 1], "totals": totals, "result_loss": result_loss(),
            "peak_mib": peak}


def measured(side: str, size: int, args, device: str) -> dict:
    """`measure` in a process of its own, or in this one for a --quick check (peak memory is then shared)."""
    if args.quick:
        return measure(side, size, args.evaluations, args.repeats, device, args.precision)
    command = [sys.executable, __file__, "--measure", side, str(size), "--evaluations",
               str(args.evaluations), "--repeats", str(args.repeats), "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} at {size}px failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--evaluations", type=int, default=50),
        p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512]),
        p.add_argument("--precision", choices=["32", "bf16-mixed"], default="32",
                       help="task=style's precision (the tutorial has only float32)"),
        p.add_argument("--measure", nargs=2, metavar=("SIDE", "SIZE"), help=argparse_hidden()),
    ))
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.evaluations, args.sizes, args.repeats = 3, [32], 1
    if args.measure:
        side, size = args.measure
        print(json.dumps(measure(side, int(size), args.evaluations, args.repeats, device, args.precision)))
        return
    rows = []
    for size in args.sizes:
        results = {}
        for side in ("tutorial", "framework"):
            results[side] = measured(side, size, args, device)
        tutorial, ours = results["tutorial"], results["framework"]
        # how many of our evaluations reach the lowest loss the tutorial reached in its N (its loss
        # can rise again: clamping inside its closure upsets L-BFGS), and how fast that is
        tutorial_best = min(tutorial["totals"][: args.evaluations])
        reach = next((i + 1 for i, v in enumerate(ours["totals"]) if v <= tutorial_best), None)
        for side, r in results.items():
            rows.append({"size": size, "side": side, "s/eval": r["s_per_eval"], "loss@1": r["totals"][0],
                         f"loss@{args.evaluations}": r["loss"],
                         f"best@{args.evaluations}": min(r["totals"][: args.evaluations]),
                         "result loss (fp32)": r["result_loss"],
                         "peak MiB": r["peak_mib"],
                         "evals to tutorial's best": reach if side == "framework" else None})
        ratio = tutorial["s_per_eval"] / ours["s_per_eval"]
        print(f"ratio (tutorial time / task=style time) at {size}px: {ratio:.2f} per evaluation", end="")
        if reach is not None:
            reached_at = 1 + tutorial["totals"].index(tutorial_best)
            to_loss = tutorial["s_per_eval"] * reached_at / (ours["s_per_eval"] * reach)
            print(f"; {to_loss:.1f} to reach the tutorial's best loss of {args.evaluations} evaluations "
                  f"(its evaluation {reached_at}, our {reach})")
        else:
            print(f"; the tutorial's best loss of {args.evaluations} evaluations was not reached")
    print_table(f"Style transfer, {args.evaluations} L-BFGS evaluations, task=style at precision "
                f"{args.precision} ({machine_description()})", rows)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

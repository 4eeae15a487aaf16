"""A trained style network against task=style (Gatys et al.): seconds per image, and the objective reached.

    python benchmarks/style_net_inference.py [--quick] [--repeats 3] [--size 512] [--ckpt CKPT]
                                             [--evaluations 50 100] [--skip-speed | --real-time-only]

Speed: seconds per --size x --size image (scikit-image's astronaut, 512 x 512) of Johnson et al.'s network
(conf/model/transformer_net.yaml, or the --ckpt checkpoint's; speed does not depend on the weights) eager, as
TorchScript and through onnxruntime (CPU provider; both files made by the project's exporters, as
`export.format=...` makes them), against `python run.py task=style data.content=skimage:astronaut
data.image_size=512` on the same image: task=style at its defaults (VGG19, 2 scales of 100 L-BFGS evaluations,
256 then 512 px). Each repeat runs every side (the network 5 times per backend, Gatys once), so that machine
load hits them alike; medians. ratio = Gatys seconds / onnxruntime seconds (target >= 300). With CUDA, also
frames/s of the eager network on batches of 8 frames at --size, float32 and float16 autocast (target >= 24);
--real-time-only measures that alone (the speed comparison runs on the CPU, as task=style's module is built).

Quality (with --ckpt, a task=style_net checkpoint): on its held-out test images, in each of its evaluation
styles, the Gatys objective (content, style, TV and weighted total with the checkpoint's layers and weights,
measured by the checkpoint's loss network, rebuilt exactly as its training built it) of the content image
itself, of the network's result, and of task=style's result after each of --evaluations L-BFGS evaluations
from the content image (one scale, at the image's size, the same objective).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine_description, parse_args, print_table, style_lbfgs


def load() -> str:
    """The machine's load averages over 1, 5 and 15 minutes."""
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def feed_forward(ckpt: str | None) -> Any:
    """Johnson et al.'s network (the checkpoint's, or conf/model/transformer_net.yaml's) behind its inference
    graph, evaluated."""
    import torch
    from hydra.utils import instantiate

    from app.compose import compose_config
    from lightning_modules.style_inference import inference_graph

    if ckpt:
        from app.trained_model import PREDICTABLE_TASKS, build_from_checkpoint, load_checkpoint

        _, module = build_from_checkpoint(*load_checkpoint(ckpt, [], PREDICTABLE_TASKS))
        return inference_graph(module.network)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        return inference_graph(instantiate(compose_config(["task=style_net"], Path(folder)).model))


def gatys(size: int, quick: bool) -> tuple[Any, dict[str, Any], str]:
    """task=style's module at its defaults (`--quick`: 3 evaluations a scale) and its sample: the astronaut at
    `size`, as `python run.py task=style data.content=skimage:astronaut data.image_size=SIZE` builds them."""
    import torch
    from hydra.utils import instantiate

    from app.compose import compose_config

    overrides = ["task=style", "data.content=skimage:astronaut", f"data.image_size={size}",
                 "model.weights=null", *(["task.evaluations=3"] if quick else [])]
    with tempfile.TemporaryDirectory() as folder:
        cfg = compose_config(overrides, Path(folder))
    torch.manual_seed(0)
    module = instantiate(cfg.task, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer),
                         scheduler=None, param_groups=None, compile=False)
    module.progress_every = 0
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    described = (f"defaults: {cfg.task.num_scales} scales x {cfg.task.evaluations} L-BFGS evaluations, "
                 f"content {list(cfg.task.content_layers)}, style weight {cfg.task.style_weight}")
    return module, datamodule.dataset[0], described


def exported(graph: Any, image: Any, folder: Path) -> dict[str, Any]:
    """The graph as TorchScript and ONNX files, made by the project's exporters, loaded for inference."""
    from app.exporters import export_onnx, export_torchscript
    from app.runtime import STYLIZED_NAME, ExportedModel

    export_torchscript(graph, image, folder / "model.pt")
    export_onnx(graph, image, folder / "model.onnx", opset=18, dynamic_hw=True, output_name=STYLIZED_NAME)
    return {"torchscript": ExportedModel(folder / "model.pt"),
            "onnxruntime": ExportedModel(folder / "model.onnx")}


def speed(args) -> list[dict[str, object]]:
    """Seconds per image of each backend and of Gatys, interleaved; prints the ratios."""
    import torch

    from datamodules.style_images import load_source

    graph = feed_forward(args.ckpt)
    module, sample, described = gatys(args.size, args.quick)
    image = load_source("skimage:astronaut", args.size, 1)
    with tempfile.TemporaryDirectory() as folder:
        backends = {"eager": graph, **exported(graph, image, Path(folder))}
        times: dict[str, list[float]] = {name: [] for name in [*backends, "gatys"]}
        start_load = load()
        with torch.inference_mode():
            for backend in backends.values():  # warm-up: allocation, onnxruntime's first-run planning
                backend(image)
        for _ in range(args.repeats):
            for name, backend in backends.items():
                for _ in range(5):
                    with torch.inference_mode():
                        began = time.perf_counter()
                        backend(image)
                        times[name].append(time.perf_counter() - began)
            began = time.perf_counter()
            module.stylize(sample)
            times["gatys"].append(time.perf_counter() - began)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    print(f"load average before / after: {start_load} / {load()} (1/5/15 min) on {os.cpu_count()} cores; "
          f"torch threads {torch.get_num_threads()}")
    for name in backends:
        print(f"ratio gatys/{name} [{args.size}px]: {seconds['gatys'] / seconds[name]:.0f}x")
    rows = [{"side": f"feed-forward {name}", "s/image": seconds[name],
             "images/s": 1 / seconds[name], "gatys / this": seconds["gatys"] / seconds[name]}
            for name in backends]
    rows.append({"side": f"task=style ({described})", "s/image": seconds["gatys"],
                 "images/s": 1 / seconds["gatys"], "gatys / this": 1.0})
    print_table(f"Seconds per {args.size}x{args.size} image, median of {args.repeats} rounds "
                f"({machine_description()})", rows)
    rows += real_time(graph, args)
    return rows


def real_time(graph: Any, args) -> list[dict[str, object]]:
    """CUDA: frames/s of the eager network on batches of 8 frames at --size (float32, float16 autocast)."""
    import torch

    if not torch.cuda.is_available():
        print("real time (>= 24 frames/s at batch 8 on a GPU): skipped: no CUDA device")
        return []
    net = graph.cuda()
    frames = torch.rand(8, 3, args.size, args.size, device="cuda")
    rows = []
    for dtype in (torch.float32, torch.float16):
        def run(dtype: torch.dtype = dtype) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                net(frames)
            torch.cuda.synchronize()

        for _ in range(3):
            run()
        began = time.perf_counter()
        for _ in range(args.repeats * 5):
            run()
        rate = 8 * args.repeats * 5 / (time.perf_counter() - began)
        print(f"ratio real time [{dtype}]: {rate / 24:.1f}x 24 frames/s ({rate:.0f} frames/s)")
        rows.append({"side": f"GPU eager {dtype}, batch 8", "s/image": 1 / rate, "images/s": rate,
                     "gatys / this": None})
    return rows


def trained_module(ckpt: str) -> tuple[Any, Any, Any]:
    """The checkpoint's run config, datamodule and task module, built as its training built them (seeded
    first, so that a loss network with random weights has the same ones), with the trained weights."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from core.contracts import CHECKPOINT_KEY
    from lightning_modules.checkpoint_io import read_checkpoint

    checkpoint = read_checkpoint(ckpt)
    cfg = OmegaConf.create(checkpoint[CHECKPOINT_KEY])
    pl.seed_everything(cfg.seed, workers=True)  # app.build.build's order: data, network, task
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.task, net=instantiate(cfg.model), optimizer=None, scheduler=None,
                         param_groups=cfg.param_groups, compile=False)
    module.load_state_dict(checkpoint["state_dict"])
    if module.conditioning == "style_image":
        raise SystemExit("--ckpt: the quality table takes a transformer_net or multistyle_net checkpoint")
    datamodule.setup("test")
    return cfg, datamodule, module.eval()


def compared_images(module: Any, gatys_module: Any, name: str, content: Any, style: Any, style_input: tuple,
                    evaluations: list[int]) -> dict[str, Any]:
    """The content image, the network's result, and task=style's (clamped) after each of `evaluations`."""
    import torch

    from lightning_modules.style_inference import inference_graph

    with torch.inference_mode():
        result = inference_graph(module.network)(content, *style_input)
    gatys_module.progress_every = math.gcd(*evaluations)  # clamped snapshots at each of them
    sample = {"name": name, "content": content, "styles": [style], "style_weights": torch.tensor([1.0])}
    snapshots = dict(gatys_module.stylize(sample)["snapshots"])
    return {"content image": content, "network": result, **{f"L-BFGS {n}": snapshots[n] for n in evaluations}}


def quality(args) -> list[dict[str, object]]:
    """The Gatys objective of the content image, the network's result and task=style's after N evaluations."""
    import torch

    from lightning_modules.style_losses import perceptual_losses
    from lightning_modules.style_transfer import StyleTransferModule

    cfg, datamodule, module = trained_module(args.ckpt)
    loss_network, weights, evaluations = module.loss_network, module.weights, sorted(args.evaluations)
    gatys_module = StyleTransferModule(
        loss_network, style_lbfgs(), module.content_layers, module.style_layers,
        content_weight=weights.content, style_weight=weights.style, tv_weight=weights.tv, init="content",
        num_scales=1, evaluations=evaluations[-1], progress_every=0)
    rows, totals = [], {}
    for item in datamodule.datasets["test"]:
        content = item["content"].unsqueeze(0)
        for index, (style_name, style) in enumerate(datamodule.styles):
            with torch.no_grad():  # what task=style_net's validation measures: the same targets
                targets = gatys_module.targets(content, [style], torch.tensor([1.0]))
            style_input = () if module.conditioning == "none" else (
                torch.nn.functional.one_hot(torch.tensor(index), len(datamodule.styles)).float(),)
            images = compared_images(module, gatys_module, item["name"], content, style, style_input,
                                     evaluations)
            for side, image in images.items():
                with torch.no_grad():
                    losses = perceptual_losses(image, loss_network(image), targets.content, targets.grams,
                                               module.style_layers, weights)
                totals.setdefault(side, []).append(float(losses["total"]))
                rows.append({"image": f"{item['name']} {tuple(content.shape[-2:])}",
                             "style image": style_name, "side": side,
                             **weighted({k: float(v) for k, v in losses.items()}, weights)})
    means = {side: statistics.fmean(values) for side, values in totals.items()}
    for n in evaluations:
        print(f"ratio network/L-BFGS {n} (total objective, mean over images): "
              f"{means['network'] / means[f'L-BFGS {n}']:.3f}")
    print("mean total objective: " + ", ".join(f"{side} {value:.4g}" for side, value in means.items()))
    network, loss = cfg.model._target_.rsplit(".", 1)[-1], cfg.task.loss_network
    print_table(f"Gatys objective on held-out images: {args.ckpt} ({network}), loss network {loss.arch} "
                f"weights={loss.weights}", rows)
    return rows


def weighted(losses: dict[str, float], weights: Any) -> dict[str, float]:
    """Each term times its weight (what it adds to the total), and the total."""
    return {"content x w": losses["content"] * weights.content, "style x w": losses["style"] * weights.style,
            "tv x w": losses["tv"] * weights.tv, "total": losses["total"]}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Speed (unless --skip-speed), then quality with --ckpt; print and return the table rows."""

    def extra(parser):
        parser.add_argument("--size", type=int, default=512, help="image side for the speed comparison")
        parser.add_argument("--ckpt", help="a task=style_net checkpoint: its network, and the quality table")
        parser.add_argument("--evaluations", type=int, nargs="+", default=[50, 100],
                            help="L-BFGS evaluations after which task=style's objective is compared")
        only = parser.add_mutually_exclusive_group()
        only.add_argument("--skip-speed", action="store_true", help="the quality table only")
        only.add_argument("--real-time-only", action="store_true",
                          help="only the GPU frames/s at batch 8 (gpu_check.sh's row)")

    args = parse_args(__doc__.splitlines()[0], extra, argv)
    if args.quick:
        args.size, args.evaluations = 64, [2, 4]
    if args.real_time_only:
        return real_time(feed_forward(args.ckpt), args)
    rows = [] if args.skip_speed else speed(args)
    if args.ckpt:
        rows += quality(args)
    else:
        print("quality: skipped (give --ckpt, a task=style_net checkpoint)")
    return rows


if __name__ == "__main__":
    main()

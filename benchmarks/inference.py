"""Inference speed of eager PyTorch, TorchScript and ONNX Runtime on this machine, side by side.

    python benchmarks/inference.py [--quick] [--repeats 3] [--batch-sizes 1 32] [--cases ResNet-18 UNet]

Cases: ResNet-18 at 224 px (classify) and UNet (conf/model/unet.yaml) at 256 px (segment), each
built from run.py's config, exported by the project's exporters (app.exporters)
and timed on the same random batches, interleaved. Also the checkpoint-to-first-prediction latency
of one image: loading a run.py checkpoint and rebuilding its network (the predict path) against
loading model.pt or model.onnx (imports excluded: all three run in this process).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    interleaved_medians,
    machine_description,
    parse_args,
    print_table,
)

CASES = {  # name: (overrides composing the network's run config, image side)
    "ResNet-18": (["model=resnet18", "data=image_folder", "data.root=unused", "data.num_classes=1000",
                   "model.weights=null"], 224),
    "UNet": (["task=segment", "model=unet", "data=voc", "data.num_classes=21"], 256),
}
QUICK = {"ResNet-18": (CASES["ResNet-18"][0] + ["data.image_size=32"], 32),
         "UNet": (CASES["UNet"][0] + ["model.base_width=8", "model.depth=2"], 32)}


def run_config(overrides: list[str]) -> Any:
    """run.py's composed config for `overrides`, resolved to plain containers."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.paths = {"root_dir": ".", "data_dir": ".", "log_dir": ".", "output_dir": "."}
    return OmegaConf.to_container(cfg, resolve=True)


def write_checkpoint(config: dict[str, Any], folder: Path) -> Path:
    """A checkpoint as run.py writes it: the task's state dict and the run config."""
    import torch
    from hydra.utils import instantiate

    net = instantiate(config["model"])
    path = folder / "model.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "visionlab_config": config}, path)
    return path


def first_prediction_seconds(load: Any, image: Any) -> float:
    """Seconds from nothing loaded to the first prediction of `image`."""
    import torch

    start = time.perf_counter()
    model = load()
    with torch.inference_mode():
        model(image)
    return time.perf_counter() - start


def measure_case(name: str, overrides: list[str], side: int, batch_sizes: list[int], repeats: int,
                 folder: Path) -> list[dict[str, object]]:
    """images/s of each backend per batch size, and checkpoint-to-first-prediction latency."""
    import torch

    from app.exporters import MainLogits, export_onnx, export_torchscript
    from app.predict import build_from_checkpoint, load_checkpoint
    from app.runtime import ExportedModel

    config = run_config(overrides)
    checkpoint_path = write_checkpoint(config, folder)
    channels = config["data"]["channels"]
    sample = torch.randn(2, channels, side, side)
    _, module = build_from_checkpoint(*load_checkpoint(str(checkpoint_path), []))
    eager = MainLogits(module.net).eval()
    segment = config["task_name"] == "segment"
    export_torchscript(eager, sample, folder / "model.pt")
    export_onnx(eager, sample, folder / "model.onnx", opset=18, dynamic_hw=segment)
    backends = {"eager": eager, "torchscript": ExportedModel(folder / "model.pt"),
                "onnxruntime": ExportedModel(folder / "model.onnx")}
    rows = []
    for batch_size in batch_sizes:
        images = torch.randn(batch_size, channels, side, side)

        def timed(backend: Any, images: torch.Tensor = images) -> Any:
            return lambda: backend(images)

        with torch.inference_mode():
            seconds = interleaved_medians({k: timed(v) for k, v in backends.items()}, repeats=repeats)
        per_second = {k: batch_size / v for k, v in seconds.items()}
        rows.append({"case": f"{name} {side}px batch {batch_size}",
                     **{f"{k} img/s": v for k, v in per_second.items()},
                     "ort/eager": per_second["onnxruntime"] / per_second["eager"],
                     "ts/eager": per_second["torchscript"] / per_second["eager"]})
        print(f"ratio onnxruntime/eager [{name} batch {batch_size}]: {rows[-1]['ort/eager']:.2f}")
    image = torch.randn(1, channels, side, side)
    loaders = {
        "eager": lambda: MainLogits(build_from_checkpoint(*load_checkpoint(str(checkpoint_path), []))[1].net),
        "torchscript": lambda: ExportedModel(folder / "model.pt"),
        "onnxruntime": lambda: ExportedModel(folder / "model.onnx"),
    }
    latencies = {name: min(first_prediction_seconds(load, image) for _ in range(repeats))
                 for name, load in loaders.items()}
    rows.append({"case": f"{name}: checkpoint to first prediction (s)",
                 **{f"{k} img/s": v for k, v in latencies.items()},
                 "ort/eager": latencies["eager"] / latencies["onnxruntime"],
                 "ts/eager": latencies["eager"] / latencies["torchscript"]})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    def extra(parser):
        parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
        parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))

    args = parse_args(__doc__.splitlines()[0], extra, argv)
    cases = QUICK if args.quick else CASES
    batch_sizes = [1, 2] if args.quick else args.batch_sizes
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases:
            case_folder = Path(folder) / name
            case_folder.mkdir()
            overrides, side = cases[name]
            rows += measure_case(name, overrides, side, batch_sizes, args.repeats, case_folder)
    print(f"machine: {machine_description()}")
    print_table("Inference: images/s (latency rows: seconds; ratios: how many times faster than eager)", rows)
    return rows


if __name__ == "__main__":
    main()

"""What a model costs: parameters, multiply-accumulates and FLOPs at the run's input size, file sizes,
peak memory and images/s, for `metrics.json` (`cost/...` keys) and the closing summary."""

from __future__ import annotations

import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def parameter_counts(net: nn.Module) -> dict[str, int]:
    """Total and trainable parameters (shared tensors counted once)."""
    unique = {id(p): p for p in net.parameters()}.values()
    return {"cost/parameters": sum(p.numel() for p in unique),
            "cost/trainable_parameters": sum(p.numel() for p in unique if p.requires_grad)}


def compute_at(net: nn.Module, input_shape: tuple[int, ...], extra: tuple[torch.Tensor, ...] = ()
               ) -> dict[str, int]:
    """FLOPs of one forward pass at `input_shape` (batch included; `extra`: the inputs after the images of a
    graph that takes more), counted by torch's FlopCounterMode, and multiply-accumulates (FlopCounterMode
    counts 2 FLOPs per MAC of convolutions and matmuls).

    Only the operations FlopCounterMode knows are counted (convolutions, matrix products, attention):
    element-wise work (activations, normalisation, pooling) is not, as in fvcore and ptflops.
    """
    from torch.utils.flop_counter import FlopCounterMode

    net = getattr(net, "_orig_mod", net)  # torch.compile's wrapper
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    was_training = net.training
    counter = FlopCounterMode(display=False)
    try:
        net.eval()
        with torch.no_grad(), counter:
            net(torch.zeros(input_shape, device=device, dtype=dtype), *(value.to(device) for value in extra))
    finally:
        net.train(was_training)
    flops = int(counter.get_total_flops())
    return {"cost/flops": flops, "cost/macs": flops // 2}


def peak_memory(device: torch.device | str | None = None) -> dict[str, int | str]:
    """Peak memory: CUDA's `max_memory_allocated` on a CUDA device, else the process's peak RSS."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return {"cost/peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "cost/peak_memory_kind": "cuda_max_memory_allocated"}
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    return {"cost/peak_memory_bytes": int(kilobytes if sys.platform == "darwin" else kilobytes * 1024),
            "cost/peak_memory_kind": "cpu_peak_rss"}


def file_size(path: str | Path | None, key: str) -> dict[str, int]:
    """`{key: size in bytes}` of an existing file, or nothing."""
    return {key: Path(path).stat().st_size} if path and Path(path).is_file() else {}


def network_costs(net: nn.Module, input_shape: tuple[int, ...], extra: tuple[torch.Tensor, ...] = ()
                  ) -> dict[str, Any]:
    """Parameters and compute of `net` at `input_shape` (and `extra` inputs), with the shape itself."""
    return {**parameter_counts(net), **compute_at(net, input_shape, extra),
            "cost/input_shape": "x".join(str(side) for side in input_shape)}


def readable(number: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (k, M, G, T); bytes with unit 'B' use 1024 steps: 'MiB'."""
    binary = unit == "B"
    step, prefixes = (1024.0, ["", "Ki", "Mi", "Gi", "Ti"]) if binary else (1000.0, ["", "k", "M", "G", "T"])
    value, index = float(number), 0
    while abs(value) >= step and index < len(prefixes) - 1:
        value, index = value / step, index + 1
    return f"{value:.3g} {prefixes[index]}{unit}".rstrip()


def cost_lines(costs: Mapping[str, Any]) -> list[str]:
    """The cost figures in words, for the closing summary."""
    lines = []
    if "cost/parameters" in costs:
        lines.append(f"{readable(costs['cost/parameters'])} parameters "
                     f"({readable(costs['cost/trainable_parameters'])} trainable)")
    if "cost/macs" in costs:
        lines.append(f"{readable(costs['cost/macs'])} MACs = {readable(costs['cost/flops'])} FLOPs "
                     f"per forward at {costs['cost/input_shape']}")
    for key, label in (("cost/checkpoint_bytes", "checkpoint"), ("cost/export_bytes", "exported file"),
                       ("cost/int8_export_bytes", "INT8 file")):
        if key in costs:
            lines.append(f"{label} {readable(costs[key], 'B')}")
    if "cost/peak_memory_bytes" in costs:
        cuda = str(costs.get("cost/peak_memory_kind")).startswith("cuda")
        kind = "CUDA max allocated" if cuda else "peak RSS"
        lines.append(f"peak memory {readable(costs['cost/peak_memory_bytes'], 'B')} ({kind})")
    for key, label in (("cost/train_images_per_s", "training"), ("cost/inference_images_per_s", "inference"),
                       ("cost/int8_inference_images_per_s", "INT8 inference")):
        if key in costs:
            lines.append(f"{label} {costs[key]:.4g} images/s")
    if "cost/video_frames_per_s" in costs:
        lines.append(f"video {costs['cost/video_frames_per_s']:.4g} frames/s (decoding, encoding included)")
    return lines


def images_per_second(forward: Any, images: torch.Tensor, repeats: int = 5,
                      extra: tuple[torch.Tensor, ...] = ()) -> float:
    """Images/s of `forward` on `images` (and `extra` inputs): the median of `repeats` timed calls after one
    warm-up call."""
    import statistics
    import time

    with torch.inference_mode():
        forward(images, *extra)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(images, *extra)
            times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def report_mode_costs(output_dir: str | Path, costs: Mapping[str, Any]) -> None:
    """A predict or export run's costs: `metrics.json` in its directory and one printed line."""
    import json

    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(costs), indent=2, sort_keys=True))
    lines = cost_lines(costs)
    if lines:
        print("Cost: " + ", ".join(lines) + f" ({path})")

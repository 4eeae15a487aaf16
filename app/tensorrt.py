"""`export.format=tensorrt`: the ONNX export built into a TensorRT engine by onnxruntime's TensorRT
execution provider (engine cached beside it) and verified against the eager network; CUDA only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.exporters import ExportError, MainLogits, export_network, max_difference
from app.runtime import INPUT_NAME, OUTPUT_NAME

PROVIDER = "TensorrtExecutionProvider"


def require_tensorrt() -> None:
    """Stop, with the reason, where no TensorRT engine can be built: no CUDA device, or no TensorRT
    execution provider in this onnxruntime."""
    if not torch.cuda.is_available():
        raise ExportError("export.format=tensorrt builds a TensorRT engine, which needs a CUDA device, and "
                          "this machine has none (torch.cuda.is_available() is False). Export with "
                          "export.format=onnx here and run the tensorrt export on the GPU machine (or "
                          "build the engine there with trtexec --onnx=model.onnx).")
    import onnxruntime

    if PROVIDER not in onnxruntime.get_available_providers():
        raise ExportError(f"export.format=tensorrt runs onnxruntime's {PROVIDER}, which this onnxruntime "
                          f"({onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}) "
                          "lacks: install onnxruntime-gpu and TensorRT (pip install onnxruntime-gpu "
                          "tensorrt).")


class TensorRTModel:
    """(N, C, H, W) float tensor -> logits through a TensorRT engine (built on first use, then cached)."""

    def __init__(self, onnx_path: Path, cache: Path, fp16: bool) -> None:
        import onnxruntime

        cache.mkdir(parents=True, exist_ok=True)
        options = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache)}
        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=[(PROVIDER, options), "CUDAExecutionProvider"])
        if self.session.get_providers()[0] != PROVIDER:
            raise ExportError(f"onnxruntime did not start {PROVIDER} for {onnx_path} "
                              f"(providers: {self.session.get_providers()}).")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: images.detach().cpu().float().numpy()})
        return torch.from_numpy(logits)


def export_tensorrt(net: nn.Module, folder: Path, samples: torch.Tensor, opset: int, dynamic_hw: bool,
                    tolerance: float, fp16: bool) -> tuple[Path, dict[str, Any]]:
    """model.onnx (verified as any ONNX export), its TensorRT engine in `folder/tensorrt_cache`, and the
    engine's outputs checked against the eager network's within `tolerance` (fp16 needs ~1e-2)."""
    require_tensorrt()
    path, facts = export_network(net, "onnx", folder, samples, opset, dynamic_hw, tolerance=1e-4)
    engine = TensorRTModel(path, folder / "tensorrt_cache", fp16)
    eager = MainLogits(net).eval().cpu()
    difference = max_difference(eager, engine, [(samples.float().cpu(),)])
    print(f"Verified the TensorRT engine ({'fp16' if fp16 else 'fp32'}) against the eager network on "
          f"{len(samples)} sample(s): max |difference| {difference:.3g} (tolerance {tolerance:g})")
    if difference > tolerance:
        raise ExportError(f"The TensorRT engine differs from the eager network by {difference:.3g} > "
                          f"export.tensorrt_tolerance={tolerance:g}.")
    facts["tensorrt"] = {"engine_cache": "tensorrt_cache", "fp16": fp16, "max_abs_difference": difference,
                         "tolerance": tolerance}
    return path, facts

"""Running an exported network: `model.onnx` through onnxruntime or `model.pt` through torch.jit.

Needs only the file and the `model.json` beside it: no Lightning, Hydra or network code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.contracts import ModelInfo
from core.errors import CheckpointError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
STYLIZED_NAME = "stylized"  # a style network's output


def model_info_path(model_path: str | Path) -> Path:
    """The `model.json` beside an exported model, or a CheckpointError when there is none."""
    info_path = Path(model_path).with_name("model.json")
    if not info_path.is_file():
        raise CheckpointError(f"{info_path} is missing: an exported model needs the model.json written "
                              "beside it by `python run.py export.format=...` (class names, preprocessing).")
    return info_path


def read_model_info(model_path: str | Path) -> ModelInfo:
    """The `model.json` written beside an exported model."""
    info_path = model_info_path(model_path)
    try:
        data = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{info_path} is not valid JSON ({err}): export the model again.") from err
    return ModelInfo.from_json(data, str(info_path))


def onnx_providers() -> list[str]:
    """CUDA's execution provider when onnxruntime has it, then the CPU's."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class ExportedModel:
    """A callable (N, C, H, W) float tensor -> logits tensor over an exported file (its model.json aside:
    `read_model_info`); a graph with more inputs (a style network's) takes them after the images, in order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"predict.model={self.path}: no such file. Export one with "
                                  "`python run.py export.format=onnx ckpt_path=...`.")
        if self.path.suffix == ".onnx":
            import onnxruntime

            self.session = onnxruntime.InferenceSession(str(self.path), providers=onnx_providers())
            self.module = None
        elif self.path.suffix == ".pt":
            self.session = None
            self.module = torch.jit.load(str(self.path), map_location="cpu").eval()
        else:
            raise CheckpointError(f"predict.model={self.path}: expected the .onnx or .pt file of an export.")

    def __call__(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        values = [value.detach().cpu().float() for value in (images, *inputs)]
        if self.session is not None:
            names = [node.name for node in self.session.get_inputs()]
            output = self.session.get_outputs()[0].name
            (result,) = self.session.run([output], {name: value.numpy() for name, value in zip(names, values,
                                                                                                strict=True)})
            return torch.from_numpy(result)
        with torch.inference_mode():
            return self.module(*values)

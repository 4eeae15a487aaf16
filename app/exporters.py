"""Exporting a network to ONNX or TorchScript, and checking the exported file against the eager network."""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.runtime import INPUT_NAME, OUTPUT_NAME, ExportedModel
from core.errors import VisionlabError

FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}


@dataclass(frozen=True)
class GraphInput:
    """An input of the exported graph after the images (a style network's): its name, the value it is traced
    and verified with, the value it is verified with again at the second image size, and its dynamic axes
    (axis -> (name, smallest size))."""

    name: str
    example: torch.Tensor
    second: torch.Tensor
    dynamic: Mapping[int, tuple[str, int]] = field(default_factory=dict)


class ExportError(VisionlabError, RuntimeError):
    """A network that cannot be exported, or whose exported file disagrees with it."""


class MainLogits(nn.Module):
    """The network with torchvision's `{"out", "aux"}` dict reduced to its `out` logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.net(x)
        return output["out"] if isinstance(output, Mapping) else output


def versions() -> dict[str, str]:
    """Versions of what made an export."""
    found = {"python": platform.python_version()}
    for package in ("visionlab", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def export_onnx(net: nn.Module, sample: torch.Tensor, path: Path, opset: int, dynamic_hw: bool,
                extra: Sequence[GraphInput] = (), min_side: int = 8, output_name: str = OUTPUT_NAME) -> bool:
    """torch.onnx's dynamo exporter, batch dynamic (and height/width, at least `min_side`, when `dynamic_hw`
    and the network allows it), with the `extra` inputs after the images; returns whether height and width
    are dynamic."""
    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str, low: int) -> torch.export.Dim:  # one Dim per name: inputs sharing it share the size
        return dims.setdefault(name, torch.export.Dim(name, min=low))

    for dynamic in ((True, False) if dynamic_hw else (False,)):
        dims.clear()
        axes = {0: dim("batch", 1)}
        if dynamic:
            axes |= {2: dim("height", min_side), 3: dim("width", min_side)}
        shapes = (axes, *({axis: dim(*named) for axis, named in graph_input.dynamic.items()} or None
                          for graph_input in extra))
        for name in ("onnx_ir", "onnxscript", "torch.onnx"):  # their passes log every step at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (sample, *(graph_input.example for graph_input in extra)), str(path),
                                  input_names=[INPUT_NAME, *(graph_input.name for graph_input in extra)],
                                  output_names=[output_name], opset_version=opset, dynamo=True,
                                  external_data=False, dynamic_shapes=shapes, verbose=False)
            return dynamic
        except Exception as err:  # the exporter raises many types; the message names the operator
            if dynamic:
                print(f"Dynamic height/width failed ({type(err).__name__}); exporting at "
                      f"{tuple(sample.shape[-2:])} with a dynamic batch only.")
                continue
            raise ExportError(f"ONNX export of {type(net).__name__} failed: {err}\nThe message above "
                              "names the operator; a newer export.opset, or export.format=torchscript, "
                              "may support it.") from err
    raise AssertionError("unreachable")


def export_torchscript(net: nn.Module, sample: torch.Tensor, path: Path, extra: Sequence[GraphInput] = ()
                       ) -> bool:
    """torch.jit.trace (shape arithmetic is traced, so batch, height and width stay dynamic)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, (sample, *(graph_input.example for graph_input in extra)),
                                     check_trace=False)
    except Exception as err:
        raise ExportError(f"TorchScript tracing of {type(net).__name__} failed: {err}") from err
    traced.save(str(path))
    return True


Forward = Callable[..., torch.Tensor]


def max_difference(eager: Forward, exported: Forward, batches: Sequence[tuple[torch.Tensor, ...]]) -> float:
    """Largest |eager - exported| over every output element of `batches` (each the graph's inputs),
    relative to max(1, max |eager|)."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            expected, got = eager(*batch), exported(*batch)
            if got.shape != expected.shape:
                raise ExportError(f"The exported model returned shape {tuple(got.shape)} for input "
                                  f"{tuple(batch[0].shape)}; the network returns {tuple(expected.shape)}.")
            scale = max(1.0, float(expected.abs().max()))
            worst = max(worst, float((expected - got).abs().max()) / scale)
    return worst


def leaf_inputs_outputs(net: nn.Module, *inputs: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor,
                                                                            torch.Tensor]]:
    """(name, module, input, output) of every leaf module with one tensor input, in the order they ran."""
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = []
    for name, module in net.named_modules():
        if not list(module.children()):
            def hook(module, inputs, output, name=name):
                tensors = len(inputs) == 1 and isinstance(inputs[0], torch.Tensor)
                if tensors and isinstance(output, torch.Tensor):
                    calls.append((name, module, inputs[0].clone(), output.clone()))
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():  # not inference_mode: the captured tensors are traced again
            net(*inputs)
    finally:
        for handle in hooks:
            handle.remove()
    return calls


def first_differing_layer(net: nn.Module, inputs: tuple[torch.Tensor, ...], fmt: str, opset: int,
                          tolerance: float) -> str:
    """The first leaf layer whose own export, run on its eager input, differs beyond `tolerance`."""
    with tempfile.TemporaryDirectory() as folder:
        for name, module, layer_input, layer_output in leaf_inputs_outputs(net, *inputs):
            path = Path(folder) / FILE_NAMES[fmt]
            try:
                if fmt == "onnx":
                    export_onnx(module, layer_input, path, opset, dynamic_hw=False)
                else:
                    export_torchscript(module, layer_input, path)
                got = ExportedModel(path)(layer_input)
            except ExportError as err:
                return f"layer {name} ({type(module).__name__}) does not export: {err}"
            difference = float((got - layer_output).abs().max()) / max(1.0, float(layer_output.abs().max()))
            if difference > tolerance:
                return f"layer {name} ({type(module).__name__}) differs by {difference:.3g} on its own"
    return "no single layer differs on its own: the difference builds up across layers"


def export_network(net: nn.Module, fmt: str, folder: Path, samples: torch.Tensor, opset: int,
                   dynamic_hw: bool, tolerance: float, extra: Sequence[GraphInput] = (), min_side: int = 8,
                   output_name: str = OUTPUT_NAME) -> tuple[Path, dict[str, Any]]:
    """Export `net` (eval mode, CPU; a graph of several inputs takes `extra` after the images) into `folder`,
    verify it on `samples` (and, for dynamic height/width, on them resized, with the extra inputs' second
    values): returns the file and the facts for model.json."""
    if fmt not in FILE_NAMES:
        raise ExportError(f"export.format={fmt!r}: use onnx or torchscript.")
    net = (net if extra else MainLogits(net)).eval().cpu()  # a style graph returns one tensor already
    samples = samples.float().cpu()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAMES[fmt]
    if fmt == "onnx":
        dynamic = export_onnx(net, samples[:2], path, opset, dynamic_hw, extra, min_side, output_name)
    else:
        dynamic = export_torchscript(net, samples[:2], path, extra) and dynamic_hw
    batches = [(samples, *(graph_input.example for graph_input in extra))]
    if dynamic:  # another batch size and another image size than the traced ones
        height, width = samples.shape[-2:]
        resized = torch.nn.functional.interpolate(samples[:3], size=(height + 16, width + 8), mode="bilinear",
                                                  align_corners=False)
        batches.append((resized, *(graph_input.second for graph_input in extra)))
    difference = max_difference(net, ExportedModel(path), batches)
    print(f"Verified {path.name} against the eager network on {len(samples)} sample(s)"
          f"{' and at ' + str(tuple(batches[-1][0].shape[-2:])) if dynamic else ''}: max |difference| "
          f"{difference:.3g} (relative to max(1, |output|); tolerance {tolerance:g})")
    if difference > tolerance:
        where = first_differing_layer(net, batches[0], fmt, opset, tolerance)
        raise ExportError(f"{path} differs from the eager network by {difference:.3g} > export.tolerance="
                          f"{tolerance:g}: {where}.")
    return path, {"format": fmt, "file": path.name, "opset": opset if fmt == "onnx" else None,
                  "input_name": INPUT_NAME, "output_name": output_name,
                  "dynamic_axes": ["batch", "height", "width"] if dynamic else ["batch"],
                  "verification": {"max_abs_difference": difference, "tolerance": tolerance,
                                   "samples": len(samples),
                                   "shapes": [list(batch[0].shape) for batch in batches]},
                  "versions": versions()}

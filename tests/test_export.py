"""Exporting trained networks to ONNX and TorchScript: verification, model.json, predicting from the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.exporters import ExportError, export_network
from core.contracts import MODEL_INFO_VERSION, ModelInfo, Preprocessing, SegmentationInference
from core.errors import CheckpointError
from tests.inference_helpers import (
    digits_classifier,
    run_in_process,
    small_unet,
    trained,
    write_digit_test_pngs,
    write_scene_pngs,
)
from tests.run_py import run_dirs, run_py


def top1(run_dir: Path) -> dict[str, str]:
    """predictions.csv as {path: top-1 class}."""
    with open(run_dir / "predictions.csv") as file:
        return {row["path"]: row["class1"] for row in csv.DictReader(file)}


def test_onnx_and_torchscript_exports_verify_and_predict_the_checkpoints_top1(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    images = tmp_path / "digits"
    write_digit_test_pngs(images)  # every digits test image
    run_in_process(tmp_path / "eager", f"predict.input={images}", f"ckpt_path={checkpoint}", "debug=smoke")
    expected = top1(tmp_path / "eager")
    for fmt, file_name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        run_in_process(tmp_path / fmt, f"export.format={fmt}", f"ckpt_path={checkpoint}", "debug=smoke")
        folder = tmp_path / fmt / "export"
        info = json.loads((folder / "model.json").read_text())
        assert info["file"] == file_name and info["task"] == "classify"
        assert info["classes"] == [str(d) for d in range(10)] and info["input_size"] == [16, 16]
        assert info["mean"] == [0.3] and info["std"] == [0.4] and info["dynamic_axes"] == ["batch"]
        assert info["verification"]["max_abs_difference"] <= info["verification"]["tolerance"]
        assert info["verification"]["samples"] == 8 and "torch" in info["versions"]
        assert (info["opset"] == 18) == (fmt == "onnx")
        run_in_process(tmp_path / f"{fmt}_predict", f"predict.input={images}",
                       f"predict.model={folder / file_name}", "debug=smoke")
        assert top1(tmp_path / f"{fmt}_predict") == expected


def test_unet_exports_with_dynamic_height_and_width_and_predicts_the_checkpoints_masks(
        tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    scenes = write_scene_pngs(tmp_path / "scenes", sizes=(32, 40))
    run_in_process(tmp_path / "eager", "task=segment", f"predict.input={tmp_path / 'scenes'}",
                   f"ckpt_path={checkpoint}", "debug=smoke")
    run_in_process(tmp_path / "export", "task=segment", "export.format=onnx", f"ckpt_path={checkpoint}",
                   "debug=smoke")
    info = json.loads((tmp_path / "export" / "export" / "model.json").read_text())
    assert info["dynamic_axes"] == ["batch", "height", "width"] and info["input_size"] is None
    assert info["ignore_index"] == 255 and info["classes"][0] == "background"
    assert info["verification"]["shapes"][1][-2:] == [48, 40]  # verified at a second image size
    run_in_process(tmp_path / "onnx", "task=segment", f"predict.input={tmp_path / 'scenes'}",
                   f"predict.model={tmp_path / 'export' / 'export' / 'model.onnx'}", "debug=smoke")
    for scene in scenes:
        eager = np.array(Image.open(tmp_path / "eager" / "masks" / f"{scene.name}.png"))
        exported = np.array(Image.open(tmp_path / "onnx" / "masks" / f"{scene.name}.png"))
        assert eager.shape == exported.shape and (eager == exported).mean() > 0.999


class ExportsDifferently(nn.Module):
    """Adds 1 only while being traced: its TorchScript disagrees with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1 if torch.jit.is_tracing() else x


def test_a_failed_verification_names_the_layer_that_differs(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), ExportsDifferently(), nn.ReLU())
    with pytest.raises(ExportError, match=r"layer net\.1 \(ExportsDifferently\) differs by"):
        export_network(net, "torchscript", tmp_path, torch.randn(4, 1, 8, 8), opset=18, dynamic_hw=False,
                       tolerance=1e-4)


def test_an_exported_model_without_its_model_json_is_refused(tmp_path):
    torch.jit.save(torch.jit.trace(nn.Identity(), torch.zeros(1)), tmp_path / "model.pt")
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(CheckpointError, match="model.json is missing"):
        run_in_process(tmp_path / "run", f"predict.input={tmp_path / 'a.png'}",
                       f"predict.model={tmp_path / 'model.pt'}")


# ---- model.json: a typed, versioned contract; one decision of the inference options ----

def slide_unet(base: Path) -> Path:
    """The small UNet of `small_unet`, trained with task.inference=slide (its stride left null)."""
    checkpoint, _ = trained(base, "slide_unet", "task=segment", "model.depth=2", "model.base_width=8",
                            "task.inference=slide", "debug=smoke")
    return checkpoint


def test_a_slide_trained_model_exports_its_stride_and_predicts_from_the_file_without_overrides(
        tmp_path, tmp_path_factory):
    checkpoint = slide_unet(tmp_path_factory.getbasetemp())
    write_scene_pngs(tmp_path / "scenes", sizes=(40,))
    run_py(tmp_path, "export.format=torchscript", f"ckpt_path={checkpoint}")
    (export_run,) = run_dirs(tmp_path, "segment")
    info = json.loads((export_run / "export" / "model.json").read_text())
    assert info["schema_version"] == MODEL_INFO_VERSION
    assert info["task_options"] == {"inference": "slide", "crop_size": 32, "stride": 21,
                                    "tta": {"flip": False, "scales": [1.0]}}
    model = export_run / "export" / "model.pt"
    run_py(tmp_path, f"predict.input={tmp_path / 'scenes'}", f"predict.model={model}")
    assert len(list((run_dirs(tmp_path, "segment")[-1] / "masks").glob("*.png"))) == 2


def test_slide_from_an_export_defaults_its_stride_as_the_checkpoint_does(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())  # trained whole: crop 32, stride 21 stored
    scenes = write_scene_pngs(tmp_path / "scenes", sizes=(40,))
    run_py(tmp_path, "export.format=onnx", f"ckpt_path={checkpoint}")
    model = run_dirs(tmp_path, "segment")[0] / "export" / "model.onnx"
    slide = ["task.inference=slide", "task.crop_size=16"]  # no stride: two thirds of the new window
    run_py(tmp_path, f"predict.input={tmp_path / 'scenes'}", f"predict.model={model}", *slide)
    run_py(tmp_path, f"predict.input={tmp_path / 'scenes'}", f"ckpt_path={checkpoint}", *slide)
    exported, eager = run_dirs(tmp_path, "segment")[1:]
    for scene in scenes:
        from_file = np.array(Image.open(exported / "masks" / f"{scene.name}.png"))
        from_checkpoint = np.array(Image.open(eager / "masks" / f"{scene.name}.png"))
        assert (from_file == from_checkpoint).mean() > 0.999


def test_model_json_of_the_first_format_without_a_schema_version_still_reads():
    info = {"task": "segment", "classes": ["background", "a"], "num_classes": 2, "channels": 1,
            "input_size": None, "mean": [0.3], "std": [0.4],
            "preprocessing": {"mode": "L", "resize": None, "center_crop": None, "mean": [0.3], "std": [0.4]},
            "ignore_index": 255, "checkpoint": "/runs/x/last.ckpt", "format": "onnx", "file": "model.onnx",
            "task_options": {"inference": "slide", "crop_size": 24, "stride": None,
                             "tta": {"flip": True, "scales": [1.0]}},
            "opset": 18, "input_name": "images", "output_name": "logits", "dynamic_axes": ["batch"],
            "verification": {"max_abs_difference": 0.0}, "versions": {"torch": "2.9"}}
    read = ModelInfo.from_json(info, "model.json")
    assert read.schema_version == 1 and read.preprocessing == Preprocessing("L", (0.3,), (0.4,))
    assert SegmentationInference.from_task(read.task_options) == SegmentationInference("slide", 24, 16, True)
    assert ModelInfo.from_json(read.to_json(), "again").to_json() == read.to_json()
    with pytest.raises(CheckpointError, match="schema_version 99"):
        ModelInfo.from_json({**info, "schema_version": 99}, "model.json")
    with pytest.raises(CheckpointError, match="lacks classes"):
        ModelInfo.from_json({k: v for k, v in info.items() if k != "classes"}, "model.json")

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

from core.errors import CheckpointError
from lightning_modules.inference.export import ExportError, export_network
from tests.inference_helpers import (
    digits_classifier,
    run_in_process,
    small_unet,
    write_digit_test_pngs,
    write_scene_pngs,
)


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
        eager = np.array(Image.open(tmp_path / "eager" / "masks" / f"{scene.stem}.png"))
        exported = np.array(Image.open(tmp_path / "onnx" / "masks" / f"{scene.stem}.png"))
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

"""INT8 export (onnxruntime's quantisation tools): verified against the float file on held-out images,
dynamic where static fails, refusals; TensorRT's refusal without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import app.quantize
from app.exporters import ExportError
from core.errors import ConfigError
from tests.inference_helpers import digits_classifier, run_in_process, small_unet, write_digit_test_pngs
from tests.run_py import run_py


def exported_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "export" / "model.json").read_text())


def test_static_int8_is_calibrated_on_validation_images_and_agrees_with_float_on_the_test_split(
        tmp_path, tmp_path_factory):
    checkpoint, trained = digits_classifier(tmp_path_factory.getbasetemp())
    run_in_process(tmp_path, "export.format=onnx", "export.quantize=int8", f"ckpt_path={checkpoint}",
                   "debug=smoke")
    int8 = exported_info(tmp_path)["int8"]
    assert int8["mode"] == "static" and int8["format"] == "QDQ" and int8["not_kept"] == []
    assert int8["calibration"].startswith("128 validation images")
    check = int8["verification"]
    assert check["images"] == 360 and check["agreement"] >= 0.98 and check["score"] == "top-1 accuracy"
    assert abs(check["float_score"] - trained["test/acc"]) < 1e-6  # the float file is the checkpoint
    assert check["int8_score"] >= check["float_score"] - 0.02
    export = tmp_path / "export"
    assert (export / "model.int8.onnx").stat().st_size < 0.4 * (export / "model.onnx").stat().st_size
    assert not (export / "model.preprocessed.onnx").exists()
    costs = json.loads((tmp_path / "metrics.json").read_text())
    assert costs["cost/int8_export_bytes"] == int8["bytes"] and costs["cost/int8_inference_images_per_s"] > 0


def test_where_static_quantisation_fails_dynamic_int8_is_kept_and_the_message_says_which(
        tmp_path, tmp_path_factory, monkeypatch, capsys):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())

    def unsupported(*args, **kwargs):
        raise RuntimeError("no QLinear kernel for this operator")

    monkeypatch.setattr(app.quantize, "quantize_static_file", unsupported)
    run_in_process(tmp_path, "export.format=onnx", "export.quantize=int8", f"ckpt_path={checkpoint}",
                   "export.int8_tolerance=0.1", "debug=smoke")
    int8 = exported_info(tmp_path)["int8"]
    assert int8["mode"] == "dynamic" and "static INT8 failed: RuntimeError" in int8["not_kept"][0]
    assert "dynamic INT8 (static failed: static INT8 failed: RuntimeError" in capsys.readouterr().out


def test_an_int8_file_outside_the_tolerance_is_not_kept_and_the_error_gives_the_agreement(
        tmp_path, tmp_path_factory, monkeypatch):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    poor = app.quantize.Agreement(images=10, agreement=0.9, float_score=0.9, int8_score=0.8, score="top-1")
    monkeypatch.setattr(app.quantize, "compare", lambda *args, **kwargs: poor)
    with pytest.raises(ExportError, match=r"static INT8 agrees with the float model on 90.00%.*\n.*dynamic"):
        run_in_process(tmp_path, "export.format=onnx", "export.quantize=int8", f"ckpt_path={checkpoint}",
                       "debug=smoke")
    assert not (tmp_path / "export" / "model.int8.onnx").exists()


def test_int8_with_verify_input_calibrates_on_half_the_images_and_verifies_on_the_others(
        tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    write_digit_test_pngs(tmp_path / "pngs")
    run_in_process(tmp_path / "run", "export.format=onnx", "export.quantize=int8", f"ckpt_path={checkpoint}",
                   f"export.verify_input={tmp_path / 'pngs'}", "export.samples=40", "debug=smoke")
    int8 = exported_info(tmp_path / "run")["int8"]
    assert int8["calibration"] == "export.verify_input (20 calibration, 20 verification)"
    assert int8["verification"]["images"] == 20 and int8["verification"]["float_score"] is None


@pytest.mark.parametrize(("overrides", "match"), [
    (["export.format=torchscript", "export.quantize=int8"], "use export.format=onnx"),
    (["export.format=onnx", "export.quantize=int4"], "export.quantize=int4: the one quantisation is int8"),
])
def test_int8_of_a_torchscript_file_or_another_precision_is_refused(tmp_path, tmp_path_factory, overrides,
                                                                    match):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    with pytest.raises(ConfigError, match=match):
        run_in_process(tmp_path, *overrides, f"ckpt_path={checkpoint}", "debug=smoke")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_tensorrt_without_a_cuda_device_stops_with_that_reason_and_exit_code_2(tmp_path):
    done = run_py(tmp_path, "export.format=tensorrt", "ckpt_path=any.ckpt", check=False)
    assert done.returncode == 2
    assert "needs a CUDA device" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_unet_quantised_to_int8_keeps_its_pixels_and_miou(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    run_in_process(tmp_path, "task=segment", "export.format=onnx", "export.quantize=int8",
                   f"ckpt_path={checkpoint}", "debug=smoke")
    check = exported_info(tmp_path)["int8"]["verification"]
    assert check["score"] == "mIoU" and check["agreement"] >= 0.98 and check["images"] == 200


def test_int8_pre_processing_leaves_nothing_in_the_working_directory_when_shape_inference_gives_up(
        tmp_path, monkeypatch):
    from app.exporters import export_onnx
    from lightning_modules.nets.unet import UNet

    net = UNet(in_channels=1, num_classes=11, depth=2, base_width=8).eval()
    export_onnx(net, torch.rand(2, 1, 32, 32), tmp_path / "model.onnx", 18, dynamic_hw=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # onnxruntime's symbolic shape inference cannot finish a dynamic-size UNet; it saves its partial model
    assert app.quantize.preprocessed(tmp_path / "model.onnx", tmp_path) == tmp_path / "model.onnx"
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "model.onnx"]

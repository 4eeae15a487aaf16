"""`export.format=onnx export.quantize=int8`: the exported ONNX file quantised to INT8 with onnxruntime's
quantisation tools (static QDQ, calibrated on real images; dynamic where static fails), and the INT8
file verified against the float one on held-out images before it is reported."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from app.exporters import ExportError
from app.runtime import INPUT_NAME, ExportedModel
from core.errors import ConfigError, DataError


@dataclass
class Batches:
    """Calibration images, and held-out images (with their targets when known) to verify on."""

    calibration: list[torch.Tensor]
    held_out: list[torch.Tensor]
    targets: list[torch.Tensor] | None
    source: str


@dataclass
class Agreement:
    """How the INT8 model compares with the float one on the held-out images."""

    images: int
    agreement: float  # classify: same top-1; segment: same class per (non-ignored) pixel
    float_score: float | None  # classify: top-1 accuracy; segment: mIoU (None without targets)
    int8_score: float | None
    score: str


def take(loader: Any, count: int, with_targets: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The first `count` images of `loader`'s (image, target) batches, in batches, and their targets."""
    images: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    taken = 0
    for batch_images, batch_targets in loader:
        images.append(batch_images[: count - taken].float())
        if with_targets:
            targets.append(batch_targets[: count - taken])
        taken += len(images[-1])
        if taken >= count:
            break
    return images, targets


def quantization_batches(cfg: DictConfig, datamodule: Any, verify_images: torch.Tensor | None) -> Batches:
    """Calibration from the checkpoint's validation split and held-out test images with their labels, or
    the first and second halves of `export.verify_input`'s images (no labels) when given."""
    count = int(cfg.export.calibration_samples)
    if verify_images is not None:
        half = max(1, min(count, len(verify_images) // 2))
        if len(verify_images) < 2:
            raise DataError("export.quantize=int8 with export.verify_input needs at least 2 images: some "
                            "calibrate, the others verify.")
        return Batches([verify_images[:half]], [verify_images[half:]], None,
                       f"export.verify_input ({half} calibration, {len(verify_images) - half} verification)")
    try:
        datamodule.setup("fit")
        calibration, _ = take(datamodule.val_dataloader(), count, with_targets=False)
        datamodule.setup("test")
        held_out, targets = take(datamodule.test_dataloader(), int(cfg.export.quantize_verify_samples),
                                 with_targets=True)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"INT8 calibration reads the checkpoint's validation and test data, which cannot be "
                        f"read here ({err}). Give images with export.verify_input=PATH.") from err
    return Batches(calibration, held_out, targets,
                   f"{sum(len(b) for b in calibration)} validation images (calibration), "
                   f"{sum(len(b) for b in held_out)} test images (verification)")


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over batches of images."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches: Iterator[torch.Tensor] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch.numpy().astype(np.float32)}


def quantize_static_file(float_path: Path, int8_path: Path, calibration: list[torch.Tensor]) -> None:
    """Static INT8 in the QDQ format: uint8 activations (ranges from the calibration images, min-max),
    int8 per-channel weights; x86 with VNNI needs no reduced range (onnxruntime's CPU guidance)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (CalibrationReader, CalibrationDataReader), {})(calibration)
    quantize_static(str(float_path), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def quantize_dynamic_file(float_path: Path, int8_path: Path) -> None:
    """Dynamic INT8: int8 weights, activations quantised at run time from each tensor's own range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8)


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run the block with `folder` as the working directory (contextlib.chdir before Python 3.11)."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocessed(float_path: Path, folder: Path) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph optimisation), when it succeeds."""
    from onnxruntime.quantization import quant_pre_process

    target = (folder / "model.preprocessed.onnx").resolve()
    logging.getLogger("onnxruntime.quantization.shape_inference").setLevel(logging.WARNING)
    try:  # a failed symbolic shape inference saves its partial model into the working directory
        with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as scratch, \
                working_directory(Path(scratch)):
            quant_pre_process(str(float_path.resolve()), str(target))
        return target
    except Exception as err:  # a model its shape inference cannot handle is quantised as exported
        logging.getLogger("run").warning(f"INT8 pre-processing skipped ({type(err).__name__}: {err})")
        return float_path


def compare(float_model: ExportedModel, int8_model: ExportedModel, batches: Batches, task: str,
            num_classes: int, ignore_index: int | None) -> Agreement:
    """Top-1 (classify) or per-pixel (segment) agreement on the held-out images, and accuracy / mIoU."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    segment = task == "segment"
    options = {"num_classes": num_classes, "validate_args": False}
    if segment and ignore_index is not None:
        options["ignore_index"] = ignore_index
    metric = MulticlassJaccardIndex if segment else MulticlassAccuracy
    scores = {"float": metric(average="macro" if segment else "micro", **options),
              "int8": metric(average="macro" if segment else "micro", **options)}
    same = counted = 0
    for index, images in enumerate(batches.held_out):
        predicted = {"float": float_model(images).argmax(1), "int8": int8_model(images).argmax(1)}
        valid = torch.ones_like(predicted["float"], dtype=torch.bool)
        if batches.targets is not None:
            target = batches.targets[index]
            if segment and ignore_index is not None:
                valid = target != ignore_index
            for name in scores:
                scores[name].update(predicted[name], target)
        same += int(((predicted["float"] == predicted["int8"]) & valid).sum())
        counted += int(valid.sum())
    known = batches.targets is not None
    return Agreement(images=sum(len(b) for b in batches.held_out), agreement=same / max(counted, 1),
                     float_score=float(scores["float"].compute()) if known else None,
                     int8_score=float(scores["int8"].compute()) if known else None,
                     score="mIoU" if segment else "top-1 accuracy")


def quantize_onnx(cfg: DictConfig, float_path: Path, datamodule: Any, task: str, num_classes: int,
                  ignore_index: int | None, verify_images: torch.Tensor | None) -> dict[str, Any]:
    """`model.int8.onnx` beside `float_path`, verified; its facts for model.json."""
    if str(cfg.export.quantize).lower() != "int8":
        raise ConfigError(f"export.quantize={cfg.export.quantize}: the one quantisation is int8 (or null).")
    if str(cfg.export.format) != "onnx":
        raise ConfigError(f"export.quantize=int8 quantises an ONNX file: use export.format=onnx, not "
                          f"{cfg.export.format}.")
    batches = quantization_batches(cfg, datamodule, verify_images)
    folder = float_path.parent
    int8_path = folder / "model.int8.onnx"
    source = preprocessed(float_path, folder)
    tolerance = float(cfg.export.int8_tolerance)
    float_model = ExportedModel(float_path)
    attempts: list[str] = []
    for mode in ("static", "dynamic"):
        try:
            if mode == "static":
                quantize_static_file(source, int8_path, batches.calibration)
            else:
                quantize_dynamic_file(source, int8_path)
            result = compare(float_model, ExportedModel(int8_path), batches, task, num_classes,
                             ignore_index)
        except Exception as err:  # onnxruntime raises many types for an operator it cannot quantise
            attempts.append(f"{mode} INT8 failed: {type(err).__name__}: {str(err)[:300]}")
            continue
        if 1 - result.agreement <= tolerance:
            break
        attempts.append(f"{mode} INT8 agrees with the float model on {result.agreement:.2%} of the held-out "
                        f"{'pixels' if task == 'segment' else 'images'}, below 1 - export.int8_tolerance = "
                        f"{1 - tolerance:.2%}")
    else:
        int8_path.unlink(missing_ok=True)
        tried = "\n  ".join(attempts)
        raise ExportError(f"INT8 quantisation of {float_path} was not kept:\n  {tried}\nThe float model.onnx "
                          "is exported; raise export.int8_tolerance to accept the difference, or keep the "
                          "float file.")
    if source != float_path:
        source.unlink(missing_ok=True)
    fallback = f" (static failed: {attempts[0]})" if mode == "dynamic" else ""
    scores = (f"; {result.score} float {result.float_score:.4f}, INT8 {result.int8_score:.4f}"
              if result.float_score is not None else "")
    print(f"Quantised {int8_path.name}: {mode} INT8{fallback}, calibrated on {batches.source}; agreement "
          f"with the float model {result.agreement:.2%} (at least {1 - tolerance:.2%} required){scores}.")
    return {"file": int8_path.name, "mode": mode, "format": "QDQ" if mode == "static" else "QOperator",
            "calibration": batches.source, "tolerance": tolerance, "not_kept": attempts,
            "verification": asdict(result), "bytes": int8_path.stat().st_size}

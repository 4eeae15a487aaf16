"""Trained checkpoints and image folders for the predict and export tests (shared across test files)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

import run
from datamodules.digit_scenes import DigitScenesDataModule
from datamodules.digits import DigitsDataModule
from tests.conftest import compose_config

QUIET = ["trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
         "callbacks.rich_progress_bar=null", "trainer.accelerator=cpu", "logger=none"]


def run_in_process(output_dir: Path, *overrides: str) -> dict[str, float] | None:
    """run.py's `run` on the composed config (train, predict or export), writing into `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run.run(compose_config(list(overrides), output_dir))
    metrics_file = output_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else None


def trained(base: Path, name: str, *overrides: str) -> tuple[Path, dict[str, float]]:
    """The best checkpoint and final metrics of a run trained once per test session into `base/name`."""
    run_dir = base / name
    if not (run_dir / "metrics.json").is_file():
        run_in_process(run_dir, *QUIET, *overrides)
    best = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))[-1]
    return best, json.loads((run_dir / "metrics.json").read_text())


def digits_classifier(base: Path) -> tuple[Path, dict[str, float]]:
    """mnist_cnn trained on the bundled digits for 2 epochs (about 90% test accuracy)."""
    return trained(base, "digits_classifier", "trainer.max_epochs=2")


def small_unet(base: Path) -> Path:
    """A smoke-trained small UNet on digit scenes (its masks are not meaningful, only their form)."""
    checkpoint, _ = trained(base, "small_unet", "task=segment", "model.depth=2", "model.base_width=8",
                            "debug=smoke")
    return checkpoint


def to_png(image: torch.Tensor, mean: float, std: float, path: Path) -> None:
    """A normalised 1-channel image written as an 8-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = ((image[0] * std + mean).clamp(0, 1) * 255).round().byte().numpy()
    Image.fromarray(pixels, mode="L").save(path)


def write_digit_test_pngs(folder: Path) -> dict[str, int]:
    """The digits test split as PNGs in `folder` (two subfolders); {path: label}."""
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    labels = {}
    for index, (image, label) in enumerate(datamodule.datasets["test"]):
        path = folder / f"part{index % 2}" / f"{index:04d}.png"
        to_png(image, datamodule.mean[0], datamodule.std[0], path)
        labels[str(path)] = int(label)
    return labels


def write_labelled_digits(folder: Path, count: int = 120) -> dict[str, int]:
    """The first `count` digits test images as PNGs in folders named by their class; {path: label}."""
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    labels = {}
    for index in range(count):
        image, label = datamodule.datasets["test"][index]
        path = folder / str(int(label)) / f"{index:04d}.png"
        to_png(image, datamodule.mean[0], datamodule.std[0], path)
        labels[str(path)] = int(label)
    return labels


def write_scene_pngs(folder: Path, sizes: tuple[int, ...] = (32, 48)) -> list[Path]:
    """Digit scenes of several sizes as PNGs."""
    paths = []
    for size in sizes:
        datamodule = DigitScenesDataModule(image_size=size, test_scenes=2)
        datamodule.setup("test")
        for index, (image, _) in enumerate(datamodule.datasets["test"]):
            paths.append(folder / f"scene{size}_{index}.png")
            to_png(image, datamodule.mean[0], datamodule.std[0], paths[-1])
    return paths


def read_checkpoint_keys(path: Path) -> tuple[list[str], dict]:
    """The state-dict keys and the hyperparameters of a checkpoint file."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return list(checkpoint["state_dict"]), dict(checkpoint.get("hyper_parameters", {}))

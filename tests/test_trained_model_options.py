"""Predict, export and evaluate with a trained model's stored config, through run.py as users type it:
`data.*` / `task.*` keys of the checkpoint override without `+`, the checkpoint's task is composed, and
options that do not fit the stored network are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.classification_fakes import write_image_folder
from tests.inference_helpers import small_unet, write_scene_pngs
from tests.run_py import run_dirs, run_py


@pytest.fixture(scope="module")
def folder_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, image folder) of simple_cnn trained on an image folder at 32 px, resized from 36."""
    base = tmp_path_factory.mktemp("folder_classifier")
    images = write_image_folder(base / "photos")
    run_py(base, "data=image_folder", f"data.root={images}", "data.num_classes=2", "model=simple_cnn",
           "data.image_size=32", "data.resize_size=36", "data.num_workers=0", "logger=none")
    (run_dir,) = run_dirs(base)
    return run_dir / "checkpoints" / "last.ckpt", images / "test"


def test_data_keys_of_the_checkpoint_override_it_without_a_plus(folder_classifier, tmp_path):
    checkpoint, images = folder_classifier
    run_py(tmp_path, "export.format=torchscript", f"ckpt_path={checkpoint}", "data.resize_size=40",
           f"export.verify_input={images}")
    (run_dir,) = run_dirs(tmp_path)
    preprocessing = json.loads((run_dir / "export" / "model.json").read_text())["preprocessing"]
    assert preprocessing["resize"] == 40 and preprocessing["center_crop"] == 32


def test_the_checkpoints_own_data_option_with_its_root_predicts(folder_classifier, tmp_path):
    checkpoint, images = folder_classifier
    done = run_py(tmp_path, f"predict.input={images}", f"ckpt_path={checkpoint}", "data=image_folder",
                  f"data.root={tmp_path / 'moved'}")
    assert "Missing mandatory value" not in done.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert len((run_dir / "predictions.csv").read_text().splitlines()) == 1 + 12


def test_another_datamodule_for_a_checkpoint_is_refused_with_the_one_it_was_trained_on(
        folder_classifier, tmp_path):
    checkpoint, images = folder_classifier
    done = run_py(tmp_path, f"predict.input={images}", f"ckpt_path={checkpoint}", "data=cifar10", check=False)
    assert done.returncode == 2 and "ConfigError" in done.stderr
    assert "ImageFolderDataModule" in done.stderr and "drop data=cifar10" in done.stderr


def test_an_image_size_the_stored_network_was_not_built_for_is_refused_with_the_reason(
        folder_classifier, tmp_path):
    checkpoint, images = folder_classifier
    done = run_py(tmp_path, f"predict.input={images}", f"ckpt_path={checkpoint}", "data.image_size=64",
                  check=False)
    assert done.returncode == 2 and "CheckpointError" in done.stderr and "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "data.image_size=64 changes what the stored network was built for" in message.replace("│ ", "")


def test_a_segmentation_checkpoint_takes_task_keys_without_naming_its_task(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    write_scene_pngs(tmp_path / "scenes", sizes=(32,))
    run_py(tmp_path, f"predict.input={tmp_path / 'scenes'}", f"ckpt_path={checkpoint}",
           "task.inference=slide", "task.crop_size=16", "task.stride=8")
    (run_dir,) = run_dirs(tmp_path, "segment")  # the checkpoint's task: results under outputs/segment/
    assert len(list((run_dir / "masks").glob("*.png"))) == 2


def test_evaluating_a_unet_without_its_runs_model_options_names_them(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())  # model.depth=2 model.base_width=8
    done = run_py(tmp_path, "task=segment", "train=false", f"ckpt_path={checkpoint}", check=False)
    message = " ".join(done.stderr.replace("│", " ").split())
    assert done.returncode == 2 and "CheckpointError" in done.stderr and "state_dict" not in message
    assert "built it with model.base_width=8 model.depth=2" in message

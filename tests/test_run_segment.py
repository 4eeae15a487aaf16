"""End-to-end segmentation runs through run.py's composed config, and a learning test on digit scenes."""

from __future__ import annotations

import json

import pytest

from app import training
from tests.fakes import write_fake_pets, write_fake_seg_folder, write_fake_voc

TINY_UNET = ["model.depth=2", "model.base_width=4"]
DATASETS = {
    "digit_scenes": ["data.image_size=32", "data.train_scenes=8", "data.val_scenes=4", "data.test_scenes=4"],
    "voc": ["data.image_size=48", "data.base_size=48"],
    "pets": ["data.image_size=48", "data.base_size=48"],
    "seg_folder": ["data.image_size=48", "data.base_size=48", "data.num_classes=3"],
}
HELD_OUT_MIOU_THRESHOLD = 0.45  # the from-scratch UNet's learning test; an all-background model scores ~0.08
WRITERS = {"voc": write_fake_voc, "pets": write_fake_pets, "seg_folder": write_fake_seg_folder}
MODELS = {
    "unet": TINY_UNET,
    "deeplabv3_resnet50": [],
    "deeplabv3_mobilenet_v3_large": [],
    "fcn_resnet50": [],
    "lraspp_mobilenet_v3_large": [],
}


def overrides_for(data: str, tmp_path) -> list[str]:
    """The data overrides of a tiny run, writing the fake dataset it reads first."""
    options = ["task=segment", f"data={data}", *DATASETS[data], "data.batch_size=2", "data.num_workers=0"]
    if data in WRITERS:
        WRITERS[data](tmp_path / data)
        options.append(f"data.root={tmp_path / data}")
    return options


@pytest.mark.parametrize("data", DATASETS)
def test_unet_trains_and_tests_on_every_dataset(data, make_config, tmp_path):
    metrics = training.train(make_config(*overrides_for(data, tmp_path), "model=unet", *TINY_UNET))
    assert {"test/miou", "test/pixel_acc", "test/dice", "test/loss", "val/miou"} <= metrics.keys()
    assert 0.0 <= metrics["test/miou"] <= 1.0
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/miou"] == metrics["test/miou"]


@pytest.mark.parametrize("model", [m for m in MODELS if m != "unet"])
def test_torchvision_models_train_and_test_on_fake_voc(model, make_config, tmp_path):
    overrides = [*overrides_for("voc", tmp_path), f"model={model}", "~callbacks.model_checkpoint",
                 "logger=none", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    metrics = training.train(make_config(*overrides))
    assert {"test/miou", "val/miou", "train/loss"} <= metrics.keys()


def test_issue_commands_compose_as_written(make_config, tmp_path):
    voc = make_config("task=segment", "data=voc", "model=deeplabv3_resnet50", f"data.root={tmp_path}")
    pets = make_config("task=segment", "data=pets", "model=unet")
    assert voc.model.num_classes == 21 and voc.model.name == "deeplabv3_resnet50"
    assert pets.model.num_classes == 2 and pets.monitor.metric == "val/miou"
    assert voc.task.ignore_index == 255 and "segmentation_overlays" in voc.callbacks


def test_dice_and_cross_entropy_together_with_the_tensorboard_overlays(make_config, tmp_path):
    overrides = [*overrides_for("digit_scenes", tmp_path), "model=unet", *TINY_UNET,
                 "task.losses={ce:1.0,dice:1.0}", "task.class_weights=[0.5,1,1,1,1,1,1,1,1,1,1]"]
    metrics = training.train(make_config(*overrides))
    assert metrics["test/loss"] > 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_unet_learns_to_segment_held_out_digit_scenes(make_config):
    cfg = make_config(
        "task=segment", "data=digit_scenes", "model=unet", "model.depth=3", "model.base_width=16",
        "task.class_weights=[0.2,1,1,1,1,1,1,1,1,1,1]", "optimizer.lr=3e-3", "scheduler=onecycle",
        "trainer.max_epochs=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar", "~callbacks.rich_model_summary", "logger=none", fast=False,
    )
    metrics = training.train(cfg)
    assert metrics["test/miou"] >= HELD_OUT_MIOU_THRESHOLD

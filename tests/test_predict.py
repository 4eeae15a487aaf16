"""Predicting on new images: input listing, inference modes (hand cases), writers, bad input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.inputs import list_inputs
from core.contracts import SegmentationInference
from core.errors import CheckpointError, ConfigError, DataError
from datamodules.image_files import output_names
from lightning_modules.inference import classify_logits, segment_logits, slide_logits, window_starts
from tests.inference_helpers import (
    QUIET,
    digits_classifier,
    run_in_process,
    small_unet,
    trained,
    write_digit_test_pngs,
    write_scene_pngs,
)
from tests.run_py import python, run_py

ROOT = Path(__file__).resolve().parents[1]


def read_predictions(run_dir: Path) -> dict[str, str]:
    """predictions.csv as {path: top-1 class}."""
    with open(run_dir / "predictions.csv") as file:
        return {row["path"]: row["class1"] for row in csv.DictReader(file)}


# ---- sliding window and TTA against hand-computed values ----

@pytest.mark.parametrize(("size", "crop", "stride", "starts"), [
    (10, 4, 3, [0, 3, 6]), (8, 4, 4, [0, 4]), (9, 4, 4, [0, 4, 5]), (3, 4, 2, [0]), (4, 4, 1, [0]),
])
def test_window_starts_cover_the_side_and_end_at_its_edge(size, crop, stride, starts):
    assert window_starts(size, crop, stride) == starts


@pytest.mark.parametrize(("size", "crop", "stride"), [(10, 4, 6), (20, 4, 5), (9, 3, 4)])
def test_windows_that_would_leave_pixels_uncovered_are_refused(size, crop, stride):
    with pytest.raises(ValueError, match="uncovered"):
        window_starts(size, crop, stride)


def test_every_pixel_is_covered_for_any_stride_up_to_the_window():
    for size in range(1, 40):
        for crop in range(1, 12):
            for stride in range(1, crop + 1):
                covered = set()
                for start in window_starts(size, crop, stride):
                    covered |= set(range(start, min(start + crop, size)))
                assert covered == set(range(size)), (size, crop, stride)


def test_a_stride_larger_than_the_window_is_refused_for_training_and_prediction(tmp_path, tmp_path_factory):
    with pytest.raises(ConfigError, match="task.stride=48 is larger than task.crop_size=32"):
        SegmentationInference.from_task({"inference": "slide", "crop_size": 32, "stride": 48})
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    write_scene_pngs(tmp_path / "scenes", sizes=(32,))
    done = run_py(tmp_path, f"predict.input={tmp_path / 'scenes'}", f"ckpt_path={checkpoint}",
                  "task.inference=slide", "task.crop_size=16", "task.stride=24", check=False)
    assert done.returncode == 2 and "ConfigError" in done.stderr and "Traceback" not in done.stderr
    assert "stripes of 8 px" in " ".join(done.stderr.replace("│", " ").split())


def test_slide_averages_the_logits_of_overlapping_windows():
    image = torch.arange(10.0).expand(1, 1, 4, 10).clone()  # each pixel holds its column index

    def window_mean(batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)

    logits = slide_logits(window_mean, image, crop_size=4, stride=3)
    # windows cover columns 0-3 (mean 1.5), 3-6 (4.5), 6-9 (7.5); columns 3 and 6 are in two
    expected = torch.tensor([1.5, 1.5, 1.5, 3.0, 4.5, 4.5, 6.0, 7.5, 7.5, 7.5])
    assert torch.allclose(logits[0, 0], expected.expand(4, 10))


def test_slide_equals_whole_for_a_network_that_sees_one_pixel():
    net = torch.nn.Conv2d(3, 5, 1)
    images = torch.randn(2, 3, 23, 17)
    with torch.no_grad():
        slide = segment_logits(net, images, "slide", crop_size=8, stride=5)
        assert torch.allclose(slide, net(images), atol=1e-6)


def test_flip_tta_averages_the_mirrored_logits_back_in_place():
    ramp = torch.arange(4.0).view(1, 1, 1, 4)

    def add_ramp(batch: torch.Tensor) -> torch.Tensor:  # not mirror-symmetric: position-dependent
        return batch + ramp

    images = torch.randn(1, 1, 3, 4)
    logits = segment_logits(add_ramp, images, flip=True)
    assert torch.allclose(logits, images + 1.5)  # (ramp + reversed ramp) / 2 = 1.5 everywhere


def test_multi_scale_tta_returns_full_resolution_logits_averaged_over_scales():
    images = torch.full((1, 2, 8, 12), 3.0)
    logits = segment_logits(lambda batch: batch * 2, images, scales=[0.5, 1.0, 1.5])
    assert logits.shape == images.shape and torch.allclose(logits, torch.full_like(images, 6.0))


def test_classification_flip_tta_averages_image_and_mirror():
    images = torch.tensor([[[[1.0, 0.0, 0.0, 5.0]]]])
    first_column = lambda batch: batch[:, :, 0, :1].flatten(1)  # noqa: E731
    assert classify_logits(first_column, images).item() == 1.0
    assert classify_logits(first_column, images, flip=True).item() == 3.0


# ---- input listing ----

def test_inputs_from_a_folder_recursively_a_glob_a_list_file_and_one_image(tmp_path):
    for name in ("a.png", "sub/b.jpg", "sub/deeper/c.PNG", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_inputs(str(tmp_path))] == ["a.png", "b.jpg", "c.PNG"]
    assert [p.name for p in list_inputs(str(tmp_path / "sub" / "*.jpg"))] == ["b.jpg"]
    (tmp_path / "list.txt").write_text("a.png\n\n# a comment\nsub/b.jpg\n")
    assert list_inputs(str(tmp_path / "list.txt")) == [tmp_path / "a.png", tmp_path / "sub" / "b.jpg"]
    assert list_inputs(str(tmp_path / "a.png")) == [tmp_path / "a.png"]
    assert output_names(list_inputs(str(tmp_path))) == ["a.png", "sub/b.jpg", "sub/deeper/c.PNG"]


def test_missing_and_empty_inputs_say_so(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list_inputs(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="names no image"):
        list_inputs(str(tmp_path / "empty"))


# ---- end to end ----

def test_predicted_top1_on_the_digits_test_pngs_agrees_with_the_labels_as_well_as_test_acc(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    checkpoint, metrics = digits_classifier(base)
    labels = write_digit_test_pngs(base / "digit_pngs")
    run_dir = base / "predict_digits"
    run_in_process(run_dir, f"predict.input={base / 'digit_pngs'}", f"ckpt_path={checkpoint}",
                   "predict.batch_size=64", "debug=smoke", "logger=tensorboard")
    predictions = read_predictions(run_dir)
    assert set(predictions) == set(labels)
    agreement = np.mean([int(predictions[path]) == label for path, label in labels.items()])
    assert metrics["test/acc"] > 0.5
    assert agreement >= metrics["test/acc"] - 1e-6, "test/acc is a float32 of the same fraction"
    assert (run_dir / "contact_sheet.png").is_file()
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents*"))


def test_unreadable_files_are_listed_and_skipped_and_the_others_written(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    Image.new("L", (28, 28), 40).save(tmp_path / "good.png")
    Image.new("L", (40, 20), 200).save(tmp_path / "wide.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    run_dir = tmp_path / "run"
    run_in_process(run_dir, f"predict.input={tmp_path}", f"ckpt_path={checkpoint}", "predict.top_k=3")
    predictions = read_predictions(run_dir)
    assert sorted(Path(p).name for p in predictions) == ["good.png", "wide.png"]
    assert "broken.png" in (run_dir / "skipped.txt").read_text()
    with open(run_dir / "predictions.csv") as file:
        assert next(csv.reader(file)) == ["path", "name", "index", "class1", "prob1", "class2", "prob2",
                                          "class3", "prob3"]


def test_a_folder_of_only_unreadable_files_is_an_error(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="None of the 1 input"):
        run_in_process(tmp_path / "run", f"predict.input={tmp_path / 'in'}", f"ckpt_path={checkpoint}")


def test_a_checkpoint_of_another_task_names_the_task_it_was_trained_for(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    with pytest.raises(CheckpointError, match="trained for task=classify"):
        run_in_process(tmp_path / "run", "task=segment", f"predict.input={tmp_path / 'a.png'}",
                       f"ckpt_path={checkpoint}")


def test_a_checkpoint_without_a_run_config_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    with pytest.raises(CheckpointError, match="no visionlab run config"):
        run_in_process(tmp_path / "run", f"predict.input={tmp_path / 'a.png'}",
                       f"ckpt_path={tmp_path / 'foreign.ckpt'}")


def test_segmentation_writes_palette_masks_overlays_probabilities_and_class_fractions(
        tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    paths = write_scene_pngs(tmp_path / "scenes", sizes=(32, 44))
    run_dir = tmp_path / "run"
    run_in_process(run_dir, "task=segment", f"predict.input={tmp_path / 'scenes'}", f"ckpt_path={checkpoint}",
                   "predict.save_probabilities=true", "predict.batch_size=3", "task.inference=slide",
                   "task.crop_size=24", "task.tta.flip=true", "debug=smoke")
    for path in paths:
        size = Image.open(path).size
        with Image.open(run_dir / "masks" / f"{path.name}.png") as mask:
            assert mask.mode == "P" and mask.size == size
            assert mask.getpalette()[3:6] == [128, 0, 0]  # VOC: class 1 maroon
            classes = np.array(mask)
        assert Image.open(run_dir / "overlays" / f"{path.name}.png").size == size
        probabilities = np.load(run_dir / "probabilities" / f"{path.name}.npy")
        assert probabilities.shape == (11, size[1], size[0])
        assert np.allclose(probabilities.sum(0), 1, atol=1e-5)
        assert (probabilities.argmax(0) == classes).all()
    with open(run_dir / "class_fractions.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 11 and abs(sum(float(r["fraction"]) for r in rows) - 1) < 1e-4
    assert sum(int(r["pixels"]) for r in rows) == 2 * 32 * 32 + 2 * 44 * 44


def test_test_metrics_say_which_inference_mode_produced_them(tmp_path, tmp_path_factory, capsys):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    run_in_process(tmp_path / "run", "task=segment", "train=false", f"ckpt_path={checkpoint}",
                   "model.depth=2", "model.base_width=8", "task.inference=slide", "task.crop_size=24",
                   "task.tta.flip=true", "debug=smoke")
    assert "Test metrics from slide (crop 24, stride 16) + flip inference." in capsys.readouterr().out


@pytest.mark.slow
def test_slide_inference_matches_whole_and_flip_tta_does_not_lower_miou(tmp_path, tmp_path_factory):
    model = ["task=segment", "model.depth=3", "model.base_width=16"]
    checkpoint, _ = trained(tmp_path_factory.getbasetemp(), "unet_digit_scenes", *model,
                            "data.train_scenes=1000", "data.hflip=true",
                            "task.class_weights=[0.2,1,1,1,1,1,1,1,1,1,1]", "optimizer.lr=3e-3",
                            "scheduler=onecycle", "trainer.max_epochs=5")
    # test scenes of 48 px, larger than the 32 px training scenes: slide runs windows of the training size
    evaluate = [*model, "train=false", f"ckpt_path={checkpoint}", "data.image_size=48", *QUIET]
    whole = run_in_process(tmp_path / "whole", *evaluate)["test/miou"]
    slide = run_in_process(tmp_path / "slide", *evaluate, "task.inference=slide", "task.crop_size=32",
                           "task.stride=16")["test/miou"]
    flip = run_in_process(tmp_path / "flip", *evaluate, "task.tta.flip=true")["test/miou"]
    assert whole >= 0.15  # a network that segments: all-background scores ~0.08
    assert abs(slide - whole) <= 0.01
    assert flip >= whole


@pytest.mark.ddp
def test_two_processes_split_a_folder_and_write_each_image_once(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    images = tmp_path / "images"
    images.mkdir()
    for index in range(13):  # an odd count: the processes get unequal shares, nothing is repeated
        Image.new("L", (28, 28), index * 10).save(images / f"{index:02d}.png")
    (images / "broken.png").write_bytes(b"nope")
    done = python("run.py", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                  f"predict.input={images}", f"ckpt_path={checkpoint}", "predict.batch_size=4", "debug=smoke",
                  env={**os.environ, "PROJECT_ROOT": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "classify" / "runs").iterdir()
    with open(run_dir / "predictions.csv") as file:
        paths = [row["path"] for row in csv.DictReader(file)]
    assert sorted(Path(p).name for p in paths) == [f"{i:02d}.png" for i in range(13)]
    (skipped,) = (run_dir / "skipped.txt").read_text().splitlines()  # listed once
    assert skipped.startswith(str(images / "broken.png"))

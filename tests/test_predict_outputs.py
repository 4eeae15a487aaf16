"""Every input gets its own outputs, predicted at its own size: names that collide, folders of mixed
sizes, odd windows, checked file by file against the same images predicted one at a time."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.inputs import PredictionInputs, collate_inputs
from app.trained_model import build_from_checkpoint, load_checkpoint
from datamodules.image_files import output_names, read_image
from datamodules.style_images import StylePairs
from datamodules.transforms import preprocessing_transform
from tests.inference_helpers import digits_classifier, small_unet
from tests.run_py import run_dirs, run_py


def write_photo(path: Path, height: int, width: int, seed: int) -> Path:
    """A random RGB image at `path` (PNG or JPEG by its extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_output_names_keep_the_extension_and_relative_path_and_never_collide(tmp_path):
    names = output_names([tmp_path / "photo.jpg", tmp_path / "photo.png", tmp_path / "a" / "x.png",
                          tmp_path / "b" / "x.png", tmp_path / "a" / "x.jpg", tmp_path / "photo.jpg",
                          tmp_path / "Photo.JPG", tmp_path / "b" / ".." / "photo.png"])
    assert names == ["photo.jpg", "photo.png", "a/x.png", "b/x.png", "a/x.jpg", "photo.jpg~2",
                     "Photo.JPG~3", "photo.png~2"]  # listed twice, or equal on a case-insensitive disk
    assert output_names(["/data/a/x.png", "/other/x.png"]) == ["data/a/x.png", "other/x.png"]


def test_style_content_images_that_share_a_stem_get_their_own_stylised_files(tmp_path):
    contents = [str(write_photo(tmp_path / name, 40, 40, seed)) for seed, name in
                enumerate(("a/photo.jpg", "a/photo.png", "b/photo.jpg"))]
    pairs = StylePairs([*contents, "skimage:astronaut"], ["skimage:coffee"], [1.0], image_size=32,
                       style_scale=1.0, min_size=32)
    assert pairs.names == ["a/photo.jpg", "a/photo.png", "b/photo.jpg", "astronaut"]


def test_inputs_that_share_a_name_get_their_own_masks_overlays_probabilities_and_rows(
        tmp_path, tmp_path_factory):
    photos = tmp_path / "photos"
    sizes = {"photo.jpg": (30, 40), "photo.png": (36, 28), "sub/photo.png": (20, 24),
             "sub/photo.jpg": (33, 21)}
    for seed, (name, (height, width)) in enumerate(sizes.items()):
        write_photo(photos / name, height, width, seed)
    segmentation = small_unet(tmp_path_factory.getbasetemp())
    run_py(tmp_path, f"predict.input={photos}", f"ckpt_path={segmentation}",
           "predict.save_probabilities=true")
    (run_dir,) = run_dirs(tmp_path, "segment")
    for name, (height, width) in sizes.items():
        assert Image.open(run_dir / "masks" / f"{name}.png").size == (width, height)
        assert Image.open(run_dir / "overlays" / f"{name}.png").size == (width, height)
        assert np.load(run_dir / "probabilities" / f"{name}.npy").shape[1:] == (height, width)
    with open(run_dir / "class_fractions.csv") as file:
        counted = sum(int(row["pixels"]) for row in csv.DictReader(file))
    assert counted == sum(height * width for height, width in sizes.values())

    classifier, _ = digits_classifier(tmp_path_factory.getbasetemp())
    (photos / "list.txt").write_text("photo.jpg\nsub/photo.jpg\nphoto.jpg\n")  # one image listed twice
    run_py(tmp_path, f"predict.input={photos / 'list.txt'}", f"ckpt_path={classifier}")
    (run_dir,) = run_dirs(tmp_path, "classify")
    with open(run_dir / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["index"], row["name"]) for row in rows] == [
        ("0", "photo.jpg"), ("1", "sub/photo.jpg"), ("2", "photo.jpg~2")]


def test_a_batch_holds_each_image_at_its_own_size(tmp_path):
    paths = [write_photo(tmp_path / f"{i}.png", *size, seed=i)
             for i, size in enumerate([(20, 30), (31, 17), (20, 30), (8, 8)])]
    inputs = PredictionInputs(paths, lambda image: image.float(), "RGB")
    batch = collate_inputs([inputs[i] for i in range(len(inputs))])
    assert batch["index"] == [0, 1, 2, 3]
    shapes = {tuple(positions): tuple(images.shape) for positions, images in batch["groups"]}
    assert shapes == {(0, 2): (2, 3, 20, 30), (1,): (1, 3, 31, 17), (3,): (1, 3, 8, 8)}


def predicted_alone(checkpoint: Path, overrides: list[str]) -> Callable[[Path], torch.Tensor]:
    """(classes, H, W) probabilities of the checkpoint's network for one image predicted alone."""
    config, stored = load_checkpoint(str(checkpoint), overrides)
    datamodule, module = build_from_checkpoint(config, stored)
    preprocessing = datamodule.inference_preprocessing()
    transform = preprocessing_transform(preprocessing)

    def probabilities(path: Path) -> torch.Tensor:
        with torch.inference_mode():
            image = transform(read_image(path, preprocessing.mode))
            return module.inference_logits(image[None]).softmax(1)[0]

    return probabilities


@pytest.mark.parametrize("seed", [
    0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
])
def test_every_output_of_a_mixed_folder_equals_its_image_predicted_alone(seed, tmp_path, tmp_path_factory):
    rng = random.Random(seed)
    photos = tmp_path / "photos"
    stems, folders, extensions = ["img", "photo", "x"], ["", "a/", "a/b/", "c/"], [".png", ".jpg"]
    names = sorted({rng.choice(folders) + rng.choice(stems) + rng.choice(extensions) for _ in range(12)})
    names.append("top.png")  # one image at the top: the names are relative to `photos`
    for index, name in enumerate(names):
        write_photo(photos / name, rng.randint(9, 45), rng.randint(9, 45), seed=100 * seed + index)
    crop = rng.choice([11, 13, 16])
    stride = rng.randint(crop // 3, crop)
    inference = ["task.inference=slide", f"task.crop_size={crop}", f"task.stride={stride}",
                 f"task.tta.flip={rng.choice(['true', 'false'])}"]
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    run_py(tmp_path, f"predict.input={photos}", f"ckpt_path={checkpoint}", "predict.save_probabilities=true",
           f"predict.batch_size={rng.randint(2, 5)}", *inference)
    (run_dir,) = run_dirs(tmp_path, "segment")
    assert len(list((run_dir / "masks").rglob("*.png"))) == len(names)
    alone = predicted_alone(checkpoint, inference)
    for name in names:
        expected = alone(photos / name)
        written = np.load(run_dir / "probabilities" / f"{name}.npy")
        mask = np.array(Image.open(run_dir / "masks" / f"{name}.png"))
        assert written.shape == tuple(expected.shape)
        np.testing.assert_allclose(written, expected.numpy(), atol=1e-5)
        assert (mask == expected.argmax(0).numpy()).all()

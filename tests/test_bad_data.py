"""Bad data found before the first training step, named with the fix; images decoded the right way up."""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app import training
from core.errors import DataError, MissingDataError, VisionlabError
from datamodules.base import stratified_split
from datamodules.cifar import CIFAR10DataModule
from datamodules.image_files import ImageTooLargeError, UnreadableImageError, image_size, read_image
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mit67 import MIT67DataModule
from datamodules.pets import PetsDataModule
from datamodules.seg_folder import SegFolderDataModule
from datamodules.segmentation import MaskError
from datamodules.voc import VOCDataModule
from tests.classification_fakes import write_image_folder, write_mit67
from tests.fakes import write_fake_seg_folder
from tests.run_py import python

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ["data=image_folder", "data.num_classes=2", "model=simple_cnn", "data.image_size=32",
          "data.resize_size=36", "data.num_workers=0", "data.batch_size=4", "logger=none"]
SEG_FOLDER = ["task=segment", "data=seg_folder", "data.num_classes=3", "model=unet", "model.depth=2",
              "model.base_width=4", "data.image_size=32", "data.base_size=32", "data.batch_size=2",
              "data.num_workers=0", "logger=none"]
LOADER = {"batch_size": 4, "num_workers": 0, "pin_memory": False, "persistent_workers": False}


def run_py(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python run.py OVERRIDES debug=smoke` as a user runs it, with its outputs under `tmp_path`."""
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "COLUMNS": "400"}  # no wrapped paths
    return python("run.py", *overrides, "debug=smoke", env=env, timeout=300)


def image_folder(root: Path, **options: object) -> ImageFolderDataModule:
    """The image-folder datamodule at test sizes."""
    settings = {"num_classes": 2, "channels": 3, "image_size": 32, "resize_size": 36, **LOADER, **options}
    return ImageFolderDataModule(root=str(root), **settings)


def seg_folder(root: Path, **options: object) -> SegFolderDataModule:
    """The segmentation-folder datamodule at test sizes."""
    settings = {"num_classes": 3, "image_size": 32, "base_size": 32, **LOADER, **options}
    return SegFolderDataModule(root=str(root), **settings)


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` 8-bit grayscale pixels but holds none: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def sideways_photo(path: Path, fmt: str = "JPEG") -> np.ndarray:
    """A 60x40 (w x h) photo stored sideways with EXIF orientation 6; returns its upright pixels."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:10, :10] = (255, 0, 0)  # a red corner, top-left as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(path, format=fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))
    return np.asarray(ImageOps.exif_transpose(Image.open(path)))


# Images read right ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_portrait_phone_photo_is_read_upright_on_both_decode_paths(tmp_path, fmt):
    path = tmp_path / f"phone.{fmt.lower()}"
    upright = sideways_photo(path, fmt)
    assert upright.shape == (60, 40, 3)  # portrait once turned
    full = read_image(path)  # JPEG: torchvision.io; PNG: Pillow
    assert full.shape == (3, 60, 40)
    assert np.abs(full.permute(1, 2, 0).numpy().astype(int) - upright).max() <= 8
    assert full[0, :10, -10:].float().mean() > 200 and full[0, -10:, :10].float().mean() < 50  # red top-right
    reduced = read_image(path, min_size=16)  # JPEG: Pillow's draft (reduced-scale) decoding
    assert reduced.shape[1] > reduced.shape[2] and reduced[0, 0, -1] > 200
    assert image_size(path) == (40, 60)  # the header scan reports the upright size too


def test_16_bit_and_32_bit_grayscale_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 1000, 30000, 65535]], np.uint16)).save(tmp_path / "depth16.png")
    assert Image.open(tmp_path / "depth16.png").mode == "I;16"
    # round(v * 255 / 65535): 1000 -> 3.89 -> 4, 30000 -> 116.73 -> 117
    assert read_image(tmp_path / "depth16.png", "L").tolist() == [[[0, 4, 117, 255]]]
    rgb = read_image(tmp_path / "depth16.png", "RGB")
    assert rgb.shape == (3, 1, 4) and (rgb == rgb[:1]).all()
    values = np.array([[0, 2**20, 2**30, 2**31 - 1]], np.int32)
    Image.fromarray(values).save(tmp_path / "counts32.tif")
    assert Image.open(tmp_path / "counts32.tif").mode == "I"
    # round(v * 255 / (2**31 - 1)): 2**20 -> 0.000124 -> 0, 2**30 -> 127.50000006 -> 128
    assert read_image(tmp_path / "counts32.tif", "L").tolist() == [[[0, 0, 128, 255]]]


def test_decompression_bomb_is_named_and_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    bomb = png_header(tmp_path / "bomb.png", 20000, 10000)
    with pytest.raises(ImageTooLargeError, match=r"(?s)bomb\.png.*data\.max_image_pixels.*skip_bad_images"):
        read_image(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 80)).save(small)
    with pytest.raises(ImageTooLargeError, match=r"small\.png is 100x80 = 8,000 pixels.*=5,000"):
        read_image(small, max_pixels=5000)
    assert image_size(bomb, max_pixels=300_000_000) == (20000, 10000)  # a raised limit lets it through


# Checks before training: unreadable files --------------------------------------------------------

def test_every_unreadable_or_oversized_image_is_named_before_training_with_exit_2(tmp_path):
    root = write_image_folder(tmp_path / "photos")
    (root / "train" / "cat" / "2.jpg").write_bytes(b"\xff\xd8\xff truncated")
    png_header(root / "test" / "dog" / "5.jpg", 20000, 10000)
    done = run_py(tmp_path, *FOLDER, f"data.root={root}")
    assert done.returncode == 2, done.stderr[-3000:]
    message = " ".join(done.stderr.split())  # rich wraps the panel's lines
    assert "2 image(s) cannot be read (1 in train, 1 in test)" in message
    assert "cat/2.jpg" in message and "dog/5.jpg" in message
    assert "data.skip_bad_images=true" in message and "data.max_image_pixels" in message
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # stopped before any training


def test_skip_bad_images_drops_them_with_one_warning_and_keeps_every_other_image(tmp_path):
    root = write_image_folder(tmp_path / "photos", splits=("train", "val", "test"))
    (root / "train" / "cat" / "2.jpg").write_bytes(b"not an image")
    png_header(root / "val" / "dog" / "5.jpg", 20000, 10000)
    dm = image_folder(root, skip_bad_images=True)
    with pytest.warns(UserWarning, match=r"(?s)Skipping 2 image\(s\).*cat/2.jpg.*dog/5.jpg") as caught:
        dm.setup("fit")
    assert len([w for w in caught if "Skipping" in str(w.message)]) == 1
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (11, 11, 12)
    images = [dm.datasets[split][i][0] for split in ("train", "val") for i in range(len(dm.datasets[split]))]
    assert len(images) == 22 and all(image.shape == (3, 32, 32) for image in images)


# Checks before training: splits -----------------------------------------------------------------

def test_empty_val_folder_is_refused_with_the_fix(tmp_path, make_config):
    root = write_image_folder(tmp_path / "photos")
    (root / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"(?s)val folder .*val holds no images.*delete the folder to hold "
                                        r"out data.val_fraction"):
        training.train(make_config(*FOLDER, f"data.root={root}"))


def test_val_fraction_zero_without_a_val_folder_is_refused_before_a_run_without_validation(
    tmp_path, make_config
):
    root = write_image_folder(tmp_path / "photos")
    with pytest.raises(DataError, match=r"data.val_fraction=0.0 and no .*val folder.*e.g. 0.1"):
        training.train(make_config(*FOLDER, f"data.root={root}", "data.val_fraction=0.0"))
    with pytest.raises(DataError, match=r"data.val_fraction=0.0 .*Set data.val_fraction above 0"):
        seg_folder(write_fake_seg_folder(tmp_path / "seg"), val_fraction=0.0).setup("fit")


def test_empty_class_folder_in_train_is_named_with_the_fix(tmp_path):
    root = write_image_folder(tmp_path / "photos")
    (root / "train" / "bird").mkdir()
    with pytest.raises(DataError, match=r"(?s)bird.*add images to the empty class folder"):
        image_folder(root, num_classes=3).setup("fit")


def test_too_few_images_per_class_for_a_stratified_split_falls_back_and_names_a_val_fraction_that_works(
    tmp_path,
):
    # MIT67-like: 10 classes of 3 training images; 0.1 holds out 3 images, fewer than the classes.
    classes = tuple(f"room{i}" for i in range(10))
    dm = MIT67DataModule(root=str(write_mit67(tmp_path, classes, train_per_class=3, test_per_class=1)),
                         num_classes=10, channels=3, image_size=32, resize_size=36, **LOADER)
    total = sum(3 + label for label in range(10))  # write_mit67 gives class k 3 + k images
    with pytest.warns(UserWarning, match=r"(?s)holds out 8 of the 75 images.*10 classes.*"
                                         r"data.val_fraction from 0.134 to 0.866 would allow it.*"
                                         r"at random \(data.split_seed=0\)"):
        dm.setup("fit")
    assert total == 75 and len(dm.datasets["val"]) == 8 and len(dm.datasets["train"]) == 67
    kept = {path for path, _ in dm.datasets["train"].samples}
    assert kept.isdisjoint(path for path, _ in dm.datasets["val"].samples)
    single = r"at least 2 images of every class, and 1 class\(es\) have one \(b\)"
    with pytest.warns(UserWarning, match=single):
        kept_again, held = stratified_split([0, 0, 0, 1, 2, 2, 2], 0.5, seed=3, classes=["a", "b", "c"])
    assert sorted([*kept_again, *held]) == list(range(7)) and len(held) == 4
    with pytest.raises(DataError, match=r"data.val_size=50 holds out 50 of the 50 images.*below 50"):
        stratified_split([0, 1] * 25, 50, seed=0, key="data.val_size")


def test_drop_last_with_a_batch_larger_than_the_training_set_is_refused(tmp_path, make_config):
    root = write_image_folder(tmp_path / "photos")
    with pytest.raises(DataError, match=r"data.drop_last=true with data.batch_size=64 drops every training "
                                        r"image.*10 of the 10.*data.batch_size=10 or less"):
        training.train(make_config(*FOLDER, f"data.root={root}", "data.drop_last=true", "data.batch_size=64"))


# Segmentation ------------------------------------------------------------------------------------

def test_masks_of_another_size_than_their_image_are_all_named_before_training(tmp_path):
    root = write_fake_seg_folder(tmp_path / "seg", train=6, test=2)
    for name in ("img1.png", "img4.png"):
        mask = Image.open(root / "train" / "masks" / name)
        mask.resize((mask.width + 3, mask.height)).save(root / "train" / "masks" / name)
    with pytest.raises(MaskError, match=r"(?s)2 mask\(s\) of the train split differ in size.*img1\.png is "
                                        r"36x47, its image .*img1\.png 33x47.*img4\.png"):
        seg_folder(root).setup("fit")
    with pytest.raises(MaskError, match="img1.png"):
        seg_folder(root, check_masks=False).setup("fit")  # sizes are checked without the value scan


def test_split_whose_masks_are_all_ignore_is_refused_by_name_with_exit_2(tmp_path):
    root = write_fake_seg_folder(tmp_path / "seg", train=6, test=2)
    for mask in (root / "test" / "masks").iterdir():
        Image.fromarray(np.full(np.asarray(Image.open(mask)).shape, 255, np.uint8)).save(mask)
    done = run_py(tmp_path, *SEG_FOLDER, f"data.root={root}")
    assert done.returncode == 2, done.stderr[-3000:]
    message = " ".join(done.stderr.split())
    assert "Every pixel of every mask of the test split is ignored (values [255]" in message
    assert "data.ignore_index" in message and "Traceback" not in done.stderr
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_pets_border_only_trimaps_count_as_unlabelled_when_the_border_is_ignored(tmp_path):
    from tests.fakes import write_fake_pets

    pets = write_fake_pets(tmp_path)
    for mask in (pets / "annotations" / "trimaps").glob("*_1*.png"):  # the test split's
        Image.fromarray(np.full(np.asarray(Image.open(mask)).shape, 3, np.uint8)).save(mask)
    options = {"num_classes": 2, "image_size": 32, "base_size": 32, **LOADER}
    with pytest.raises(DataError, match=r"mask of the test split is ignored \(values \[3\]"):
        PetsDataModule(root=str(tmp_path), **options).setup("fit")
    PetsDataModule(root=str(tmp_path), border_as_class=True, **{**options, "num_classes": 3}).setup("fit")


# Data errors are DataErrors -----------------------------------------------------------------------

@pytest.mark.parametrize(("make", "expected"), [
    (lambda root: MIT67DataModule(root=str(root), num_classes=67, channels=3, image_size=32),
     r"MIT67 not found.*data.download=true"),
    (lambda root: image_folder(root), r"No training folder .*set data.root"),
    (lambda root: seg_folder(root), r"No folder .*set data.root"),
    (lambda root: VOCDataModule(root=str(root), num_classes=21), r"ImageSets/Segmentation.*data.download"),
    (lambda root: PetsDataModule(root=str(root), num_classes=2), r"trainval.txt does not exist.*data.root"),
    (lambda root: CIFAR10DataModule(root=str(root), num_classes=10, channels=3, image_size=32),
     r"no dataset under.*data.download=true"),
])
def test_missing_dataset_roots_are_data_errors_that_say_where_and_the_fix(tmp_path, make, expected):
    with pytest.raises(MissingDataError, match=expected) as caught:
        make(tmp_path / "nowhere").setup("fit")
    assert isinstance(caught.value, DataError) and isinstance(caught.value, VisionlabError)


def test_list_files_class_counts_and_bad_files_raise_data_errors(tmp_path):
    root = write_mit67(tmp_path / "mit67")
    (root / "TestImages.txt").write_text("\n")
    with pytest.raises(DataError, match=r"TestImages.txt lists no images: restore"):
        MIT67DataModule(root=str(root), num_classes=3, channels=3, image_size=32).setup("fit")
    with pytest.raises(DataError, match=r"data.num_classes=5 .* 2 classes"):
        image_folder(write_image_folder(tmp_path / "photos"), num_classes=5).setup("fit")
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(UnreadableImageError, match="bad.jpg") as caught:
        read_image(tmp_path / "bad.jpg")
    assert isinstance(caught.value, DataError)
    assert issubclass(MaskError, DataError)


def test_corrupt_mask_is_named(tmp_path):
    root = write_fake_seg_folder(tmp_path / "seg", train=6, test=2)
    (root / "test" / "masks" / "img1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(MaskError, match=r"Cannot read mask .*test/masks/img1\.png.*Replace the file"):
        seg_folder(root).setup("fit")
    with pytest.raises(MaskError, match=r"img1\.png"):
        seg_folder(root, check_masks=False).setup("fit")

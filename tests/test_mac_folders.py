"""Folders made on a Mac: AppleDouble `._<name>` files beside every image, `__MACOSX/` from a zip, `.DS_Store`
and other hidden files and folders are ignored by every reader, with one info line saying how many."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.ade20k import read_ade20k_split
from datamodules.image_files import visible_image_files
from datamodules.seg_folder import SegFolderDataModule
from datamodules.style_images import image_sources
from tests.classification_fakes import write_image_folder
from tests.fakes import write_fake_seg_folder
from tests.inference_helpers import digits_classifier
from tests.run_py import run_dirs, run_py


def apple_double(path: Path) -> Path:
    """The AppleDouble file macOS writes as `._<name>` beside a file on a foreign file system (or in a zip's
    __MACOSX/): the magic number, version 2, Finder info and an extended-attributes entry, 4096 bytes."""
    entries = [(9, 50, 3870), (2, 3920, 176)]  # Finder info (with the xattr header), resource fork
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", len(entries))
    header += b"".join(struct.pack(">III", *entry) for entry in entries)
    finder = b"\0" * 32 + b"\0\0" + b"ATTR" + struct.pack(">I", 0) + b"com.apple.quarantine\0" * 8
    fork = b"\0\0\1\0" + b"This resource fork intentionally left blank   "
    body = (header + finder).ljust(3920, b"\0") + fork
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.ljust(4096, b"\0"))
    return path


def macify(root: Path) -> int:
    """Clutter a folder as unzipping a Mac-made archive does (an AppleDouble file beside every image, their
    copies in `__MACOSX/`, `.DS_Store`) and as notebooks do (`.ipynb_checkpoints/` with an image in it);
    how many images it had."""
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    for image in images:
        apple_double(image.with_name(f"._{image.name}"))
        apple_double(root / "__MACOSX" / image.relative_to(root).parent / f"._{image.name}")
        (image.parent / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
    hidden = images[0].parent / ".ipynb_checkpoints"
    hidden.mkdir(exist_ok=True)
    Image.new("RGB", (40, 40)).save(hidden / "scratch-checkpoint.jpg")
    return len(images)


def test_the_apple_double_fixture_is_not_an_image_but_is_named_like_one(tmp_path):
    path = apple_double(tmp_path / "._photo.jpg")
    assert path.read_bytes()[:4] == b"\x00\x05\x16\x07" and path.stat().st_size == 4096
    try:
        Image.open(path)
        raise AssertionError("an AppleDouble file is not an image")
    except OSError:
        pass


def test_visible_image_files_leave_out_hidden_files_folders_and_macosx(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "sub" / "b.png")
    images = macify(tmp_path)

    found, ignored = visible_image_files(tmp_path)

    assert found == [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    assert ignored == 2 * images + 1, "beside each image, in __MACOSX/, in .ipynb_checkpoints/"


def test_an_image_folder_unzipped_from_a_mac_trains_and_says_how_many_files_it_ignored(tmp_path):
    root = write_image_folder(tmp_path / "photos", splits=("train", "val"), per_class=3)
    images = macify(root)  # root/__MACOSX/ lies beside the splits: never read, nothing to ignore
    (root / "train" / ".hidden_class").mkdir()  # a hidden folder is not a class
    Image.new("RGB", (40, 40)).save(root / "train" / ".hidden_class" / "x.jpg")
    ignored = images + 2  # the AppleDouble file beside each image, .ipynb_checkpoints/, .hidden_class/

    done = run_py(tmp_path / "project", "data=image_folder", f"data.root={root}", "data.num_classes=2",
                  "model=simple_cnn", "data.image_size=32", "data.resize_size=36", "data.num_workers=0",
                  "logger=none")

    output = done.stdout + done.stderr
    assert f"Ignored {ignored} image file(s) under {root} that are hidden or macOS metadata" in output
    assert output.count("Ignored ") == 1, "one line for the whole dataset"
    assert "cannot be read" not in output


def test_predict_on_a_mac_made_folder_predicts_only_the_images(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    inputs = tmp_path / "inputs"
    (inputs / "more").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    for name in ("one.png", "more/two.png"):
        Image.fromarray(pixels).save(inputs / name)
    images = macify(inputs)

    done = run_py(tmp_path / "project", f"predict.input={inputs}", f"ckpt_path={checkpoint}")

    with (run_dirs(tmp_path / "project")[0] / "predictions.csv").open() as handle:
        predicted = sorted(Path(row["path"]).relative_to(inputs).as_posix() for row in csv.DictReader(handle))
    assert predicted == ["more/two.png", "one.png"]
    assert f"Ignored {2 * images + 1} image file(s) under {inputs}" in done.stdout + done.stderr
    assert not (run_dirs(tmp_path / "project")[0] / "skipped.txt").exists()


def test_a_segmentation_folder_made_on_a_mac_pairs_only_its_images(tmp_path, caplog):
    root = write_fake_seg_folder(tmp_path / "seg")
    expected = {split: sorted((root / split / "images").iterdir()) for split in ("train", "test")}
    for split in ("train", "test"):
        for image in expected[split]:
            apple_double(image.with_name(f"._{image.name}"))
    datamodule = SegFolderDataModule(root=str(root), num_classes=3, image_size=32, base_size=32,
                                     batch_size=2, num_workers=0)

    with caplog.at_level("INFO"):
        datamodule.setup("fit")

    assert [image for image, _ in datamodule.datasets["test"].pairs] == expected["test"]
    assert "Ignored 8 image file(s)" in caplog.text


def test_style_images_and_ade20k_leave_out_apple_double_files(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 40)).save(tmp_path / name)
        apple_double(tmp_path / f"._{name}")
    assert [Path(s).name for s in image_sources(str(tmp_path))] == ["a.jpg", "b.jpg"]

    ade = tmp_path / "ADEChallengeData2016"
    (ade / "images" / "training").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(ade / "images" / "training" / "ADE_train_00000001.jpg")
    apple_double(ade / "images" / "training" / "._ADE_train_00000001.jpg")
    pairs, ignored = read_ade20k_split(ade, "training")
    assert [image.name for image, _ in pairs] == ["ADE_train_00000001.jpg"] and ignored == 1

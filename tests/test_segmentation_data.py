"""Segmentation datamodules on fake trees in the real on-disk layouts, and their bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ConfigError
from datamodules.ade20k import ADE20KDataModule
from datamodules.cifar import CIFAR10DataModule
from datamodules.cityscapes import CityscapesDataModule
from datamodules.digit_scenes import DigitScenesDataModule, compose_scenes
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mit67 import MIT67DataModule
from datamodules.mnist import MNISTDataModule
from datamodules.pets import PetsDataModule
from datamodules.seg_folder import SegFolderDataModule
from datamodules.segmentation import MaskError
from datamodules.voc import VOCDataModule
from tests.fakes import write_fake_pets, write_fake_seg_folder, write_fake_voc

SMALL = {"image_size": 32, "base_size": 40, "batch_size": 2}


def voc(root, **options) -> VOCDataModule:
    dm = VOCDataModule(str(root), **{"num_classes": 21, **SMALL, **options})
    dm.setup()
    return dm


def test_voc_mask_palette_values_become_class_indices(tmp_path):
    voc_dir = write_fake_voc(tmp_path)
    dm = voc(tmp_path)
    image_path, mask_path = dm.datasets["test"].pairs[0]
    _, mask = dm.datasets["test"][0]
    assert Image.open(mask_path).mode == "P"
    assert torch.equal(mask, torch.from_numpy(np.array(Image.open(mask_path))).long())
    assert mask_path.parent == voc_dir / "SegmentationClass"
    assert 255 in mask.unique().tolist() and mask.max() == 255


def test_voc_splits_follow_the_image_set_lists(tmp_path):
    write_fake_voc(tmp_path, train=10, val=4)
    dm = voc(tmp_path, val_fraction=0.2)
    names = {split: [image.stem for image, _ in ds.pairs] for split, ds in dm.datasets.items()}
    assert len(names["train"]) == 8 and len(names["val"]) == 2 and len(names["test"]) == 4
    assert all(name.startswith("2008_") for name in names["test"])
    assert not set(names["train"]) & set(names["val"])


def test_voc_evaluation_batches_are_full_resolution_padded_with_ignore(tmp_path):
    write_fake_voc(tmp_path, val=2)
    dm = voc(tmp_path)
    images, masks = next(iter(dm.test_dataloader()))
    assert images.shape == (2, 3, 47, 52)  # (40, 52) and (47, 33) padded to the larger of each side
    assert masks[1, :, 33:].eq(255).all() and masks[0, 40:].eq(255).all()
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)


def test_voc_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("datamodules.voc.VOCSegmentation", lambda *args, **kw: calls.append((args, kw)))
    VOCDataModule(str(tmp_path), download=True, num_classes=21).prepare_data()
    assert calls == [((str(tmp_path),), {"year": "2012", "image_set": "trainval", "download": True})]


DOWNLOADING = [VOCDataModule, PetsDataModule, MIT67DataModule, MNISTDataModule, CIFAR10DataModule]
NOT_DOWNLOADING = [SegFolderDataModule, CityscapesDataModule, ADE20KDataModule, ImageFolderDataModule]
SIZES = {"num_classes": 3, "channels": 3, "image_size": 32}


@pytest.mark.parametrize("datamodule", DOWNLOADING + NOT_DOWNLOADING, ids=lambda v: v.__name__)
def test_every_file_dataset_reads_its_root_with_the_home_folder_expanded(datamodule):
    dm = datamodule("~/somewhere", **SIZES)
    assert dm.root == Path("~/somewhere").expanduser() and not dm.download
    dm.prepare_data()  # no download asked: nothing to do


@pytest.mark.parametrize("datamodule", DOWNLOADING, ids=lambda v: v.__name__)
def test_a_dataset_with_a_download_fetches_it_in_prepare_data_when_asked(datamodule, monkeypatch):
    fetched = []
    monkeypatch.setattr(datamodule, "fetch", lambda self: fetched.append(self.root))
    datamodule("/data", **SIZES).prepare_data()
    datamodule("/data", download=True, **SIZES).prepare_data()
    assert fetched == [Path("/data")]


@pytest.mark.parametrize("datamodule", NOT_DOWNLOADING, ids=lambda v: v.__name__)
def test_a_dataset_without_a_download_refuses_data_download(datamodule):
    with pytest.raises(ConfigError, match=rf"data.download=true: {datamodule.__name__} has no download"):
        datamodule("/data", download=True, **SIZES)


def test_missing_voc_tree_says_where_it_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        voc(tmp_path)


def test_palette_png_converted_to_rgb_is_rejected_naming_the_file(tmp_path):
    voc_dir = write_fake_voc(tmp_path)
    bad = voc_dir / "SegmentationClass" / "2007_000002.png"
    Image.open(bad).convert("RGB").save(bad)
    with pytest.raises(MaskError, match=r"(?s)2007_000002\.png is a RGB image.*converted to RGB"):
        voc(tmp_path)


def test_num_classes_mismatch_is_reported_before_training(tmp_path):
    write_fake_voc(tmp_path)
    with pytest.raises(ValueError, match="data.num_classes=20 .* 21 classes .* Set data.num_classes=21"):
        voc(tmp_path, num_classes=20)


def test_pets_trimap_border_is_ignored_by_default(tmp_path):
    write_fake_pets(tmp_path)
    dm = PetsDataModule(str(tmp_path), num_classes=2, **SMALL)
    dm.setup()
    _, mask = dm.datasets["test"][0]
    assert set(mask.unique().tolist()) == {0, 1, 255}
    assert dm.classes == ["background", "pet"]


def test_pets_trimap_border_can_be_its_own_class(tmp_path):
    pets_dir = write_fake_pets(tmp_path)
    dm = PetsDataModule(str(tmp_path), num_classes=3, border_as_class=True, **SMALL)
    dm.setup()
    image_path, mask_path = dm.datasets["test"].pairs[0]
    trimap = torch.from_numpy(np.array(Image.open(mask_path))).long()
    _, mask = dm.datasets["test"][0]
    assert mask_path.parent == pets_dir / "annotations" / "trimaps"
    assert torch.equal(mask == 0, trimap == 2) and torch.equal(mask == 1, trimap == 1)
    assert torch.equal(mask == 2, trimap == 3)


def test_pets_border_as_class_needs_three_classes(tmp_path):
    write_fake_pets(tmp_path)
    with pytest.raises(ValueError, match="Set data.num_classes=3"):
        PetsDataModule(str(tmp_path), num_classes=2, border_as_class=True, **SMALL).setup()


def seg_folder(root, num_classes: int = 3) -> SegFolderDataModule:
    dm = SegFolderDataModule(str(root), num_classes=num_classes, **SMALL)
    dm.setup()
    return dm


def test_seg_folder_pairs_images_with_masks_and_holds_out_validation(tmp_path):
    write_fake_seg_folder(tmp_path, train=10)
    dm = seg_folder(tmp_path)
    assert len(dm.datasets["train"]) == 9 and len(dm.datasets["val"]) == 1 and len(dm.datasets["test"]) == 2
    image, mask = dm.datasets["test"][0]
    assert image.shape[-2:] == mask.shape and mask.dtype == torch.long


def test_mask_values_out_of_range_name_the_file_and_the_values(tmp_path):
    write_fake_seg_folder(tmp_path)
    bad = tmp_path / "train" / "masks" / "img3.png"
    values = np.array(Image.open(bad))
    values[:2, :2] = 7
    Image.fromarray(values).save(bad)
    with pytest.raises(MaskError, match=r"(?s)img3\.png: \[7\].*data.num_classes"):
        seg_folder(tmp_path)


def test_image_without_a_mask_is_named(tmp_path):
    write_fake_seg_folder(tmp_path)
    (tmp_path / "test" / "masks" / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img1\.png has no mask"):
        seg_folder(tmp_path)


def test_digit_scenes_are_deterministic_and_label_only_digit_pixels():
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 2:6, 3:5] = 1.0  # a bar: the only bright pixels of digit image 0
    labels = torch.tensor([4, 7])
    first = compose_scenes(images, labels, 5, 24, (8, 8), 1, seed=3, noise=0.0)
    second = compose_scenes(images, labels, 5, 24, (8, 8), 1, seed=3, noise=0.0)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    scenes, masks = first
    assert set(masks.unique().tolist()) <= {0, 5}  # label 4 -> class 5; the dark digit labels nothing
    assert torch.equal(masks == 5, scenes[:, 0] > 0.35)


def test_digit_scenes_datamodule_has_eleven_classes_and_held_out_scenes():
    dm = DigitScenesDataModule(image_size=24, digit_sizes=(10, 14), train_scenes=20, val_scenes=4,
                               test_scenes=4, batch_size=4)
    dm.setup()
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 24, 24) and masks.shape == (4, 24, 24)
    assert dm.classes[0] == "background" and len(dm.classes) == 11
    assert masks.max() <= 10 and (masks > 0).any()
    assert not torch.equal(dm.datasets["train"].tensors[0][:4], dm.datasets["test"].tensors[0])

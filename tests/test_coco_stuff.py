"""COCO-Stuff on a fake in cocostuff's layout: stuffthingmaps' raw ids become MMSegmentation's train ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import MissingDataError
from datamodules.coco_stuff import COCO_STUFF_CLASSES, COCOStuffDataModule, stuffthingmaps_label_map
from datamodules.segmentation import MaskError
from tests.style_fakes import STUFF_UNUSED, write_fake_coco_stuff

SMALL = {"image_size": 32, "base_size": 40, "batch_size": 2, "num_classes": 171}


def test_raw_ids_map_to_train_ids_as_mmsegmentation_converts_them():
    table = stuffthingmaps_label_map()
    # entries of MMSegmentation's clsID_to_trID (tools/dataset_converters/coco_stuff164k.py)
    for raw, train_id in {0: 0, 10: 10, 12: 11, 26: 24, 30: 26, 45: 40, 66: 60, 69: 61, 71: 62, 83: 73,
                          91: 80, 92: 81, 181: 170, 255: 255}.items():
        assert table[raw] == train_id
    assert all(table[raw] == 255 for raw in STUFF_UNUSED)
    assert len(COCO_STUFF_CLASSES) == 171 and COCO_STUFF_CLASSES[80] == "banner"
    assert sorted(table[:182][table[:182] != 255].tolist()) == list(range(171))


def test_coco_stuff_reads_train2017_and_evaluates_on_val2017(tmp_path):
    write_fake_coco_stuff(tmp_path, train=3, val=2)
    dm = COCOStuffDataModule(str(tmp_path), **SMALL)
    dm.setup()
    assert len(dm.datasets["train"]) == 3 and dm.datasets["val"].pairs == dm.datasets["test"].pairs
    image_path, mask_path = dm.datasets["test"].pairs[0]
    assert image_path.parent.name == "val2017" and image_path.stem == mask_path.stem
    raw = torch.from_numpy(np.array(Image.open(mask_path))).long()
    _, mask = dm.datasets["test"][0]
    assert torch.equal(mask, stuffthingmaps_label_map()[raw])
    assert (mask[:10, :10] == 0).all() and (mask[raw == 255] == 255).all()


def test_coco_stuff_takes_the_images_from_a_shared_coco_folder(tmp_path):
    write_fake_coco_stuff(tmp_path / "cocostuff", train=2, val=1)
    (tmp_path / "cocostuff" / "images").rename(tmp_path / "coco")
    dm = COCOStuffDataModule(str(tmp_path / "cocostuff"), image_root=str(tmp_path / "coco"), **SMALL)
    dm.setup()
    assert dm.datasets["train"].pairs[0][0].parent == tmp_path / "coco" / "train2017"


def test_coco_stuff_names_a_missing_folder_and_an_unused_raw_id(tmp_path):
    with pytest.raises(MissingDataError, match=r"stuffthingmaps_trainval2017.zip"):
        COCOStuffDataModule(str(tmp_path), **SMALL).setup()
    write_fake_coco_stuff(tmp_path, train=2, val=1)
    mask_path = next((tmp_path / "annotations" / "train2017").glob("*.png"))
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 11  # a raw id COCO-Stuff never uses
    Image.fromarray(mask).save(mask_path)
    with pytest.raises(MaskError, match=r"\[11\]"):
        COCOStuffDataModule(str(tmp_path), **SMALL).setup()

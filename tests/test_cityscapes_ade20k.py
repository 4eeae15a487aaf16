"""Cityscapes and ADE20K datamodules on fakes in their real layouts, and the cat_max_ratio crop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import Cityscapes

from core.errors import ConfigError, DataError
from core.figures import dataset_palette, voc_palette
from datamodules.ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataModule
from datamodules.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CityscapesDataModule
from datamodules.transforms import CatMaxRatioCrop
from tests.fakes import write_fake_ade20k, write_fake_cityscapes
from tests.run_py import run_dirs, run_py

SMALL = {"image_size": 32, "base_size": 40, "batch_size": 2}


def raw_mask(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).long()


def test_cityscapes_label_ids_become_the_19_train_ids(tmp_path):
    write_fake_cityscapes(tmp_path, train=3, val=2)
    dm = CityscapesDataModule(str(tmp_path), num_classes=19, **SMALL)
    dm.setup()
    _, mask_path = dm.datasets["test"].pairs[0]
    assert mask_path.name.endswith("_gtFine_labelIds.png") and "frankfurt" in mask_path.name
    raw, (_, mask) = raw_mask(mask_path), dm.datasets["test"][0]
    for label_id, train_id in ((7, 0), (8, 1), (26, 13), (33, 18), (0, 255)):  # road, ..., unlabeled
        assert (mask[raw == label_id] == train_id).all() and (raw == label_id).any()
    assert dm.classes[0] == "road" and dm.classes[-1] == "bicycle" and len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128) and CITYSCAPES_PALETTE[13] == (0, 0, 142)
    assert len(dm.datasets["train"]) == 3 and dm.datasets["val"].pairs == dm.datasets["test"].pairs


def test_cityscapes_lists_what_torchvisions_reader_lists_and_adds_coarse_on_request(tmp_path):
    write_fake_cityscapes(tmp_path, train=3, val=1, coarse=2)
    reader = Cityscapes(str(tmp_path), split="train", mode="fine", target_type="semantic")
    dm = CityscapesDataModule(str(tmp_path), num_classes=19, use_coarse=True, **SMALL)
    dm.setup()
    pairs = [(str(image), str(mask)) for image, mask in dm.datasets["train"].pairs]
    assert sorted(pairs[:3]) == sorted(zip(reader.images, (t[0] for t in reader.targets), strict=True))
    assert [mask.name.endswith("_gtCoarse_labelIds.png") for _, mask in dm.datasets["train"].pairs] == \
        [False] * 3 + [True] * 2


def test_a_missing_cityscapes_tree_names_the_layout(tmp_path):
    dm = CityscapesDataModule(str(tmp_path), num_classes=19, **SMALL)
    with pytest.raises(DataError, match="leftImg8bit/train/<city>/\\*_leftImg8bit.png"):
        dm.setup()


def test_ade20k_reduces_the_zero_label(tmp_path):
    write_fake_ade20k(tmp_path, train=2, val=3)
    dm = ADE20KDataModule(str(tmp_path), num_classes=150, **SMALL)
    dm.setup()
    _, mask_path = dm.datasets["val"].pairs[1]
    assert mask_path.relative_to(tmp_path).as_posix() == \
        "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"
    raw, (_, mask) = raw_mask(mask_path), dm.datasets["val"][1]
    assert torch.equal(mask[raw > 0], raw[raw > 0] - 1) and (mask[raw == 0] == 255).all()
    assert {0, 149, 255} <= set(mask.unique().tolist())  # classes 1 and 150 on disk, 0 ignored
    assert len(ADE20K_CLASSES) == len(ADE20K_PALETTE) == 150
    assert (ADE20K_CLASSES[0], ADE20K_CLASSES[149], ADE20K_PALETTE[0]) == ("wall", "flag", (120, 120, 120))
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.max() <= 255


def test_a_missing_ade20k_tree_names_the_layout(tmp_path):
    with pytest.raises(DataError, match="ADEChallengeData2016"):
        ADE20KDataModule(str(tmp_path), num_classes=150, **SMALL).setup()


def test_cat_max_ratio_accepts_only_crops_no_class_dominates():
    crop = CatMaxRatioCrop(2, cat_max_ratio=0.75)
    assert crop.acceptable(torch.tensor([[0, 0], [1, 1]]))
    assert not crop.acceptable(torch.tensor([[0, 0], [0, 1]]))  # 3/4 is not below 0.75
    assert not crop.acceptable(torch.tensor([[2, 2], [255, 255]]))  # one class alone
    assert crop.acceptable(torch.tensor([[2, 3], [255, 255]]))  # ignore pixels do not count


def test_cat_max_ratio_redraws_crops_that_one_class_fills():
    mask = torch.zeros(1, 64, 64, dtype=torch.long)
    mask[:, :40, :40] = 1
    image, mask = tv_tensors.Image(torch.rand(3, 64, 64)), tv_tensors.Mask(mask)
    judge = CatMaxRatioCrop(32, cat_max_ratio=0.75)

    def balanced_crops(cat_max_ratio: float) -> int:
        crop = CatMaxRatioCrop(32, cat_max_ratio)
        torch.manual_seed(0)
        return sum(judge.acceptable(crop(image, mask)[1]) for _ in range(50))

    assert balanced_crops(0.75) == 50 and balanced_crops(1.0) < 40  # ~70% of plain crops qualify


def test_cat_max_ratio_keeps_a_crop_with_labelled_pixels_over_a_void_one():
    mask = torch.full((1, 64, 64), 255, dtype=torch.long)
    mask[:, :20, :20] = 1  # one class alone: no crop qualifies; about a third of the crops hold some of it
    image, mask = tv_tensors.Image(torch.rand(3, 64, 64)), tv_tensors.Mask(mask)
    crop = CatMaxRatioCrop(32, cat_max_ratio=0.75)
    torch.manual_seed(0)
    void = sum(bool((crop(image, mask)[1] == 255).all()) for _ in range(200))
    assert void <= 10  # only when all 10 draws missed the block: 0.63 ** 10, about 1%


def test_cat_max_ratio_crop_keeps_image_and_mask_aligned_and_pads_small_images():
    mask = tv_tensors.Mask(torch.arange(20 * 30).view(1, 20, 30) % 7)
    image = tv_tensors.Image((mask.float() / 10).expand(3, -1, -1).clone())
    cropped_image, cropped_mask = CatMaxRatioCrop(24, 0.75, ignore_index=255)(image, mask)
    assert cropped_image.shape == (3, 24, 24) and cropped_mask.shape == (1, 24, 24)
    inside = cropped_mask != 255
    assert torch.equal(cropped_image[0][inside[0]], cropped_mask[inside].float() / 10)
    assert isinstance(cropped_mask, tv_tensors.Mask) and (~inside).any()


def test_cat_max_ratio_must_be_a_share():
    with pytest.raises(ConfigError, match="cat_max_ratio"):
        CityscapesDataModule("/nowhere", num_classes=19, cat_max_ratio=0.0)


def test_overlays_use_the_datasets_own_palette():
    cityscapes = CityscapesDataModule("/nowhere", num_classes=19)
    assert dataset_palette(cityscapes, 19)[13].tolist() == [0, 0, 142]  # car
    assert torch.equal(dataset_palette(object(), 21), voc_palette(21))


@pytest.mark.slow
@pytest.mark.parametrize("experiment, writer", [
    ("cityscapes_deeplabv3plus_r50", write_fake_cityscapes), ("ade20k_segformer_b0", write_fake_ade20k),
])
def test_the_presets_train_on_masks_that_are_mostly_void(experiment, writer, tmp_path):
    root = writer(tmp_path / "data")  # about 85% of each mask void: many 32 px crops hold no label
    done = run_py(tmp_path, f"experiment={experiment}", f"data.root={root}", "model.encoder_weights=null",
                  "trainer.limit_train_batches=4")
    assert "diverged" not in done.stderr
    (run_dir,) = run_dirs(tmp_path, "segment")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(math.isfinite(metrics[key]) for key in ("train/loss", "test/loss", "test/miou"))

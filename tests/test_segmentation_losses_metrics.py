"""Segmentation losses and metrics against values computed by hand, ignore-index pixels included."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from callbacks.class_iou import iou_from_confusion
from lightning_modules.losses import SegmentationLoss, dice_loss
from lightning_modules.segmentation import SegmentationModule

# Three pixels in a row: A (class 1, softmax [1/4, 3/4]), B (class 0, softmax [1/2, 1/2]), C ignored.
LOGITS = torch.tensor([[0.0, 0.0, 10.0], [math.log(3), 0.0, 0.0]]).view(1, 2, 1, 3)
TARGET = torch.tensor([[[1, 0, 255]]])
CE_A, CE_B = -math.log(3 / 4), math.log(2)


def test_cross_entropy_averages_over_non_ignored_pixels_only():
    loss = SegmentationLoss(ce_weight=1.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_A + CE_B) / 2)


def test_class_weights_weight_each_pixel_by_its_true_class():
    loss = SegmentationLoss(class_weights=[1.0, 3.0])(LOGITS, TARGET)
    assert loss.item() == pytest.approx((3 * CE_A + 1 * CE_B) / 4)


def test_dice_loss_uses_softmax_probabilities_and_skips_ignored_pixels():
    # class 0: 2*0.5 / (0.25 + 0.5 + 1) = 4/7; class 1: 2*0.75 / (0.75 + 0.5 + 1) = 2/3
    assert dice_loss(LOGITS, TARGET, smooth=0.0).item() == pytest.approx(1 - (4 / 7 + 2 / 3) / 2)


def test_dice_loss_of_a_perfect_prediction_is_zero():
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = 100 * nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_weighted_sum_of_cross_entropy_and_dice():
    loss = SegmentationLoss(ce_weight=1.0, dice_weight=0.5, dice_smooth=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx((CE_A + CE_B) / 2 + 0.5 * 8 / 21)


def test_loss_weights_must_leave_something_to_minimise():
    with pytest.raises(ValueError, match="at least one > 0"):
        SegmentationLoss(ce_weight=0.0, dice_weight=0.0)


def make_module(num_classes: int = 3, **options) -> SegmentationModule:
    optimizer = partial(torch.optim.SGD, lr=0.1)
    return SegmentationModule(nn.Identity(), num_classes, optimizer=optimizer, **options)


def test_auxiliary_loss_is_added_with_its_weight():
    module = make_module(num_classes=2, aux_weight=0.25)
    aux = torch.zeros_like(LOGITS)  # every pixel [1/2, 1/2]: ln 2 each
    loss = module.compute_loss({"out": LOGITS, "aux": aux}, TARGET)
    assert loss.item() == pytest.approx((CE_A + CE_B) / 2 + 0.25 * math.log(2))


def test_metrics_ignore_void_pixels_and_leave_absent_classes_out_of_the_mean():
    metrics = make_module().make_metrics()
    target = torch.tensor([[[0, 0, 1, 1], [1, 0, 0, 255]]])
    preds = torch.tensor([[[0, 0, 1, 1], [1, 1, 0, 2]]])  # the 2 sits on a void pixel: not counted
    values = metrics(preds, target)
    # class 0: TP 3, FN 1 -> 3/4; class 1: TP 3, FP 1 -> 3/4; class 2 absent everywhere
    assert values["miou"].item() == pytest.approx(0.75)
    assert values["pixel_acc"].item() == pytest.approx(6 / 7)
    assert values["dice"].item() == pytest.approx(6 / 7)  # 2*3 / (2*3 + 1) for both classes


def test_mean_iou_comes_from_the_confusion_of_the_whole_dataset_not_a_mean_of_batches():
    metrics = make_module(num_classes=2).make_metrics()
    metrics.update(torch.zeros(1, 1, 4, dtype=torch.long), torch.zeros(1, 1, 4, dtype=torch.long))
    metrics.update(torch.ones(1, 1, 4, dtype=torch.long), torch.tensor([[[0, 1, 1, 1]]]))
    # global: class 0 TP 4 FN 1 -> 4/5, class 1 TP 3 FP 1 -> 3/4; batch means would give 0.6875
    assert metrics.compute()["miou"].item() == pytest.approx((0.8 + 0.75) / 2)


def test_per_class_iou_from_confusion_is_nan_for_absent_classes():
    confusion = torch.tensor([[3, 1, 0], [0, 3, 0], [0, 0, 0]])  # rows: true, columns: predicted
    iou = iou_from_confusion(confusion)
    assert iou[:2].tolist() == pytest.approx([3 / 4, 3 / 4])
    assert torch.isnan(iou[2])


def test_network_with_the_wrong_class_count_is_reported():
    module = make_module(num_classes=3)
    with pytest.raises(ValueError, match="model.num_classes match data.num_classes"):
        module(torch.zeros(1, 2, 4, 4))

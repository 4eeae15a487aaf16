"""Segmentation losses and metrics against values computed by hand, ignore-index pixels included."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from callbacks.class_iou import class_scores, iou_from_confusion, score_rows, summary
from core.errors import ConfigError
from lightning_modules.losses import LOSSES, SegmentationLoss
from lightning_modules.segmentation import SegmentationModule

# Three pixels in a row: A (class 1, softmax [1/4, 3/4]), B (class 0, softmax [1/2, 1/2]), C ignored.
LOGITS = torch.tensor([[0.0, 0.0, 10.0], [math.log(3), 0.0, 0.0]]).view(1, 2, 1, 3)
TARGET = torch.tensor([[[1, 0, 255]]])
CE_A, CE_B = -math.log(3 / 4), math.log(2)


def loss_of(losses: dict[str, float], **options) -> float:
    """The value of a SegmentationLoss on the three-pixel example."""
    return SegmentationLoss(losses, ignore_index=255, **options)(LOGITS, TARGET).item()


def test_cross_entropy_averages_over_non_ignored_pixels_only():
    assert loss_of({"ce": 1.0}) == pytest.approx((CE_A + CE_B) / 2)


def test_cross_entropy_of_a_batch_with_every_pixel_ignored_is_zero_with_zero_gradients():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    for weights in (None, torch.tensor([1.0, 2.0, 3.0])):
        loss = SegmentationLoss({"ce": 1.0}, ignore_index=255, class_weights=weights)(
            logits, torch.full((2, 4, 4), 255))
        loss.backward()
        assert loss.item() == 0.0 and logits.grad.abs().max() == 0


def test_class_weights_weight_each_pixel_by_its_true_class():
    assert loss_of({"ce": 1.0}, class_weights=[1.0, 3.0]) == pytest.approx((3 * CE_A + 1 * CE_B) / 4)


# Per class over the two valid pixels: class 0 P = (1/4, 1/2), G = (0, 1); class 1 P = (3/4, 1/2), G = (1, 0).
DICE_0, DICE_1 = 2 * 0.5 / (0.75 + 1), 2 * 0.75 / (1.25 + 1)  # 4/7, 2/3
JACCARD_0, JACCARD_1 = 0.5 / (1.75 - 0.5), 0.75 / (2.25 - 0.75)  # 2/5, 1/2


def test_dice_uses_softmax_probabilities_and_skips_ignored_pixels():
    assert loss_of({"dice": 1.0}) == pytest.approx(1 - (DICE_0 + DICE_1) / 2)


def test_dice_class_weights_weight_each_class_term():
    expected = (1 * (1 - DICE_0) + 3 * (1 - DICE_1)) / 4
    assert loss_of({"dice": 1.0}, class_weights=[1.0, 3.0]) == pytest.approx(expected)


def test_jaccard_is_one_minus_soft_iou_per_class():
    assert loss_of({"jaccard": 1.0}) == pytest.approx(1 - (JACCARD_0 + JACCARD_1) / 2)


def test_tversky_weighs_false_positives_and_false_negatives():
    # class 0: TP 0.5, FP 0.25, FN 0.5; class 1: TP 0.75, FP 0.5, FN 0.25
    score_0, score_1 = 0.5 / (0.5 + 0.3 * 0.25 + 0.7 * 0.5), 0.75 / (0.75 + 0.3 * 0.5 + 0.7 * 0.25)
    options = {"tversky": {"alpha": 0.3, "beta": 0.7, "gamma": 1.0}}
    assert loss_of({"tversky": 1.0}, options=options) == pytest.approx(1 - (score_0 + score_1) / 2)
    assert loss_of({"tversky": 1.0}) == pytest.approx(loss_of({"dice": 1.0}))  # alpha = beta = 1/2


def sigmoid_focal(logit: float, positive: bool, gamma: float = 2.0) -> float:
    """Binary focal loss of one logit: (1 - p_t)^gamma * -log p_t."""
    p = 1 / (1 + math.exp(-logit))
    p_t = p if positive else 1 - p
    return (1 - p_t) ** gamma * -math.log(p_t)


def test_focal_is_smps_one_vs_rest_sigmoid_focal_loss_over_valid_pixels():
    # pixel A has logits (0, ln 3) and class 1; pixel B logits (0, 0) and class 0
    class_0 = (sigmoid_focal(0.0, False) + sigmoid_focal(0.0, True)) / 2
    class_1 = (sigmoid_focal(math.log(3), True) + sigmoid_focal(0.0, False)) / 2
    assert loss_of({"focal": 1.0}) == pytest.approx((class_0 + class_1) / 2)


def test_lovasz_softmax_by_hand():
    # class 0: errors B 1/2 (fg), A 1/4 -> gradient (1, 0): 1/2; class 1: errors B 1/2, A 1/4 (fg)
    # -> Jaccard after each (1/2, 1), gradient (1/2, 1/2): 3/8
    assert loss_of({"lovasz": 1.0}) == pytest.approx((0.5 + 0.375) / 2)


def test_soft_cross_entropy_matches_torch_label_smoothing_over_valid_pixels():
    expected = F.cross_entropy(LOGITS, TARGET, ignore_index=255, label_smoothing=0.1).item()
    assert loss_of({"soft_ce": 1.0}, options={"soft_ce": {"smooth_factor": 0.1}}) == pytest.approx(expected)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_ignores_what_the_network_says_on_ignored_pixels(name):
    loss = SegmentationLoss({name: 1.0}, ignore_index=255, options={"ohem_ce": {"min_kept": 1}})
    other = LOGITS.clone()
    other[..., 2] = torch.tensor([-7.0, 4.0]).view(1, 2, 1)  # pixel C is ignored
    assert loss(other, TARGET).item() == pytest.approx(loss(LOGITS, TARGET).item())


LOSS_OPTIONS = [(name, {}) for name in LOSSES] + [("lovasz", {"per_image": True})]
WEIGHTS = [1.0, 2.0, 0.5]


def segmentation_loss(name: str, options: dict) -> SegmentationLoss:
    """One named loss, class-weighted where it takes class weights, with `options`."""
    from lightning_modules.losses import CLASS_WEIGHTED

    return SegmentationLoss({name: 1.0}, ignore_index=255, options={name: options},
                            class_weights=WEIGHTS if name in CLASS_WEIGHTED else None)


@pytest.mark.parametrize(("name", "options"), LOSS_OPTIONS)
def test_every_loss_is_zero_with_a_zero_gradient_on_a_batch_without_a_labelled_pixel(name, options):
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    loss = segmentation_loss(name, options)(logits, torch.full((2, 5, 6), 255))
    loss.backward()
    assert loss.shape == () and loss.item() == 0.0  # MMSegmentation's: the sum over (0 + eps) pixels
    assert torch.isfinite(logits.grad).all() and not logits.grad.any()


@pytest.mark.parametrize(("name", "options"), LOSS_OPTIONS)
def test_an_image_without_a_labelled_pixel_adds_nothing_to_a_per_image_loss(name, options):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    target[1] = 255  # the second image is all void
    loss = segmentation_loss(name, options)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and not logits.grad[1].any()
    alone = loss(logits[:1], target[:1])
    # a per-image loss averages over the images, the void one counting 0; the others pool the pixels
    assert value.item() == pytest.approx(alone.item() / 2 if options.get("per_image") else alone.item())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_equals_torchs_weighted_mean_and_is_zero_where_no_pixel_has_weight(label_smoothing):
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255
    loss = SegmentationLoss({"ce": 1.0}, class_weights=WEIGHTS,
                            options={"ce": {"label_smoothing": label_smoothing}})
    expected = F.cross_entropy(logits, target, weight=torch.tensor(WEIGHTS), ignore_index=255,
                               label_smoothing=label_smoothing)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    only_class_0 = torch.where(target == 255, target, 0)  # every labelled pixel of a class weighted 0
    unweighted = SegmentationLoss({"ce": 1.0}, class_weights=[0.0, 1.0, 1.0])
    assert unweighted(logits, only_class_0).item() == 0.0


def two_class_logits(true_probs: list[float]) -> torch.Tensor:
    """(1, 2, 1, n) logits whose softmax gives class 1 the probabilities `true_probs`."""
    p = torch.tensor(true_probs)
    return torch.stack([torch.log1p(-p), torch.log(p)]).view(1, 2, 1, -1)


def test_ohem_keeps_pixels_below_the_threshold_and_at_least_min_kept():
    probs = [0.9, 0.6, 0.8, 0.3, 0.1]  # the last pixel is ignored
    logits, target = two_class_logits(probs), torch.tensor([[[1, 1, 1, 1, 255]]])
    below = SegmentationLoss({"ohem_ce": 1.0}, options={"ohem_ce": {"threshold": 0.7, "min_kept": 1}})
    assert below(logits, target).item() == pytest.approx(-(math.log(0.6) + math.log(0.3)) / 2)
    at_least = SegmentationLoss({"ohem_ce": 1.0}, options={"ohem_ce": {"threshold": 0.7, "min_kept": 3}})
    expected = -(math.log(0.6) + math.log(0.8) + math.log(0.3)) / 3  # the 3 least confident
    assert at_least(logits, target).item() == pytest.approx(expected)


def test_weighted_sum_of_named_losses():
    expected = (CE_A + CE_B) / 2 + 0.5 * (1 - (DICE_0 + DICE_1) / 2)
    assert loss_of({"ce": 1.0, "dice": 0.5}) == pytest.approx(expected)
    assert loss_of({"focal": 1.0, "lovasz": 1.0}) == pytest.approx(loss_of({"focal": 1}) + 0.4375)


@pytest.mark.parametrize("losses, message", [
    ({"ce": 0.0, "dice": 0.0}, "at least one of them > 0"),
    ({"ce": -1.0, "dice": 2.0}, "at least one of them > 0"),
    ({"cross_entropy": 1.0}, "Unknown loss"),
])
def test_loss_weights_and_names_are_checked(losses, message):
    with pytest.raises(ConfigError, match=message):
        SegmentationLoss(losses)


def test_unknown_loss_option_names_the_key():
    with pytest.raises(ConfigError, match="task.loss_options.focal"):
        SegmentationLoss({"focal": 1.0}, options={"focal": {"gama": 2.0}})


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


# rows: true class, columns: predicted. Class 2 is predicted once but never true; class 3 absent.
CONFUSION = torch.tensor([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_per_class_iou_accuracy_and_dice_by_hand():
    scores = class_scores(CONFUSION)
    assert scores["IoU"][:3].tolist() == pytest.approx([5 / 8, 3 / 7, 0.0])
    assert scores["Acc"][:2].tolist() == pytest.approx([5 / 6, 3 / 6])
    assert scores["Dice"][:3].tolist() == pytest.approx([10 / 13, 6 / 10, 0.0])
    assert torch.isnan(scores["Acc"][2])  # no ground truth: accuracy undefined, as in MMSegmentation
    assert all(torch.isnan(scores[name][3]) for name in ("IoU", "Acc", "Dice"))


def test_summary_matches_mmsegmentations_definitions():
    values = summary(CONFUSION)
    assert values["aAcc"] == pytest.approx(8 / 12)
    assert values["mIoU"] == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)  # predicted-only class counts as 0
    assert values["mAcc"] == pytest.approx((5 / 6 + 3 / 6) / 2)
    assert values["mDice"] == pytest.approx((10 / 13 + 6 / 10 + 0) / 3)


def test_score_rows_print_percentages_and_mark_undefined_scores():
    rows = score_rows(["a", "b", "c", "d"], CONFUSION)
    assert rows[0] == ("a", "62.50", "83.33", "76.92", "6")
    assert rows[2] == ("c", "0.00", "-", "0.00", "0")


def test_network_with_the_wrong_class_count_is_reported():
    module = make_module(num_classes=3)
    with pytest.raises(ValueError, match="model.num_classes match data.num_classes"):
        module(torch.zeros(1, 2, 4, 4))

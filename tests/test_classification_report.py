"""The classification report: torchmetrics' precision, recall, F1, AP and AUROC against scikit-learn's, on
random predictions, through a test run and through a labelled predict run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    precision_recall_fscore_support,
    roc_auc_score,
)

from app.trained_model import build_from_checkpoint, load_checkpoint
from lightning_modules.metrics import ClassificationReport, curve_metrics, macro_over_present, report_metrics
from tests.inference_helpers import QUIET, digits_classifier, run_in_process, to_png, write_labelled_digits
from tests.test_predict import read_predictions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's zero-division warnings


def random_case(seed: int, classes: int = 7, samples: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets where one class is never a target, one never predicted, one in neither."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes - 2, (samples,), generator=g)  # the last two: never targets
    logits = torch.randn(samples, classes, generator=g) + 2.5 * torch.nn.functional.one_hot(targets, classes)
    logits[:, 0] -= 50  # class 0: never predicted
    logits[:, classes - 1] -= 50  # the last class: neither predicted nor a target
    logits[seed % samples, classes - 2] += 100  # the one before: predicted once, never a target
    return logits, targets


def scored(logits: torch.Tensor, targets: torch.Tensor, batch: int = 17) -> dict[str, torch.Tensor]:
    """The report metrics computed over uneven batches, the first of them all right (the case that
    fooled automatic compute groups)."""
    metrics = report_metrics(logits.shape[1])
    right = torch.nn.functional.one_hot(targets[:5], logits.shape[1]).float()
    metrics.update(right, targets[:5])
    for start in range(5, len(targets), batch):
        metrics.update(logits[start:start + batch], targets[start:start + batch])
    return metrics.compute()


@pytest.mark.parametrize("seed", range(6))
def test_report_prints_and_scores_exactly_as_scikit_learn(seed):
    logits, targets = random_case(seed)
    names = [f"class_{i}" if i % 2 else f"c{i}" for i in range(logits.shape[1])]
    report = ClassificationReport.from_computed(scored(logits, targets), names)

    predicted = torch.cat([targets[:5], logits[5:].argmax(1)]).numpy()
    y = targets.numpy()
    labels = sorted(set(y) | set(predicted))
    expected = classification_report(y, predicted, target_names=[names[i] for i in labels], digits=4)
    assert report.text() == expected
    for average in ("macro", "weighted"):
        reference = precision_recall_fscore_support(y, predicted, average=average, zero_division=0)[:3]
        assert report.averages[average] == pytest.approx(reference, abs=1e-6)
    per_class = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    for row, index in enumerate(labels):
        assert report.precision[index] == pytest.approx(per_class[0][row], abs=1e-6)
        assert report.recall[index] == pytest.approx(per_class[1][row], abs=1e-6)
        assert report.f1[index] == pytest.approx(per_class[2][row], abs=1e-6)
        assert report.support[index] == per_class[3][row]


def test_report_metrics_name_the_averages_and_only_the_classes_present():
    logits, targets = random_case(0, classes=4, samples=40)
    report = ClassificationReport.from_computed(scored(logits, targets), ["a", "b", "c", "d"])
    averages, per_class = report.metrics("test", "test_per_class")
    scores = ("precision", "recall", "f1")
    assert set(averages) == {f"test/{s}_{a}" for s in scores for a in ("macro", "weighted")}
    assert "test_per_class/f1_a" in per_class and "test_per_class/support_b" in per_class
    assert not any(key.endswith("_d") for key in per_class)  # in neither targets nor predictions


@pytest.mark.parametrize("binned", [False, True])
def test_macro_ap_and_auroc_equal_scikit_learns_over_the_classes_in_the_targets(binned):
    logits, targets = random_case(3, classes=5, samples=300)
    if binned:  # scores spread over [0, 1], which 1000 equal bins resolve
        logits = torch.randn(300, 5, generator=torch.Generator().manual_seed(0)) + logits.clamp(-1, 2.5)
    metrics = curve_metrics(5, 1000 if binned else None)
    for start in range(0, 300, 64):
        metrics.update(logits[start:start + 64], targets[start:start + 64])
    computed = metrics.compute()
    support = torch.bincount(targets, minlength=5).tolist()

    probabilities = logits.softmax(1).double().numpy()
    present = [c for c in range(5) if support[c]]
    one_hot = np.eye(5)[targets.numpy()]
    ap = np.mean([average_precision_score(one_hot[:, c], probabilities[:, c]) for c in present])
    auroc = np.mean([roc_auc_score(one_hot[:, c], probabilities[:, c]) for c in present])
    tolerance = 5e-3 if binned else 1e-5  # binned scores approximate the exact curves
    assert macro_over_present(computed["ap"], support) == pytest.approx(ap, abs=tolerance)
    assert macro_over_present(computed["auroc"], support) == pytest.approx(auroc, abs=tolerance)


def test_macro_auroc_matches_scikit_learns_multiclass_one_vs_rest_when_every_class_occurs():
    g = torch.Generator().manual_seed(1)
    targets = torch.arange(200) % 4
    logits = torch.randn(200, 4, generator=g) + torch.nn.functional.one_hot(targets, 4)
    metrics = curve_metrics(4)
    metrics.update(logits, targets)
    probabilities = logits.softmax(1).double().numpy()
    expected = roc_auc_score(targets.numpy(), probabilities, multi_class="ovr", average="macro")
    assert macro_over_present(metrics.compute()["auroc"], [50] * 4) == pytest.approx(expected, abs=1e-5)


def test_a_test_run_prints_and_records_scikit_learns_report_of_its_predictions(tmp_path, tmp_path_factory,
                                                                                 capsys):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    metrics = run_in_process(tmp_path / "run", *QUIET, "train=false", f"ckpt_path={checkpoint}")
    printed = capsys.readouterr().out

    config, stored = load_checkpoint(str(checkpoint), [])
    datamodule, module = build_from_checkpoint(config, stored)
    datamodule.setup("test")
    with torch.no_grad():
        batches = [(module(x), y) for x, y in datamodule.test_dataloader()]
    logits, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]).numpy()
    predicted = logits.argmax(1).numpy()
    assert classification_report(targets, predicted, digits=4) in printed
    scores = precision_recall_fscore_support(targets, predicted, zero_division=0)
    for name, values in zip(("precision", "recall", "f1"), scores, strict=False):
        assert [metrics[f"test_per_class/{name}_{c}"] for c in range(10)] == pytest.approx(values, abs=1e-6)
    assert metrics["test/f1_macro"] == pytest.approx(scores[2].mean(), abs=1e-6)
    probabilities = logits.softmax(1).double().numpy()
    assert metrics["test/auroc_macro"] == pytest.approx(
        roc_auc_score(targets, probabilities, multi_class="ovr"), abs=1e-5)
    assert metrics["test/ap_macro"] == pytest.approx(
        average_precision_score(np.eye(10)[targets], probabilities), abs=1e-5)


def test_predicting_folders_named_by_class_reports_scores_of_the_predictions(tmp_path, tmp_path_factory,
                                                                             capsys):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    labels = write_labelled_digits(tmp_path / "digits")
    run_dir = tmp_path / "run"
    run_in_process(run_dir, *QUIET, f"predict.input={tmp_path / 'digits'}", f"ckpt_path={checkpoint}")

    predictions = read_predictions(run_dir)
    y = [labels[path] for path in predictions]
    predicted = [int(predictions[path]) for path in predictions]
    expected = classification_report(y, predicted, digits=4)
    assert (run_dir / "classification_report.txt").read_text() == expected
    assert expected in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["predict/acc"] == pytest.approx(np.mean(np.array(y) == np.array(predicted)))
    assert metrics["predict/f1_macro"] == pytest.approx(
        precision_recall_fscore_support(y, predicted, average="macro", zero_division=0)[2], abs=1e-6)
    assert "cost/parameters" in metrics  # the run's costs beside the scores, neither overwriting the other


def test_predicting_a_folder_partly_named_by_class_says_why_there_is_no_report(tmp_path, tmp_path_factory,
                                                                               capsys):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    write_labelled_digits(tmp_path / "digits", count=6)
    to_png(torch.zeros(1, 28, 28), 0.0, 1.0, tmp_path / "digits" / "unsorted" / "x.png")
    run_dir = tmp_path / "run"
    run_in_process(run_dir, *QUIET, f"predict.input={tmp_path / 'digits'}", f"ckpt_path={checkpoint}")
    printed = capsys.readouterr().out
    assert "No classification report: 1 of 7 inputs are not in a folder named by a class" in printed
    assert not (run_dir / "classification_report.txt").exists()

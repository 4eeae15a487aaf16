"""The classification LightningModule and its TensorBoard callbacks."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from app import training
from callbacks.confusion_matrix import per_class_accuracy
from lightning_modules.classification import ClassificationModule


def test_per_class_accuracy_is_the_diagonal_over_the_true_counts():
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    accuracy = per_class_accuracy(confusion)
    assert accuracy[:2].tolist() == [0.75, 0.5]
    assert torch.isnan(accuracy[2])  # absent class: no accuracy rather than a fake 0


def test_top5_accuracy_is_not_merged_with_top1_when_a_first_batch_is_all_right():
    module = ClassificationModule(nn.Identity(), 10, partial(torch.optim.SGD, lr=0.1))
    metrics = module.make_metrics()
    right = torch.eye(10)[:4]  # scores of 4 images, each top-1 right
    metrics.update(right, torch.arange(4))
    second_best = torch.eye(10)[:4] + 0.5 * torch.eye(10)[1:5]  # the true class (1..4) ranks second
    metrics.update(second_best, torch.arange(1, 5))
    values = metrics.compute()
    assert values["acc"] == pytest.approx(0.5)  # 4 of 8
    assert values["acc_top5"] == pytest.approx(1.0)  # 8 of 8


def test_lbfgs_reevaluations_count_each_batch_once_in_metrics():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    module = ClassificationModule(net, 3, partial(torch.optim.LBFGS, lr=1.0, max_iter=5))
    updates, evaluations = [], []
    update = module.train_metrics.update
    module.train_metrics.update = lambda *args: (updates.append(1), update(*args))
    loss = module.compute_loss
    module.compute_loss = lambda *args: (evaluations.append(1), loss(*args))[1]
    data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert len(updates) == 3
    assert len(evaluations) > 3  # L-BFGS did evaluate each batch several times


def fit_counting_metric_updates(module: ClassificationModule, batches: int) -> tuple[dict, set[str]]:
    """Fit one epoch (`batches` training, 2 validation batches): metric updates per stage, logged names."""
    counts = {"train": 0, "val": 0}
    for stage in counts:
        metrics = getattr(module, f"{stage}_metrics")
        update = metrics.update

        def counted(*args, stage=stage, update=update):
            counts[stage] += 1
            update(*args)

        metrics.update = counted
    data = TensorDataset(torch.randn(4 * batches, 4), torch.randint(0, 3, (4 * batches,)))
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=2, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return counts, set(trainer.callback_metrics)



def test_epoch_metrics_cover_every_batch_of_every_epoch(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    module = ClassificationModule(net, 3, partial(torch.optim.SGD, lr=0.0))  # fixed predictions
    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 3, (40,)))
    expected = (net(data.tensors[0]).argmax(1) == data.tensors[1]).float().mean().item()
    logger = CSVLogger(tmp_path)
    trainer = pl.Trainer(max_epochs=3, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    for name in ("train/acc", "val/acc"):
        values = [float(row[name]) for row in rows if row.get(name)]
        assert values == pytest.approx([expected] * 3, abs=1e-6)

def test_training_metrics_can_sample_every_nth_batch_while_validation_sees_all():
    module = ClassificationModule(nn.Linear(4, 3), 3, partial(torch.optim.SGD, lr=0.1),
                                  train_metrics_every_n_batches=3)
    updates, logged = fit_counting_metric_updates(module, batches=7)
    assert updates == {"train": 3, "val": 2}  # training batches 0, 3 and 6
    assert {"train/acc", "val/acc", "train/loss_epoch"} <= logged


def test_training_metrics_can_be_switched_off():
    module = ClassificationModule(nn.Linear(4, 3), 3, partial(torch.optim.SGD, lr=0.1),
                                  train_metrics_every_n_batches=0)
    updates, logged = fit_counting_metric_updates(module, batches=5)
    assert updates == {"train": 0, "val": 2}
    assert "train/acc" not in logged and {"val/acc", "train/loss_epoch"} <= logged


def test_negative_training_metric_interval_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="train_metrics_every_n_batches=-1.*0 \\(none\\)"):
        ClassificationModule(nn.Linear(4, 3), 3, partial(torch.optim.SGD, lr=0.1),
                             train_metrics_every_n_batches=-1)

def test_tensorboard_gets_confusion_matrix_prediction_grid_and_per_class_accuracy(make_config, tmp_path):
    training.train(make_config())
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    figures = {"val/confusion_matrix", "val/predictions", "test/confusion_matrix"}
    assert figures <= set(events.Tags()["images"])
    assert "val_per_class/acc_7" in events.Tags()["scalars"]
    assert {"val/acc", "val/acc_macro", "val/acc_top5", "train/loss_epoch"} <= set(events.Tags()["scalars"])

"""A training step that never waits for the device: the sync counter, and what it finds in run.py's step."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_avg_fn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from app.build import build
from callbacks.finite_loss import StopOnNonFiniteLoss
from callbacks.host_syncs import CountHostSyncs, SyncCounter
from core.errors import ConfigError
from core.host_copy import HostCopy
from lightning_modules.ema import ExponentialMovingAverage
from lightning_modules.metrics import Accuracy, BalancedAccuracy, F1Score, JaccardIndex, confusion_counts


def counted(operation, *device_tensors) -> int:
    """Host syncs that `operation()` would make on a GPU, with `device_tensors` living there."""
    with SyncCounter() as counter:
        counter.on_device(*device_tensors)
        counter.active = True
        operation()
    return counter.count


def test_counter_counts_the_operations_that_wait_for_a_gpu():
    x, labels = torch.randn(6), torch.tensor([0, 2, 1, 2, 0, 1])
    assert counted(lambda: x.sum().item(), x) == 1
    assert counted(lambda: bool((x > 0).any()), x) == 1
    assert counted(lambda: x[x > 0], x) == 1
    assert counted(lambda: torch.nonzero(x), x) == 1
    assert counted(lambda: torch.bincount(labels), labels) == 1
    assert counted(lambda: torch.unique(labels), labels) == 1
    assert counted(lambda: torch.empty(6).copy_(x), x) == 1  # a blocking copy to the host


def test_counter_ignores_host_tensors_async_copies_and_cpu_only_checks():
    x, labels = torch.randn(6), torch.tensor([0, 2, 1, 2, 0, 1])
    step = torch.tensor(3.0)  # made on the host, as an optimizer's step count is
    assert counted(lambda: step.item(), x) == 0
    assert counted(lambda: (x * 2).sum().mul_(3), x) == 0  # device work that reads nothing back
    assert counted(lambda: F.one_hot(labels, 3), labels) == 0  # CUDA skips one_hot's range checks
    assert counted(lambda: HostCopy(x.sum()).result().item(), x) == 0
    assert counted(lambda: torch.zeros(3, dtype=torch.long).scatter_add_(0, labels, labels), labels) == 0


def test_confusion_counts_equal_bincount_and_balanced_accuracy_updates_without_a_sync():
    generator = torch.Generator().manual_seed(0)
    target, preds = torch.randint(0, 5, (2, 200), generator=generator)
    expected = torch.bincount(target * 5 + preds, minlength=25).reshape(5, 5)
    assert torch.equal(confusion_counts(preds, target, 5), expected)
    target[::7] = 255
    kept = target != 255
    expected = torch.bincount(target[kept] * 5 + preds[kept], minlength=25).reshape(5, 5)
    assert torch.equal(confusion_counts(preds, target, 5, ignore_index=255), expected)
    metric, logits, labels = BalancedAccuracy(5), torch.randn(32, 5), torch.arange(32) % 5
    assert counted(lambda: metric.update(logits, labels), metric, logits, labels) == 0


@pytest.mark.parametrize("ignore_index", [None, 255, 0])
@pytest.mark.parametrize(("ours", "theirs", "average"), [
    (Accuracy, MulticlassAccuracy, "micro"), (Accuracy, MulticlassAccuracy, "macro"),
    (F1Score, MulticlassF1Score, "macro"), (JaccardIndex, MulticlassJaccardIndex, "macro"),
])
def test_segmentation_metrics_equal_torchmetrics_on_void_heavy_masks_without_a_sync(ours, theirs, average,
                                                                                     ignore_index):
    generator = torch.Generator().manual_seed(1)
    options = {"num_classes": 4, "average": average, "ignore_index": ignore_index, "validate_args": False}
    mine, reference = ours(**options), theirs(**options)
    for _ in range(3):
        logits = torch.randn(2, 4, 8, 8, generator=generator)
        masks = torch.randint(0, 4, (2, 8, 8), generator=generator)
        if ignore_index is not None:
            masks[torch.rand(2, 8, 8, generator=generator) < 0.6] = ignore_index
        reference.update(logits, masks)
        assert counted(lambda x=logits, y=masks: mine.update(x, y), mine, logits, masks) == 0
    torch.testing.assert_close(mine.compute(), reference.compute())


class ReadsTheLoss(pl.Callback):
    """What the progress bar used to do at every step: read the loss on the host."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        float(outputs["loss"])


@pytest.mark.parametrize(("extra", "callback", "expected"), [
    ([], None, 0.0),  # python run.py's step: default callbacks, TensorBoard, progress bar, metrics
    (["task.ema.decay=0.99"], None, 0.0),
    ([], ReadsTheLoss(), 1.0),  # the window sees every callback
], ids=["defaults", "ema", "a-callback-reading-the-loss"])
def test_a_training_step_of_run_py_never_waits_for_the_device(make_config, extra, callback, expected):
    warmup, steps = 2, 10  # steps 2..11: a logging step (log_every_n_steps=10) inside
    cfg = make_config("trainer.limit_train_batches=null", f"trainer.max_steps={warmup + steps + 1}",
                      "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=true", "test=false",
                      "logger=tensorboard", *extra, fast=True)
    datamodule, module, trainer = build(cfg)
    counter = SyncCounter()
    counting = CountHostSyncs(warmup, steps, counter)
    trainer.callbacks.insert(0, counting)
    trainer.callbacks += [callback] if callback else []
    with counter:
        trainer.fit(module, datamodule=datamodule)
    assert counting.counted_steps == steps
    assert counting.per_step == expected


class TinyNet(pl.LightningModule):
    """A convolution with BatchNorm (float and integer buffers) and a linear head, trained by SGD;
    its loss is NaN from optimizer step `nan_from` on."""

    def __init__(self, nan_from: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Linear(64, 2))
        self.nan_from = nan_from

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.nan_from is not None and self.global_step >= self.nan_from:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def fit_tiny(callbacks: list[pl.Callback], nan_from: int | None = None, epochs: int = 2, **trainer_options):
    pl.seed_everything(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 3, 6, 6), torch.randint(0, 2, (48,)))
    model = TinyNet(nan_from)
    options = {"logger": False, "enable_checkpointing": False, **trainer_options}
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
                         deterministic=True, **options)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    return model


class PerTensorEMA(WeightAveraging):
    """The EMA as this project kept it before: torch's per-tensor `avg_fn` through AveragedModel."""

    def __init__(self, decay: float, every_n_steps: int, warmup_epochs: int) -> None:
        super().__init__(use_buffers=True, avg_fn=get_ema_avg_fn(decay))
        self.every_n_steps, self.warmup_epochs = every_n_steps, warmup_epochs

    def should_update(self, step_idx=None, epoch_idx=None):
        return step_idx is not None and step_idx % self.every_n_steps == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.current_epoch < self.warmup_epochs:
            self._average_model.n_averaged.fill_(0)


@pytest.mark.parametrize(("every_n_steps", "warmup_epochs"), [(1, 0), (2, 0), (3, 1)])
def test_foreach_ema_equals_the_per_tensor_ema(every_n_steps, warmup_epochs):
    old = PerTensorEMA(0.9, every_n_steps, warmup_epochs)
    new = ExponentialMovingAverage(0.9, every_n_steps, warmup_epochs)
    fit_tiny([old])
    fit_tiny([new])
    expected, got = old._average_model.state_dict(), new._average_model.state_dict()
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-7, msg=name)
        else:  # num_batches_tracked, n_averaged
            assert torch.equal(got[name], value), name


def test_a_non_finite_loss_stops_training_naming_the_first_bad_step_and_no_later_checkpoint(tmp_path):
    saved = ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(ConfigError) as error:  # 6 steps per epoch: step 8 is epoch 1's batch 2
        fit_tiny([StopOnNonFiniteLoss(), saved], nan_from=8, epochs=5, log_every_n_steps=2,
                 enable_checkpointing=True)
    message = str(error.value)
    assert "the loss is nan at epoch 1, batch 2 (step 8," in message and "learning rate 0.1" in message
    stopped_at = int(message.split("stopped at step ")[1].split(";")[0])
    assert 9 <= stopped_at <= 8 + 1 + 2 * 2  # checked every log_every_n_steps, read an interval later
    assert sorted(int(p.stem.split("=")[1]) for p in tmp_path.glob("*.ckpt")) == list(range(1, 9))


def test_the_logged_step_loss_is_each_logging_steps_own_loss(make_config):
    losses: dict[int, float] = {}

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses[trainer.global_step - 1] = float(outputs["loss"])

    cfg = make_config("trainer.limit_train_batches=12", "trainer.log_every_n_steps=5", "logger=csv",
                      "test=false")
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(Record())
    trainer.fit(module, datamodule=datamodule)
    rows = list(csv.DictReader((Path(trainer.loggers[0].log_dir) / "metrics.csv").open()))
    logged = {int(row["step"]): float(row["train/loss_step"]) for row in rows if row.get("train/loss_step")}
    assert logged == {step: pytest.approx(losses[step]) for step in (4, 9)}
    assert trainer.progress_bar_metrics["train/loss_step"] == pytest.approx(losses[9])
    epoch_loss = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    assert epoch_loss == [pytest.approx(sum(losses.values()) / len(losses), rel=1e-5)]  # equal batches

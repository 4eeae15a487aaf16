"""Frozen backbones (batch-norm statistics kept) and gradual unfreezing through BaseFinetuning."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from app import build as app_build
from core.errors import ConfigError
from tests.conftest import compose_config

RESNET_ON_DIGITS = ["debug=smoke", "logger=none", "model=resnet18", "trainer.limit_train_batches=2",
                    "optimizer=sgd", "optimizer.lr=0.05"]


class Snapshots(pl.Callback):
    """The backbone's first convolution, first batch norm and the head at the end of every epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        model = pl_module.net.model
        self.epochs.append({
            "conv1": model.conv1.weight.detach().clone(), "bn_mean": model.bn1.running_mean.clone(),
            "bn_training": model.bn1.training, "fc": model.fc.weight.detach().clone(),
        })


def fit(tmp_path, *overrides: str):
    cfg = compose_config([*RESNET_ON_DIGITS, *overrides], tmp_path / "run")
    datamodule, module, trainer = app_build.build(cfg)
    snapshots = Snapshots()
    trainer.callbacks.append(snapshots)
    model = module.net.model
    start = {"conv1": model.conv1.weight.detach().clone(), "bn_mean": model.bn1.running_mean.clone(),
             "fc": model.fc.weight.detach().clone()}
    trainer.fit(module, datamodule=datamodule)
    return start, snapshots.epochs


def test_a_frozen_backbone_keeps_its_weights_and_batch_norm_statistics(tmp_path):
    start, epochs = fit(tmp_path, "model.freeze_backbone=true")
    (end,) = epochs
    assert torch.equal(end["conv1"], start["conv1"]) and torch.equal(end["bn_mean"], start["bn_mean"])
    assert not end["bn_training"]
    assert not torch.equal(end["fc"], start["fc"])


def test_the_backbone_unfreezes_at_the_chosen_epoch_with_its_own_learning_rate(tmp_path):
    start, epochs = fit(tmp_path, "task.unfreeze_backbone_at_epoch=1", "trainer.max_epochs=2",
                        "param_groups.backbone_lr_mult=0.1")
    frozen, unfrozen = epochs
    assert torch.equal(frozen["conv1"], start["conv1"]) and torch.equal(frozen["bn_mean"], start["bn_mean"])
    assert not frozen["bn_training"] and not torch.equal(frozen["fc"], start["fc"])
    assert not torch.equal(unfrozen["conv1"], start["conv1"])
    assert not torch.equal(unfrozen["bn_mean"], start["bn_mean"]) and unfrozen["bn_training"]


def test_unfreezing_needs_a_network_with_a_head(tmp_path):
    cfg = compose_config([*RESNET_ON_DIGITS, "model=mnist_cnn", "task.unfreeze_backbone_at_epoch=1"],
                         tmp_path / "run")
    datamodule, module, trainer = app_build.build(cfg)
    with pytest.raises(ConfigError, match="unfreeze_backbone_at_epoch"):
        trainer.fit(module, datamodule=datamodule)


def test_gradual_unfreezing_is_refused_on_several_processes():
    from types import SimpleNamespace

    from lightning_modules.finetuning import BackboneFinetuning

    callback = BackboneFinetuning("net.model.fc.", unfreeze_at_epoch=1)
    with pytest.raises(ConfigError, match="one device only"):
        callback.setup(SimpleNamespace(world_size=2), None, "fit")

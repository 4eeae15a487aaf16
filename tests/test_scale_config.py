"""Precision and strategy groups: composition, and the pairs that must fail before training."""

from __future__ import annotations

import pytest

from app import checks, training
from core.errors import ConfigError


def test_trainer_ddp_selects_the_ddp_strategy_with_two_devices(make_config):
    cfg = make_config("trainer=ddp")
    assert cfg.trainer.strategy._target_ == "lightning_modules.strategies.DDPStrategy"
    assert cfg.trainer.devices == 2


@pytest.mark.parametrize(("option", "precision"), [("32", "32-true"), ("16-mixed", "16-mixed"),
                                                   ("bf16-mixed", "bf16-mixed"), ("64", "64-true")])
def test_precision_group_sets_the_trainer_precision(make_config, option, precision):
    assert make_config(f"precision='{option}'").trainer.precision == precision


def test_lbfgs_with_fp16_mixed_precision_fails_before_training(make_config):
    with pytest.raises(ConfigError, match="optimizer=lbfgs cannot run with precision=16-mixed"):
        checks.check_config(make_config("optimizer=lbfgs", "precision=16-mixed"))


def test_fsdp_on_cpu_fails_before_training_and_suggests_ddp(make_config):
    with pytest.raises(ConfigError, match="strategy=fsdp needs CUDA GPUs.*strategy=ddp"):
        checks.check_config(make_config("strategy=fsdp"))


def test_channels_last_converts_the_network_weights(make_config, monkeypatch):
    import torch

    converted = []
    original = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        converted.append(kwargs.get("memory_format"))
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    training.train(make_config("channels_last=true", "test=false"))
    assert torch.channels_last in converted

"""Parameter groups (norm/bias weight decay, backbone lr) and warm-up in front of every scheduler."""

from __future__ import annotations

import inspect
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from core.errors import ConfigError
from lightning_modules.nets.mnist_cnn import MNISTCNN
from lightning_modules.nets.torchvision_classifier import build_classifier
from lightning_modules.optimization import (
    ParamGroups,
    configure_optimization,
    parameter_groups,
    warmup_cosine,
)
from tests.test_optimization import lrs

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEDULERS = sorted(p.stem for p in (CONF / "scheduler").glob("*.yaml"))


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.LayerNorm(4 * 6 * 6), nn.Linear(4 * 6 * 6, 2))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def by_name(groups) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


def test_norm_group_holds_exactly_the_normalisation_parameters():
    net = small_net()
    groups = by_name(parameter_groups(net, lr=0.1, norm_weight_decay=0.0))
    norms = [net[1].weight, net[1].bias, net[4].weight, net[4].bias]
    assert ids(groups["head/norm"]["params"]) == ids(norms)
    assert groups["head/norm"]["weight_decay"] == 0.0
    others = [net[0].weight, net[0].bias, net[5].weight, net[5].bias]
    assert ids(groups["head/other"]["params"]) == ids(others)
    assert "weight_decay" not in groups["head/other"]  # the optimizer's own weight_decay


def test_bias_group_holds_exactly_the_biases_before_the_norm_group():
    net = small_net()
    groups = by_name(parameter_groups(net, lr=0.1, norm_weight_decay=0.0, bias_weight_decay=1e-5))
    assert ids(groups["head/bias"]["params"]) == ids([net[i].bias for i in (0, 1, 4, 5)])
    assert ids(groups["head/norm"]["params"]) == ids([net[1].weight, net[4].weight])
    assert groups["head/bias"]["weight_decay"] == 1e-5


def test_backbone_lr_multiplier_scales_all_but_the_new_head():
    net = build_classifier("resnet18", num_classes=3)
    groups = by_name(parameter_groups(net, lr=0.1, backbone_lr_mult=0.1, norm_weight_decay=0.0,
                                      head_prefix=net.head_name + "."))
    head = net.model.fc
    assert set(groups) == {"backbone/other", "backbone/norm", "head/other"}
    assert ids(groups["head/other"]["params"]) == ids([head.weight, head.bias])
    assert "lr" not in groups["head/other"]
    assert groups["backbone/other"]["lr"] == pytest.approx(0.01)
    every = [p for g in groups.values() for p in g["params"]]
    assert len(every) == len(ids(every)) == len(list(net.parameters()))


def test_backbone_lr_multiplier_needs_a_network_with_a_head():
    with pytest.raises(ConfigError, match="backbone_lr_mult"):
        parameter_groups(MNISTCNN(), lr=0.1, backbone_lr_mult=0.1)


def test_grouping_options_that_differ_from_one_plain_group_are_the_changed_ones():
    assert ParamGroups().changed() == {}
    assert ParamGroups(norm_weight_decay=None, bias_weight_decay=0.0).changed() == {"bias_weight_decay": 0.0}
    config = configure_optimization(small_net(), partial(torch.optim.Adam, lr=0.02), None, 10,
                                    param_groups=ParamGroups())
    assert len(config["optimizer"].param_groups) == 1


def test_grouping_options_for_parameters_without_a_network_are_refused():
    with pytest.raises(ConfigError, match="param_groups"):
        configure_optimization([nn.Parameter(torch.zeros(1))], partial(torch.optim.SGD, lr=0.1), None, 10,
                               param_groups=ParamGroups(norm_weight_decay=0.0))


def test_the_optimizer_config_holds_only_the_torch_optimizers_arguments(make_config):
    for name in ("adam", "adamw", "sgd", "lbfgs"):
        optimizer = make_config(f"optimizer={name}").optimizer
        make = instantiate(optimizer)
        accepted = set(inspect.signature(make.func).parameters)
        assert set(make.keywords) <= accepted, f"optimizer={name}: {set(make.keywords) - accepted}"


def test_the_module_builds_groups_from_the_param_groups_config(make_config):
    cfg = make_config("model=resnet18", "optimizer=sgd", "param_groups.norm_weight_decay=0",
                      "param_groups.bias_weight_decay=0", "param_groups.backbone_lr_mult=0.5")
    module = instantiate(cfg.task, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer),
                         param_groups=cfg.param_groups)
    assert module.head_prefix() == "net.model.fc."
    assert isinstance(module.param_groups, ParamGroups)
    opt = configure_optimization(module, module.optimizer, None, 10, head_prefix=module.head_prefix(),
                                 param_groups=module.param_groups)["optimizer"]
    groups = by_name(opt.param_groups)
    assert groups["head/bias"]["weight_decay"] == 0 and groups["head/bias"]["lr"] == 0.1
    assert groups["backbone/norm"]["weight_decay"] == 0 and groups["backbone/norm"]["lr"] == 0.05
    assert groups["backbone/other"]["weight_decay"] == 1e-4


def test_one_cycle_keeps_the_backbone_at_its_multiple_of_the_head_lr():
    net = build_classifier("resnet18", num_classes=3)
    one_cycle = {"scheduler": partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1), "interval": "step"}
    config = configure_optimization(net, partial(torch.optim.SGD, lr=0.1), one_cycle, total_steps=10,
                                    head_prefix=net.head_name + ".",
                                    param_groups=ParamGroups(backbone_lr_mult=0.1))
    groups = by_name(config["optimizer"].param_groups)
    # one-cycle starts at max_lr / div_factor (25) and peaks at max_lr, for each group its own max_lr
    assert groups["head/other"]["lr"] == pytest.approx(0.1 / 25)
    assert groups["backbone/other"]["lr"] == pytest.approx(0.01 / 25)
    assert groups["backbone/other"]["max_lr"] == pytest.approx(0.01)


def scheduled(scheduler: dict, total_steps: int = 10, steps_per_epoch: int | None = None):
    param = nn.Parameter(torch.zeros(1))
    config = configure_optimization([param], partial(torch.optim.SGD, lr=1.0), scheduler, total_steps,
                                    steps_per_epoch=steps_per_epoch)
    return config["lr_scheduler"]


def test_linear_warmup_then_step_decay_per_epoch():
    config = scheduled({"scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.1),
                        "interval": "epoch", "warmup_epochs": 2, "warmup_decay": 0.1})
    # warm-up: 0.1, then 0.1 + (1 - 0.1) / 2 = 0.55; StepLR from epoch 2 counts from zero.
    assert lrs(config["scheduler"], 7) == pytest.approx([0.1, 0.55, 1.0, 1.0, 0.1, 0.1, 0.01])


def test_constant_warmup_then_exponential_decay():
    config = scheduled({"scheduler": partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
                        "interval": "epoch", "warmup_epochs": 2, "warmup_method": "constant",
                        "warmup_decay": 0.01})
    assert lrs(config["scheduler"], 5) == pytest.approx([0.01, 0.01, 1.0, 0.5, 0.25])


def test_warmup_epochs_of_a_per_step_cosine_count_steps_per_epoch():
    config = scheduled({"scheduler": partial(warmup_cosine, warmup_fraction=0.0), "interval": "step",
                        "warmup_epochs": 1, "warmup_decay": 0.25}, total_steps=12, steps_per_epoch=4)
    values = lrs(config["scheduler"], 12)
    assert values[:4] == pytest.approx([0.25, 0.4375, 0.625, 0.8125])  # 0.25 + 0.75 k / 4
    # then cosine over the remaining 8 steps: 0.5 (1 + cos(pi k / 8))
    assert values[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])


def test_warmup_steps_in_front_of_one_cycle_leave_it_the_remaining_steps():
    config = scheduled({"scheduler": partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1.0),
                        "interval": "step", "warmup_steps": 3}, total_steps=13)
    assert config["scheduler"]._schedulers[1].total_steps == 10
    # one-cycle starts at max_lr / div_factor = 0.04: the warm-up rises from 0.01 x 0.04 to it
    assert lrs(config["scheduler"], 4) == pytest.approx([0.0004, 0.0136, 0.0268, 0.04])


def test_warmup_cannot_precede_plateau_nor_count_steps_per_epoch():
    plateau = {"scheduler": partial(torch.optim.lr_scheduler.ReduceLROnPlateau), "interval": "epoch",
               "monitor": "val/acc", "warmup_epochs": 1}
    with pytest.raises(ConfigError, match="plateau"):
        scheduled(plateau)
    step = {"scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=1), "interval": "epoch",
            "warmup_steps": 5}
    with pytest.raises(ConfigError, match="warmup_epochs"):
        scheduled(step)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_config_builds_with_warmup_and_parameter_groups(make_config, name):
    per_step, per_epoch = {"cosine", "onecycle"}, {"step", "exponential"}
    warmup = ["scheduler.warmup_steps=2"] if name in per_step else []
    warmup += ["scheduler.warmup_epochs=1"] if name in per_epoch else []
    cfg = make_config(f"scheduler={name}", *warmup, "optimizer=sgd", "param_groups.norm_weight_decay=0")
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    config = configure_optimization(small_net(), instantiate(cfg.optimizer), scheduler, total_steps=20,
                                    steps_per_epoch=4, param_groups=instantiate(cfg.param_groups))
    assert {g["name"] for g in config["optimizer"].param_groups} == {"head/norm", "head/other"}
    if warmup:
        chained = config["lr_scheduler"]["scheduler"]
        assert isinstance(chained, torch.optim.lr_scheduler.SequentialLR)
        assert chained._milestones == [2 if name in per_step else 1]

"""Lightning's LearningRateFinder sets the learning rate that the run then trains with."""

from __future__ import annotations

import json
import re
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

from tests.run_py import run_dirs, run_py


def test_callbacks_lr_finder_is_the_default_callbacks_and_lightnings_finder(make_config):
    from pytorch_lightning.callbacks import LearningRateFinder

    default, with_finder = make_config("callbacks=default"), make_config("callbacks=lr_finder")
    assert set(with_finder.callbacks) == {*default.callbacks, "lr_finder"}
    assert isinstance(instantiate(with_finder.callbacks.lr_finder), LearningRateFinder)


def test_the_task_builds_its_optimizer_with_its_lr_attribute(make_config):
    cfg = make_config("optimizer=sgd", "optimizer.lr=0.05")
    module = instantiate(cfg.task, net=torch.nn.Linear(4, 10), optimizer=instantiate(cfg.optimizer))
    assert module.lr == 0.05 and isinstance(module.optimizer, partial)
    module.lr = 0.2  # what the finder does
    module.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 10, "num_training_batches": 10,
                                              "accumulate_grad_batches": 1})()
    assert module.configure_optimizers()["optimizer"].param_groups[0]["lr"] == 0.2


def test_the_default_one_cycle_peaks_at_the_lr_the_optimizer_is_built_with(make_config):
    cfg = make_config("optimizer.lr=0.05")
    assert cfg.scheduler.scheduler._target_.endswith("OneCycleLR")  # classification's default recipe
    module = instantiate(cfg.task, net=torch.nn.Linear(4, 10), optimizer=instantiate(cfg.optimizer),
                         scheduler=instantiate(cfg.scheduler, _convert_="all"))
    module.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 10, "num_training_batches": 10,
                                              "accumulate_grad_batches": 1})()
    for lr in (0.05, 0.2):  # the configured rate, then one the finder set
        module.lr = lr
        scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
        assert [group["max_lr"] for group in scheduler.optimizer.param_groups] == [lr]
        assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(lr / 25)  # its start: max_lr / 25


@pytest.mark.slow
def test_callbacks_lr_finder_changes_the_learning_rate_the_run_trains_with(tmp_path):
    done = run_py(tmp_path, "callbacks=lr_finder", "callbacks.lr_finder.num_training_steps=20",
                  "trainer.limit_train_batches=20", "optimizer=adam", "scheduler=none")

    found = float(re.search(r"Learning rate set to ([0-9.e-]+)", done.stdout + done.stderr).group(1))
    (run_dir,) = run_dirs(tmp_path)
    trained_with = json.loads((run_dir / "metrics.json").read_text())["lr-Adam"]
    assert found != 0.001 and trained_with == float(torch.tensor(found))  # logged as float32
    assert not list(run_dir.glob(".lr_find*.ckpt")), "the finder's temporary checkpoint is gone"

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


@pytest.mark.slow
def test_callbacks_lr_finder_changes_the_learning_rate_the_run_trains_with(tmp_path):
    done = run_py(tmp_path, "callbacks=lr_finder", "callbacks.lr_finder.num_training_steps=20",
                  "trainer.limit_train_batches=20")

    found = float(re.search(r"Learning rate set to ([0-9.e-]+)", done.stdout + done.stderr).group(1))
    (run_dir,) = run_dirs(tmp_path)
    trained_with = json.loads((run_dir / "metrics.json").read_text())["lr-Adam"]
    assert found != 0.001 and trained_with == float(torch.tensor(found))  # logged as float32
    assert not list(run_dir.glob(".lr_find*.ckpt")), "the finder's temporary checkpoint is gone"

"""End-to-end classification runs through run.py's composed config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from app import argv as app_argv
from app import checks, training
from core.errors import ConfigError
from tests.classification_fakes import write_cifar10, write_image_folder, write_mit67, write_mnist
from tests.conftest import CONF_DIR
from tests.run_py import python

ROOT = CONF_DIR.parent


def test_default_run_trains_and_tests_on_digits_and_writes_metrics(make_config, tmp_path):
    metrics = training.train(make_config())
    assert {"test/acc", "test/acc_macro", "test/loss", "val/acc", "best/val/acc"} <= metrics.keys()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/acc"] == metrics["test/acc"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_run_stopped_by_max_steps_mid_epoch_still_tests(make_config):
    metrics = training.train(make_config("trainer.limit_train_batches=5", "trainer.max_steps=2"))
    assert "test/acc" in metrics


DATASETS = {
    "mnist": lambda root: [f"data.root={write_mnist(root)}", "data.val_size=10"],
    "cifar10": lambda root: [f"data.root={write_cifar10(root)}", "data.verify_checksums=false",
                             "data.val_size=20"],
    "mit67": lambda root: [f"data.root={write_mit67(root)}", "data.num_classes=3", "data.image_size=32",
                           "data.resize_size=40", "data.val_fraction=0.2"],
    "image_folder": lambda root: [f"data.root={write_image_folder(root)}", "data.num_classes=2",
                                  "data.image_size=32", "data.resize_size=36"],
}


@pytest.mark.parametrize(("data", "model"), [
    ("digits", "mnist_cnn"), ("digits", "simple_cnn"), ("digits", "resnet18"),
    ("mnist", "mnist_cnn"), ("mnist", "simple_cnn"),
    ("cifar10", "simple_cnn"), ("cifar10", "resnet18"),
    ("mit67", "resnet18"), ("mit67", "efficientnet_b0"), ("image_folder", "mobilenet_v3_large"),
])
def test_every_sensible_data_and_model_pair_trains_validates_and_tests(make_config, tmp_path, data, model):
    dataset_options = DATASETS[data](tmp_path / data) if data in DATASETS else []
    cfg = make_config(f"data={data}", f"model={model}", "data.num_workers=0", "data.batch_size=4",
                      *dataset_options)
    metrics = training.train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["train/loss_epoch"] > 0


@pytest.mark.parametrize(("optimizer", "scheduler"), [
    ("adam", "none"), ("adamw", "cosine"), ("sgd", "step"), ("sgd", "onecycle"), ("adam", "plateau"),
    ("lbfgs", "none"),
])
def test_every_optimizer_and_scheduler_drives_training(make_config, optimizer, scheduler):
    metrics = training.train(make_config(f"optimizer={optimizer}", f"scheduler={scheduler}"))
    assert metrics["train/loss_epoch"] > 0


def test_a_checkpoint_evaluated_alone_gives_the_metrics_it_was_tested_with(make_config, tmp_path):
    trained = training.train(make_config("trainer.limit_train_batches=5"))
    best = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))
    evaluated = training.train(make_config("train=false", f"ckpt_path={best}"))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])
    assert evaluated["test/loss"] == pytest.approx(trained["test/loss"])


def test_evaluation_without_a_checkpoint_is_refused(make_config):
    with pytest.raises(ConfigError, match="ckpt_path=PATH"):
        checks.check_config(make_config("train=false"))


def test_unknown_group_option_lists_the_valid_ones(make_config):
    with pytest.raises(MissingConfigException, match=r"(?s)Could not find 'data/imagenet22k'.*mit67"):
        make_config("data=imagenet22k")


def test_unknown_key_is_refused(make_config):
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        make_config("optimizer.learning_rate=0.1")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_with_its_data_model_and_optimizer(make_config, experiment):
    cfg = make_config(f"experiment={experiment}", fast=False)
    assert cfg.optimizer._partial_
    if cfg.task_name == "style":  # no classes; one epoch optimises each image
        assert cfg.trainer.max_epochs == 1
        return
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.trainer.max_epochs > 1


def test_mit67_resnet50_experiment_is_a_complete_recipe(make_config):
    cfg = make_config("experiment=mit67_resnet50", fast=False)
    assert cfg.data._target_.endswith("MIT67DataModule") and cfg.data.num_classes == 67
    assert cfg.model.name == "resnet50" and cfg.model.num_classes == 67 and cfg.model.weights == "DEFAULT"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.scheduler.interval == "step"


@pytest.mark.slow
def test_the_default_run_learns_the_digits_to_98_5_percent_on_held_out_test_images(make_config):
    # torch's own thread count, as a user's run has it (a pytest-xdist worker has fewer): the float sums,
    # and with them the 360 test images' errors, depend on it (2 errors on 2 threads, 6 on 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        metrics = training.train(make_config(
            "trainer.enable_progress_bar=false", "~callbacks.rich_model_summary",
            "~callbacks.rich_progress_bar", "trainer.accelerator=cpu", fast=False,
        ))
    finally:
        torch.set_num_threads(threads)
    assert metrics["test/acc"] >= 0.985


def test_run_py_writes_each_run_to_its_own_time_stamped_directory(tmp_path):
    for _ in range(2):
        done = python("run.py", f"paths.log_dir={tmp_path}", "precision=32", "debug=smoke", timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((tmp_path / "classify" / "runs").iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert (run_dir / "metrics.json").is_file() and (run_dir / "config_resolved.yaml").is_file()
        assert (run_dir / ".hydra" / "overrides.yaml").is_file()
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test/acc" in done.stdout


def test_numeric_precision_choices_reach_hydra_as_strings():
    argv = ["run.py", "precision=32", "optimizer.lr=3", "trainer.devices=2"]
    quoted = ["run.py", "precision='32'", "optimizer.lr=3", "trainer.devices=2"]
    assert app_argv.quote_numeric_choices(argv) == quoted
    assert app_argv.quote_numeric_choices(["precision=64,bf16-mixed"]) == ["precision='64',bf16-mixed"]


def test_help_lists_the_config_groups_quickly():
    done = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    for group in ("task:", "data:", "model:", "optimizer:", "scheduler:", "precision:", "strategy:",
                  "logger:", "callbacks:", "experiment:"):
        assert group in done.stdout
    assert "hydra/launcher: basic, submitit_local, submitit_slurm" in done.stdout

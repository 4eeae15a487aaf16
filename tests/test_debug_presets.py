"""The `debug` config group: every preset composes with every task and builds a Trainer."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from app import training
from tests.conftest import CONF_DIR

PRESETS = sorted(path.stem for path in (CONF_DIR / "debug").glob("*.yaml"))
TASKS = sorted(path.stem for path in (CONF_DIR / "task").glob("*.yaml"))


def test_the_documented_presets_exist():
    assert {"smoke", "fdr", "overfit", "limit", "profiler", "anomaly"} <= set(PRESETS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_debug_preset_composes_with_every_task_into_a_trainer(make_config, preset, task):
    cfg = make_config(f"task={task}", f"debug={preset}", fast=False)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    if preset == "fdr":
        assert trainer.fast_dev_run
    if preset == "overfit":
        assert trainer.overfit_batches == 2 and not cfg.callbacks.get("early_stopping")
    if preset == "smoke":
        assert trainer.max_epochs == 1 and trainer.limit_train_batches == 2
        assert not trainer.progress_bar_callback
        if task == "style":
            assert cfg.task.evaluations == 3, "debug/task/smoke_style.yaml shortens the optimisation"
        else:
            assert cfg.data.batch_size <= 4
    if preset == "anomaly":
        assert trainer._detect_anomaly


def test_profiler_preset_writes_its_report_into_the_run_directory(make_config, tmp_path):
    training.train(make_config("debug=profiler", "trainer.limit_train_batches=2",
                               "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", fast=False))
    report = (tmp_path / "run" / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report

"""Keys renamed in this release keep working under their old names, with a message naming the new key:
on the command line, in config files and in the config stored in older checkpoints."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from app.argv import rewritten
from app.renamed_keys import RENAMED, move_renamed_keys
from app.trained_model import load_checkpoint
from core.contracts import CHECKPOINT_KEY
from tests.run_py import run_dirs, run_py

RENAMES = sorted(RENAMED.items())


@pytest.mark.parametrize(("old", "new"), RENAMES)
def test_an_old_key_on_the_command_line_sets_the_new_key_and_says_so(old, new, caplog):
    with caplog.at_level(logging.WARNING, logger="run"):
        argv = rewritten(["run.py", "debug=smoke", f"{old}=5", f"+{old}=6", f"~{old}"])
    assert argv == ["run.py", "debug=smoke", f"{new}=5", f"++{new}=6", f"~{new}"]
    assert f"Deprecated: {old} (given as `{old}=5`) is now {new}" in caplog.text
    assert "stops working in the next release" in caplog.text


@pytest.mark.parametrize(("old", "new"), RENAMES)
def test_an_old_key_in_a_config_file_moves_to_the_new_key_and_says_so(old, new, caplog):
    group = old.split(".")[0]
    cfg = OmegaConf.create()
    for key, value in ((new, "default"), (old, 7), (f"{group}.kept", 1)):
        OmegaConf.update(cfg, key, value)
    OmegaConf.set_struct(cfg, True)
    with caplog.at_level(logging.WARNING, logger="run"):
        move_renamed_keys(cfg)
    assert OmegaConf.select(cfg, new) == 7 and OmegaConf.select(cfg, old) is None
    assert OmegaConf.select(cfg, f"{group}.kept") == 1
    assert f"Deprecated: {old} (set in the composed config) is now {new}" in caplog.text


def test_a_moved_key_keeps_its_interpolation_unresolved():
    cfg = OmegaConf.create({"seed": 3, "task": {"iterations": "${seed}"}})
    move_renamed_keys(cfg, quiet=True)
    assert OmegaConf.to_container(cfg.task)["evaluations"] == "${seed}" and cfg.task.evaluations == 3


def test_an_older_checkpoints_stored_config_is_read_with_the_new_keys(tmp_path, caplog):
    stored = {"task_name": "classify", "task": {"_target_": "x", "train_metrics_every_n_steps": 4},
              "optimizer": {"lr": 0.1, "backbone_lr_mult": 0.5}}
    torch.save({CHECKPOINT_KEY: stored, "state_dict": {}}, tmp_path / "old.ckpt")
    with caplog.at_level(logging.WARNING, logger="run"):
        config, _ = load_checkpoint(str(tmp_path / "old.ckpt"), [])
    assert config.task.train_metrics_every_n_batches == 4 and "train_metrics_every_n_steps" not in config.task
    assert config.param_groups.backbone_lr_mult == 0.5
    assert "Deprecated" not in caplog.text, "nothing the user typed: nothing to warn about"


def test_a_run_with_old_keys_on_the_command_line_trains_with_the_new_ones(tmp_path):
    done = run_py(tmp_path, "optimizer.norm_weight_decay=0", "task.train_metrics_every_n_steps=2",
                  "logger=none", "trainer.enable_progress_bar=false")
    assert "is now param_groups.norm_weight_decay" in done.stderr
    assert "is now task.train_metrics_every_n_batches" in done.stderr
    (run_dir,) = run_dirs(tmp_path)
    resolved = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    assert resolved["param_groups"]["norm_weight_decay"] == 0
    assert resolved["task"]["train_metrics_every_n_batches"] == 2
    assert "norm_weight_decay" not in resolved["optimizer"]


def test_scripts_composing_the_config_read_old_keys_too(make_config):
    cfg = make_config("task=style", "task.iterations=5", "optimizer=sgd", "optimizer.backbone_lr_mult=0.5")
    assert cfg.task.evaluations == 5 and cfg.param_groups.backbone_lr_mult == 0.5
    assert "iterations" not in cfg.task and "backbone_lr_mult" not in cfg.optimizer

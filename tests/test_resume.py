"""Resuming: ckpt_path=last in the run's own directory, SIGTERM mid-training, atomic checkpoint files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app import checks, training
from core.errors import ConfigError
from lightning_modules.checkpoint_io import AtomicCheckpointIO
from tests.conftest import compose_config
from tests.run_py import wait_for

ROOT = Path(__file__).resolve().parents[1]
# Long enough to be interrupted mid-way, deterministic so that two runs can be compared exactly.
RESUMABLE = ["debug=smoke", "trainer.max_epochs=6", "trainer.limit_train_batches=6",
             "trainer.deterministic=true", "logger=none", "callbacks.early_stopping.patience=100"]
COMPARED = ("best/val/acc", "test/acc", "test/loss", "val/acc", "val/loss")


def global_step(run_dir: Path) -> int:
    """The optimizer steps recorded in a run's last checkpoint."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


def start_run(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """`python run.py` in a subprocess, writing into `run_dir`."""
    command = [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_run_killed_with_sigterm_resumes_to_the_same_steps_and_metrics(tmp_path):
    uninterrupted = training.train(compose_config(RESUMABLE, tmp_path / "uninterrupted"))

    run_dir = tmp_path / "interrupted"
    process = start_run(run_dir, *RESUMABLE)
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be interrupted"
    assert global_step(run_dir) < global_step(tmp_path / "uninterrupted")

    resumed = training.train(compose_config([*RESUMABLE, "ckpt_path=last"], run_dir))

    assert global_step(run_dir) == global_step(tmp_path / "uninterrupted")
    assert {key: resumed[key] for key in COMPARED} == {key: uninterrupted[key] for key in COMPARED}


def test_last_checkpoint_holds_the_final_epoch_even_without_improvement(make_config, tmp_path):
    # Lightning's own ModelCheckpoint for the best: BestCheckpoint would keep the later of equal values
    best = "callbacks.model_checkpoint._target_=pytorch_lightning.callbacks.ModelCheckpoint"
    training.train(make_config("trainer.max_epochs=3", "optimizer.lr=0.0", "test=false", best))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert torch.load(checkpoints / "epoch000.ckpt", weights_only=False)["epoch"] == 0, "no later best"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2


def test_interrupted_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)

    def save_half_then_die(obj, file, *args, **kwargs):
        file.write(b"\x80\x02half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()

    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left behind"


def test_trainer_writes_checkpoints_through_the_atomic_writer(make_config):
    from hydra.utils import instantiate

    trainer = instantiate(make_config().trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_one_cycle_run_resumed_for_more_epochs_is_refused_with_the_length_it_was_built_for(make_config,
                                                                                            tmp_path):
    training.train(make_config("scheduler=onecycle", "trainer.max_epochs=1", "test=false"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=3: .* one-cycle schedule built for "
                                          r"trainer.max_epochs=1, .* Resume with trainer.max_epochs=1"):
        checks.check_config(make_config("scheduler=onecycle", "trainer.max_epochs=3", f"ckpt_path={last}"))
    checks.check_config(make_config("scheduler=onecycle", "trainer.max_epochs=1", f"ckpt_path={last}"))
    checks.check_config(make_config("scheduler=onecycle", "trainer.max_epochs=3", f"ckpt_path={last}",
                                    "train=false"))  # evaluating steps no schedule

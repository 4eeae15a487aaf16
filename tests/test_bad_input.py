"""Bad input and faults at the run level: one clean message, a telling exit code, nothing lost."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from sklearn.metrics import balanced_accuracy_score

from app import argv as app_argv
from app import boundary, checks, training
from core.errors import CheckpointError, ConfigError
from lightning_modules.checkpoint_io import AtomicCheckpointIO
from lightning_modules.metrics import BalancedAccuracy
from tests.conftest import compose_config
from tests.run_py import python, run_dirs, wait_for

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["debug=smoke", "logger=none"]


def run_py(project_root: Path, *overrides: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """`python run.py ...` as a user types it, with outputs under `project_root`."""
    environment = {**os.environ, "PROJECT_ROOT": str(project_root)}
    environment.pop("HYDRA_FULL_ERROR", None)
    environment.update(env or {})
    return python("run.py", *overrides, env=environment, timeout=timeout)


def test_config_error_is_one_block_before_the_config_tree_with_exit_code_2(tmp_path):
    done = run_py(tmp_path, *QUIET, "trainer.max_epochs=abc")

    assert done.returncode == 2
    assert "trainer.max_epochs='abc' is not a whole number" in done.stderr
    assert "command line" in done.stderr and "trainer.max_epochs=10" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "model_checkpoint" not in done.stdout, "the check runs before the config tree is printed"
    error_file = run_dirs(tmp_path)[0] / "error.txt"
    assert error_file.read_text().splitlines()[-1].startswith("ConfigError: trainer.max_epochs='abc'")


def test_error_raised_by_a_constructor_is_shown_without_hydras_instantiation_traceback(tmp_path):
    done = run_py(tmp_path, *QUIET, "task.train_metrics_every_n_batches=-1")

    assert done.returncode == 2
    assert "ConfigError" in done.stderr and "task.train_metrics_every_n_batches=-1" in done.stderr
    assert "Error in call to target" not in done.stderr and "Traceback" not in done.stderr


def test_hydra_full_error_adds_the_traceback_to_the_block(tmp_path):
    done = run_py(tmp_path, *QUIET, "trainer.max_epochs=abc", env={"HYDRA_FULL_ERROR": "1"})

    assert done.returncode == 2
    assert "Traceback" in done.stderr and "check_value_types" in done.stderr
    assert "is not a whole number" in done.stderr


def test_multirun_job_with_a_config_error_fails_with_its_message_and_the_sweep_goes_on(tmp_path):
    done = run_py(tmp_path, "-m", *QUIET, "task.train_metrics_every_n_batches=-1,1")

    assert done.returncode != 0
    assert done.stderr.count("╭─ ConfigError") == 1
    sweep = next((tmp_path / "outputs" / "classify" / "multiruns").iterdir())
    assert "train_metrics_every_n_batches=-1" in (sweep / "0" / "error.txt").read_text()
    assert (sweep / "1" / "metrics.json").is_file(), "the next job ran to the end"


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("trainer.max_steps=1.5", "trainer.max_steps"),
    ("data.batch_size=big", "data.batch_size"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("trainer.devices=two", "trainer.devices"),
    ("trainer.limit_train_batches=most", "trainer.limit_train_batches"),
])
def test_non_numeric_value_of_a_numeric_key_is_named_before_instantiation(make_config, override, key):
    with pytest.raises(ConfigError, match=rf"^{key}=.* is not a .*command line as `{override}`"):
        checks.check_config(make_config(override))


@pytest.mark.parametrize("devices", ["2", "auto", "[0,1]", "-1"])
def test_valid_device_settings_pass_the_type_check(make_config, devices):
    checks.check_value_types(make_config(f"trainer.devices={devices}"))


def fake_checkpoint(path: Path, model: dict, task_name: str = "classify") -> Path:
    """A checkpoint file that stores a run config, as every checkpoint of a run does."""
    data = {"_target_": "datamodules.digits.DigitsDataModule"}
    config = {"model": model, "task_name": task_name, "data": data}
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(10, 512)}, "visionlab_config": config}, path)
    return path


@pytest.mark.parametrize("kept_fraction", [0.5, 0.99])
def test_truncated_checkpoint_is_named_with_its_path(make_config, tmp_path, kept_fraction):
    whole = fake_checkpoint(tmp_path / "whole.ckpt", {"_target_": "x.SimpleCNN"})
    truncated = tmp_path / "epoch003.ckpt"
    truncated.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * kept_fraction)])

    expected = rf"^Checkpoint {truncated} \(.* bytes\) cannot be read: .*truncated or corrupt"
    with pytest.raises(CheckpointError, match=expected):
        checks.check_config(make_config("train=false", f"ckpt_path={truncated}"))
    assert whole.stat().st_size > truncated.stat().st_size, "the files are left as they were"


def test_checkpoint_of_another_network_names_the_network_and_task_it_was_trained_with(make_config, tmp_path):
    resnet = {"_target_": "lightning_modules.nets.torchvision_classifier.TorchvisionClassifier",
              "name": "resnet18"}
    checkpoint = fake_checkpoint(tmp_path / "resnet.ckpt", resnet)

    with pytest.raises(CheckpointError) as raised:
        checks.check_config(make_config("model=simple_cnn", "train=false", f"ckpt_path={checkpoint}"))
    message = str(raised.value)
    assert "holds network resnet18 trained for task=classify" in message
    assert "this run builds SimpleCNN for task=classify" in message
    assert "state_dict" not in message and len(message) < 600


def test_checkpoint_whose_weights_do_not_fit_is_named_in_a_short_message(make_config, tmp_path):
    training.train(make_config("logger=none", "test=false"))
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt"))

    with pytest.raises(CheckpointError) as raised:
        training.train(make_config("logger=none", "train=false", f"ckpt_path={checkpoint}",
                                   "model.num_classes=5"))
    message = str(raised.value)
    assert message.startswith(f"Checkpoint {checkpoint} does not fit the network")
    assert "built it with model.num_classes=10" in message and "has model.num_classes=5" in message
    assert len(message.splitlines()) <= 6 and "state_dict" not in message
    assert torch.load(checkpoint, weights_only=False)["state_dict"], "the checkpoint is left as it was"


def test_missing_checkpoint_file_is_named(make_config, tmp_path):
    with pytest.raises(CheckpointError, match=r"No checkpoint file at .*nope.ckpt"):
        checks.check_config(make_config("train=false", f"ckpt_path={tmp_path / 'nope.ckpt'}"))


class DiskFullFile(io.RawIOBase):
    """A file that accepts `room` bytes, then fails as a full disk does."""

    def __init__(self, file: io.BufferedWriter, room: int) -> None:
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


def test_disk_full_while_saving_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, file: real_save(obj, DiskFullFile(file, room=600)))

    with pytest.raises(CheckpointError, match=r"No space left on the disk .* saved before are intact"):
        io_plugin.save_checkpoint({"epoch": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()

    assert io_plugin.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoint_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"epoch": 0}, tmp_path / "last.ckpt")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == mode


def test_resuming_in_a_run_directory_writes_hydras_files_beside_the_originals(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra" / "resume-1").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    argv = ["run.py", "seed=1", f"hydra.run.dir={run_dir}", "ckpt_path=last"]

    assert app_argv.keep_original_run_files(argv) == [*argv, "hydra.output_subdir=.hydra/resume-2"]
    assert app_argv.keep_original_run_files(argv[:-1]) == argv[:-1], "not a resume"
    fresh = ["run.py", f"hydra.run.dir={tmp_path / 'new'}", "ckpt_path=last"]
    assert app_argv.keep_original_run_files(fresh) == fresh, "nothing to keep in a new directory"


def test_sigterm_outside_fit_and_test_stops_the_run_as_inside_them():
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    original = signal.getsignal(signal.SIGTERM)
    with boundary.signals_stop_the_run():
        with pytest.raises(SIGTERMException):  # e.g. between fit and test, where Lightning has no handler
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        # inside fit and test Lightning's handler also calls the one it found, and stops at the batch's end
        previous = signal.signal(signal.SIGTERM,
                                 lambda signum, frame: boundary.sigterm_handler(signum, frame))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGTERM) is original


@pytest.mark.slow
def test_sigterm_saves_the_stop_point_prints_the_resume_command_and_exits_143(tmp_path):
    # long enough an epoch that the signal lands inside it, however fast the machine
    overrides = [*QUIET, "trainer.max_epochs=2", "trainer.limit_train_batches=400", "data.batch_size=2"]
    environment = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "run.py", *overrides], cwd=ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "outputs" / "classify" / "runs", process, timeout=180)
    run_dir = run_dirs(tmp_path)[0]
    wait_for(run_dir / "checkpoints" / "last.ckpt", process, timeout=180)
    end_of_epoch_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 143
    assert not (run_dir / "metrics.json").exists()
    stopped = torch.load(run_dir / "checkpoints" / "stopped.ckpt", weights_only=False)
    assert stopped["global_step"] > end_of_epoch_step, "saved where it stopped, not at the epoch's end"
    assert f"step {stopped['global_step']}" in stderr
    command = stderr.split("Resume with:\n")[1].splitlines()[0].strip()
    assert f"hydra.run.dir={run_dir}" in command
    assert command.endswith(f"ckpt_path={run_dir / 'checkpoints' / 'stopped.ckpt'}")
    original_overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    original_config = (run_dir / "config_resolved.yaml").read_text()

    resumed = python(*shlex.split(command)[1:], env=environment, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 2 * 400)
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == original_overrides
    assert (run_dir / "config_resolved.yaml").read_text() == original_config
    assert "stopped.ckpt" in (run_dir / ".hydra" / "resume-1" / "overrides.yaml").read_text()
    assert (run_dir / ".hydra" / "resume-1" / "config_resolved.yaml").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["test/acc"] > 0


# Epoch 0 trains at lr 1e-3; StepLR then multiplies it by 1e13, and epoch 1 diverges.
DIVERGES_IN_EPOCH_1 = [*QUIET, "optimizer=sgd", "optimizer.lr=1e-3", "scheduler=step",
                       "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=1e13",
                       "trainer.max_epochs=3", "trainer.limit_train_batches=5"]


def test_non_finite_loss_stops_the_run_naming_step_and_learning_rate_and_keeps_finite_checkpoints(tmp_path):
    done = run_py(tmp_path, *DIVERGES_IN_EPOCH_1)

    message = " ".join(done.stderr.replace("│", " ").split())
    assert done.returncode == 2
    assert "Training diverged" in message and "at epoch 1" in message and "learning rate 1e+10" in message
    assert "optimizer.lr=" in message and "gradient_clip_val" in message
    run_dir = run_dirs(tmp_path)[0]
    assert not (run_dir / "metrics.json").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == ["epoch000.ckpt", "last.ckpt"]
    weights = torch.load(run_dir / "checkpoints" / "epoch000.ckpt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
@pytest.mark.ddp
def test_error_on_every_ddp_process_is_printed_once(tmp_path):
    done = run_py(tmp_path, "trainer=ddp", *DIVERGES_IN_EPOCH_1)

    assert done.returncode == 2
    assert done.stderr.count("Training diverged") == 1 and "Traceback" not in done.stderr


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_acc_macro_is_balanced_accuracy_when_a_class_is_predicted_but_never_a_target():
    rng = np.random.default_rng(0)
    metric = BalancedAccuracy(num_classes=5)
    targets, predictions = [], []
    for _ in range(4):
        target = rng.integers(0, 4, size=16)  # class 4 never occurs in the targets
        predicted = np.where(rng.random(16) < 0.6, target, rng.integers(0, 5, size=16))
        predicted[0] = 4  # ... but is predicted
        scores = torch.nn.functional.one_hot(torch.from_numpy(predicted), 5).float()
        metric.update(scores, torch.from_numpy(target))
        targets.append(target)
        predictions.append(predicted)

    expected = balanced_accuracy_score(np.concatenate(targets), np.concatenate(predictions))
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


def test_acc_macro_by_hand():
    metric = BalancedAccuracy(num_classes=3)
    # class 0: 2 of 3 right; class 1: 1 of 1 right; class 2: never a target, predicted once.
    metric.update(torch.tensor([0, 0, 2, 1]), torch.tensor([0, 0, 0, 1]))
    assert metric.compute().item() == pytest.approx((2 / 3 + 1) / 2)


# An odd-sized test set (181 images) that 2 processes cannot split evenly.
ODD_TEST = [*QUIET, "data.test_fraction=181", "data.batch_size=32", "trainer.limit_test_batches=null",
            "trainer.limit_val_batches=null"]


@pytest.mark.slow
@pytest.mark.ddp
def test_evaluation_on_two_processes_scores_every_sample_once_like_one_process(tmp_path):
    trained = training.train(compose(tmp_path / "train", ODD_TEST))
    checkpoint = next((tmp_path / "train" / "checkpoints").glob("epoch*.ckpt"))
    evaluate = [*ODD_TEST, "train=false", f"ckpt_path={checkpoint}"]
    single = training.train(compose(tmp_path / "single", evaluate))

    done = run_py(tmp_path, "trainer=ddp", *evaluate)

    assert done.returncode == 0, done.stderr[-3000:]
    distributed = json.loads((run_dirs(tmp_path)[0] / "metrics.json").read_text())
    exact = ("test/acc", "test/acc_macro", "test/f1_macro", "test/precision_weighted",
             "test_per_class/recall_3")
    for key in exact:
        assert distributed[key] == single[key], key
    for key in ("test/ap_macro", "test/auroc_macro"):  # sums of the same terms in another order
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key
    # Each batch's mean loss is rounded in float32, and the processes' batches hold other samples.
    assert distributed["test/loss"] == pytest.approx(single["test/loss"], rel=1e-6)
    assert trained["test/acc"] == pytest.approx(single["test/acc"])


def compose(output_dir: Path, overrides: list[str]) -> DictConfig:
    """run.py's config for `overrides`, writing under `output_dir`."""
    return compose_config(overrides, output_dir)

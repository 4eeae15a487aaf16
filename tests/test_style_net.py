"""task=style_net end to end: a smoke run, learning on held-out images, multi-style, AdaIN, DDP, sweeps,
resume, and the bad configurations it refuses."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from app import build as app_build
from app import training
from app.boundary import unwrapped
from core.errors import ConfigError
from tests.conftest import compose_config
from tests.run_py import python, run_dirs, run_py, sweep_dirs
from tests.style_fakes import write_fake_wikiart

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
         "callbacks.rich_model_summary=null", "callbacks.rich_progress_bar=null"]
# Small enough to learn in about a minute on 2 CPU cores: 32 px crops of the bundled photos (6 training
# images, 8 crops each per epoch), a narrow Johnson network, VGG19 with random weights (offline), the
# default layers and weights (under which both terms of the objective matter: asserted).
SMALL = ["task=style_net", "task.loss_network.weights=null", "data.image_size=32", "data.resize_size=40",
         "data.eval_size=48", "data.style_size=64", "data.crops_per_image=8", "data.num_workers=0"]
LEARN = [*SMALL, "model.base_channels=8", "model.num_residual_blocks=2", "trainer.max_epochs=4"]
TERMS = ("content", "style", "tv", "total")


def untrained(overrides: list[str], output_dir: Path) -> dict[str, float]:
    """The held-out metrics of the network as `python run.py <overrides>` initialises it (same seed)."""
    datamodule, module, trainer = app_build.build(compose_config([*overrides, *QUIET], output_dir))
    metrics = trainer.validate(module, datamodule, verbose=False)[0]
    return {key: float(value) for key, value in metrics.items()}


def test_a_smoke_run_writes_grids_metrics_and_checkpoints_without_the_loss_network(make_config, tmp_path):
    metrics = training.train(make_config("task=style_net", "task.loss_network.weights=null"))
    run_dir = tmp_path / "run"
    assert all(math.isfinite(metrics[f"test/{term}_loss"]) for term in TERMS)
    assert metrics["train/images"] == 4, "2 batches of 2 crops"
    assert metrics["cost/train_images_per_s"] > 0, "the second batch's crops, timed"
    grids = run_dir / "validation"
    assert (grids / "epoch000.png").is_file() and (grids / "test.png").is_file()
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all(key.startswith("net.") for key in state), "the loss network is never checkpointed"

    checkpoint = run_dir / "checkpoints" / "epoch000.ckpt"
    evaluate = ["debug=smoke", "task=style_net", "task.loss_network.weights=null", "train=false",
                f"ckpt_path={checkpoint}"]
    evaluated = training.train(compose_config(evaluate, tmp_path / "evaluated"))
    assert evaluated["test/total_loss"] == pytest.approx(metrics["test/total_loss"], rel=1e-5)


@pytest.mark.slow
def test_run_py_trains_a_network_whose_held_out_loss_falls_five_fold_with_every_term(tmp_path):
    before = untrained(LEARN, tmp_path / "untrained")
    done = python("run.py", *LEARN, *QUIET, env={**os.environ, "PROJECT_ROOT": str(tmp_path)}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path, "style_net")
    after = json.loads((run_dir / "metrics.json").read_text())

    assert after["val/total_loss"] < before["val/total_loss"] / 5
    for term in TERMS:
        assert after[f"val/{term}_loss"] < before[f"val/{term}_loss"], f"the {term} term did not fall"
    style_share = 1e5 * after["val/style_loss"] / after["val/total_loss"]  # task.style_weight: 1e5
    assert 0.2 < style_share < 0.8, f"both terms matter after training (style: {style_share:.0%})"
    assert after["test/total_loss"] < before["val/total_loss"] / 5, "the best checkpoint, tested"


@pytest.mark.slow
def test_a_three_style_network_learns_every_style(tmp_path):
    overrides = [*LEARN, "model=multistyle_net"]  # each style gets a third of the 48 steps: slower to learn
    before = untrained(overrides, tmp_path / "untrained")
    after = training.train(compose_config([*overrides, *QUIET], tmp_path / "run"))
    for term in ("content", "style", "total"):  # measured in all three styles
        assert after[f"val/{term}_loss"] < 0.8 * before[f"val/{term}_loss"], term
    assert (tmp_path / "run" / "validation" / "epoch003.png").is_file()


@pytest.mark.slow
def test_adain_learns_from_wikiart_paintings_in_bf16_mixed_precision(tmp_path):
    wikiart = write_fake_wikiart(tmp_path / "wikiart", per_style=3)
    overrides = [*SMALL, "model=adain", "data=wikiart", f"data.root={wikiart}", "data.batch_size=4",
                 "data.train_csv=style_train.csv", "data.val_csv=style_val.csv", "precision=bf16-mixed",
                 "trainer.max_epochs=3"]
    before = untrained(overrides, tmp_path / "untrained")
    after = training.train(compose_config([*overrides, *QUIET], tmp_path / "run"))
    assert math.isfinite(after["val/total_loss"]) and after["train/images"] == 6 * 8
    assert after["val/loss"] < before["val/loss"]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_on_two_processes_trains_each_crop_once_and_writes_one_run(tmp_path):
    overrides = [*LEARN, "trainer.max_epochs=1", "data.crops_per_image=2", "strategy=ddp",
                 "trainer.devices=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    done = python("run.py", *overrides, env={**os.environ, "PROJECT_ROOT": str(tmp_path)}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path, "style_net")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/images"] == 6 * 2, "each of the 12 crops trained on once, over both processes"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["epoch000.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run_dir / "validation").iterdir()) == ["epoch000.png", "test.png"]
    writers = {f.name.split(".")[-2] for f in (run_dir / "tensorboard").glob("events.out.tfevents.*")}
    assert len(writers) == 1, "only rank 0 writes TensorBoard events"

    checkpoint = run_dir / "checkpoints" / "epoch000.ckpt"
    evaluate = [*LEARN, *QUIET, "train=false", f"ckpt_path={checkpoint}"]
    alone = training.train(compose_config(evaluate, tmp_path / "alone"))
    assert alone["test/total_loss"] == pytest.approx(metrics["test/total_loss"], rel=1e-4)


@pytest.mark.slow
def test_a_sweep_over_the_style_weight_runs_every_job_and_ranks_them(tmp_path):
    run_py(tmp_path, "-m", "task=style_net", "task.loss_network.weights=null", "task.style_weight=1e3,1e6")
    (sweep_dir,) = sweep_dirs(tmp_path, "style_net")
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["task.style_weight"]) for row in rows) == [1e3, 1e6]
    assert all(row["status"] == "done" and math.isfinite(float(row["test/total_loss"])) for row in rows)


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    overrides = [*LEARN, *QUIET, "trainer.max_epochs=2", "trainer.deterministic=true",
                 "data.crops_per_image=1"]
    uninterrupted = training.train(compose_config(overrides, tmp_path / "uninterrupted"))
    training.train(compose_config([*overrides, "trainer.max_epochs=1"], tmp_path / "resumed"))
    resumed = training.train(compose_config([*overrides, "ckpt_path=last"], tmp_path / "resumed"))
    assert resumed["val/loss"] == pytest.approx(uninterrupted["val/loss"], rel=1e-6)
    assert resumed["test/total_loss"] == pytest.approx(uninterrupted["test/total_loss"], rel=1e-6)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=multistyle_net", "model.num_styles=2"], r"model.num_styles=2, but data.style names 3"),
    (["data.style=[skimage:coffee,skimage:rocket]"], r"transformer_net learns one style.*coffee, rocket"),
    (["loss_network=vgg16", "model=adain", "model.encoder_arch=vgg19"], r"choose loss_network=vgg19"),
    (["task.style_loss=gramm"], r"task.style_loss='gramm'"),
])
def test_configurations_that_cannot_train_are_refused_with_the_fix(make_config, overrides, message):
    with pytest.raises(Exception) as raised:  # noqa: B017 (Hydra wraps errors of constructors; run.py unwraps)
        training.train(make_config("task=style_net", "task.loss_network.weights=null", *overrides))
    error = unwrapped(raised.value)
    assert isinstance(error, ConfigError) and re.search(message, str(error)), error


def test_wikiart_styles_with_a_single_style_network_are_refused(make_config, tmp_path):
    wikiart = write_fake_wikiart(tmp_path / "wikiart")
    with pytest.raises(ConfigError, match="only model=adain can learn from"):
        training.train(make_config("task=style_net", "task.loss_network.weights=null", "data=wikiart",
                              f"data.root={wikiart}"))


def test_a_missing_coco_folder_exits_2_with_the_layout(tmp_path):
    done = run_py(tmp_path, "task=style_net", "data=coco", f"data.root={tmp_path / 'nowhere'}",
                  "logger=none", check=False)
    assert done.returncode == 2
    assert "train2014/*.jpg" in " ".join(done.stderr.split())

"""What a new user sees: a brief config, a quiet console, a summary of where the results are, a full table."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from app import console, training
from tests.conftest import CONF_DIR, ROOT

NOISE = ("💡 Tip", "LeafSpec", "pin_memory", "already configured with model summary",
         "configure_optimizers` returned `None`", "module(s) in eval mode")
NOT_OPTIONS = {"hydra", "debug/task", "debug/search"}  # Hydra's own config; parts of the debug presets


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python run.py debug=smoke` as a user would run it, and its run directory."""
    root = tmp_path_factory.mktemp("project")
    done = subprocess.run([sys.executable, "run.py", "debug=smoke"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PROJECT_ROOT": str(root), "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done, next((root / "outputs" / "classify" / "runs").iterdir())


def test_a_run_ends_with_where_its_results_are_on_the_console_and_in_run_log(classify_run):
    done, run_dir = classify_run
    console = done.stdout + done.stderr
    for text in (f"Run finished. Directory: {run_dir}", "best/val/acc: ", "test/acc ",
                 f"best checkpoint: {run_dir}/checkpoints/epoch000.ckpt", f"metrics: {run_dir}/metrics.json",
                 f"tensorboard --logdir {run_dir}/tensorboard"):
        assert text in console
        assert text in (run_dir / "run.log").read_text()


def test_the_console_shows_the_chosen_groups_and_overrides_and_no_noise(classify_run):
    done, run_dir = classify_run
    console = done.stdout + done.stderr
    assert re.search(r"groups +.*task=classify .*data=digits .*model=mnist_cnn", console)
    assert re.search(r"overrides +debug=smoke", console)
    assert "config_resolved.yaml" in console and "_target_" not in console, "the brief form, not the tree"
    assert [line for line in console.splitlines() if any(noise in line for noise in NOISE)] == []


def test_style_runs_without_lightnings_warnings_about_its_design_and_names_its_images(make_config, caplog):
    caplog.set_level(logging.INFO, logger="run")
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, as in a real run
        training.train(make_config("task=style", "model.weights=null", "task.num_scales=1",
                                   "data.image_size=32", "trainer.limit_train_batches=1"))
    by_design = NOISE[-2:]
    assert [str(w.message) for w in caught if any(noise in str(w.message) for noise in by_design)] == []
    assert "stylized images: " in caplog.text and "checkpoint" not in caplog.text


def test_the_full_config_tree_fits_80_columns_without_cutting_values(make_config, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    long_path = "/" + "/".join(f"folder{i:02d}" for i in range(16))
    cfg = make_config("task=segment", "data=voc", f"data.root={long_path}")
    console.print_config_tree(cfg)
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80
    assert "folder15" in printed


def readme_group_table() -> dict[str, set[str]]:
    """The README's group table: group -> the options it names (backticked words of the second column)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("| group | options | what it chooses |")[1].split("\n\n")[0]
    table = {}
    for row in section.splitlines()[2:]:
        group, options = row.split("|")[1:3]
        table[group.strip().strip("`")] = set(re.findall(r"`([\w-]+)`", options))
    return table


def test_the_readme_group_table_lists_every_option_of_every_group():
    groups = {str(p.parent.relative_to(CONF_DIR)) for p in CONF_DIR.rglob("*.yaml")} - {"."} - NOT_OPTIONS
    on_disk = {g: {p.stem for p in (CONF_DIR / g).glob("*.yaml")} for g in groups}
    table = readme_group_table()
    assert set(table) == groups
    for group, options in on_disk.items():
        assert table[group] >= options, f"README's {group} row misses {options - table[group]}"
        assert table[group] - options <= {"basic"}, f"README's {group} row names {table[group] - options}"


def test_every_debug_part_belongs_to_a_preset():
    presets = {p.stem for p in (CONF_DIR / "debug").glob("*.yaml")}
    for part in (CONF_DIR / "debug").glob("*/*.yaml"):
        assert part.stem.split("_")[0] in presets
        assert OmegaConf.load(part)


def test_segmentation_overlays_are_enlarged_by_nearest_and_carry_a_class_legend(monkeypatch):
    from types import SimpleNamespace

    from callbacks.segmentation_overlays import SegmentationOverlays
    from core.figures import voc_palette

    images = torch.rand(2, 1, 52, 69)
    targets = torch.zeros(2, 52, 69, dtype=torch.long)
    targets[:, 10:20, 10:30] = 3
    targets[:, 0, 0] = 255
    preds = torch.zeros(2, 52, 69, dtype=torch.long)
    drawn = {}
    monkeypatch.setattr("callbacks.segmentation_overlays.log_image",
                        lambda trainer, tag, image: drawn.update({tag: image}))
    classes = ["bg", "one", "two", "three"]
    trainer = SimpleNamespace(global_step=7, datamodule=SimpleNamespace(classes=classes))
    SegmentationOverlays(num_images=2, min_side=768).draw(trainer, SimpleNamespace(num_classes=4),
                                                          images, preds, targets)
    figure = drawn["val/overlays"]
    grid_width = 3 * 69 + 4 * 2
    factor = -(-768 // grid_width)
    assert figure.shape[-1] == grid_width * factor, "enlarged by a whole factor"
    grid_height = (2 * 52 + 3 * 2) * factor
    samples = figure[:, :grid_height:factor, ::factor]
    blocks = samples.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    assert torch.equal(blocks, figure[:, :grid_height]), "nearest: blocks of one colour"
    pixels = (figure[:, grid_height:] * 255).round().int().reshape(3, -1).T.tolist()
    legend_colours = {tuple(c) for c in pixels}
    assert tuple(voc_palette(4)[3].tolist()) in legend_colours, "class 'three' has its swatch"
    assert tuple(voc_palette(4)[1].tolist()) not in legend_colours, "classes not shown are not in the legend"


@pytest.mark.parametrize(("setting", "device", "pinned"), [
    ("auto", "cpu", False), ("auto", "cuda", True), (True, "cpu", True), (False, "cuda", False),
])
def test_pin_memory_auto_pins_only_for_a_cuda_trainer_and_an_explicit_choice_wins(setting, device, pinned):
    from types import SimpleNamespace

    from datamodules.digits import DigitsDataModule

    datamodule = DigitsDataModule(pin_memory=setting)
    datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    assert datamodule.pins_memory() is pinned

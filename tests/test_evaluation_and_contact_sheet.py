"""What a run tells about the model it used: the checkpoint a `train=false` run evaluated, and contact
sheets whose titles are drawn whatever the script of the file and class names."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from core.figures import drawable, title_fonts
from tests.inference_helpers import digits_classifier
from tests.run_py import run_dirs, run_py


def test_an_evaluation_names_the_checkpoint_it_evaluated_not_the_training_runs_best(
        tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    moved = shutil.copy(checkpoint, tmp_path / "moved.ckpt")  # the training run's best path is elsewhere
    done = run_py(tmp_path, "train=false", f"ckpt_path={moved}")
    output = done.stdout + done.stderr
    assert f"evaluated checkpoint: {moved}" in output
    assert "best checkpoint" not in output and str(checkpoint) not in output
    (run_dir,) = run_dirs(tmp_path)
    assert not [key for key in json.loads((run_dir / "metrics.json").read_text()) if key.startswith("best/")]


def test_contact_sheet_titles_have_a_glyph_for_every_character_of_cjk_names(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    photos = tmp_path / "写真"
    photos.mkdir()
    for index, name in enumerate(("猫の写真.png", "사진.png", "photo.png")):
        Image.fromarray(np.full((28, 28), 40 * index, np.uint8)).save(photos / name)
    done = run_py(tmp_path, f"predict.input={photos}", f"ckpt_path={checkpoint}")
    assert "missing from font" not in done.stdout + done.stderr  # matplotlib's warning for an empty box
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "contact_sheet.png").is_file()
    assert "猫の写真.png" in (run_dir / "predictions.csv").read_text(encoding="utf-8")


def test_an_installed_cjk_font_draws_the_names_themselves():
    fonts = title_fonts()
    if len(fonts) == 1:
        pytest.skip("no CJK font installed (CI installs fonts-wqy-microhei; see core.figures.CJK_FAMILIES)")
    assert drawable("猫の写真_사진.png", fonts) and not drawable("猫", ["DejaVu Sans"])

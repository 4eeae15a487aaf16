"""Gatys et al.'s layer reconstructions (`experiment=style_reconstructions`) and style transfer with an empty
content or style layer set (that term absent)."""

from __future__ import annotations

import io
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.lbfgs import LBFGS
from lightning_modules.nets.vgg_features import VGGFeatures
from lightning_modules.style_reconstructions import caption, style_layer_sets
from lightning_modules.style_transfer import StyleTransferModule
from tests.run_py import run_dirs, run_py

pytestmark = pytest.mark.filterwarnings("ignore:VGG19 RUNS WITH RANDOM WEIGHTS")


def sample(size: int = 32) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"name": "noise", "content": torch.rand(1, 3, size, size, generator=g),
            "styles": [torch.rand(1, 3, size, size, generator=g)], "style_names": ["s"],
            "style_weights": torch.ones(1)}


@pytest.mark.parametrize(("content_layers", "style_layers"), [
    ([], {"relu1_1": 1.0, "relu2_1": 1.0}),
    (["relu2_2"], {}),
    ([], {}),
])
def test_an_empty_content_or_style_layer_set_leaves_that_term_out(content_layers, style_layers):
    module = StyleTransferModule(VGGFeatures(weights=None), partial(LBFGS, lr=1.0), content_layers,
                                 style_layers, content_weight=2.0, style_weight=3.0, tv_weight=5.0,
                                 init="noise", evaluations=3)
    out = module.stylize(sample())
    history = out["history"]
    assert len(history) == 3 and out["result"].shape == (1, 3, 32, 32)
    for losses in history:
        if not content_layers:
            assert losses["content"] == 0
        if not style_layers:
            assert losses["style"] == 0
        expected = 2.0 * losses["content"] + 3.0 * losses["style"] + 5.0 * losses["tv"]
        assert losses["total"] == pytest.approx(expected, rel=1e-5)
    assert history[-1]["total"] < history[0]["total"]


def test_style_layer_sets_grow_one_layer_at_a_time_with_weights_summing_to_one():
    sets = style_layer_sets({"relu1_1": 1.0, "relu2_1": 3.0, "relu3_1": 4.0})
    assert sets == [{"relu1_1": 1.0}, {"relu1_1": 0.25, "relu2_1": 0.75},
                    {"relu1_1": 0.125, "relu2_1": 0.375, "relu3_1": 0.5}]
    assert [caption(s) for s in sets] == ["relu1_1", "relu1_1 + relu2_1", "relu1_1 ... relu3_1"]


@pytest.mark.slow  # ten VGG19 optimisations; the README's smoke run covers the default experiment
def test_the_reconstructions_grid_is_written_and_reaches_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_py(tmp_path, "experiment=style_reconstructions", "model.weights=null", "data.image_size=32",
           "task.evaluations=2", "task.content_layers=[relu1_2,relu3_2]",
           "task.style_layers={relu1_1:1,relu2_1:1,relu3_1:1}")
    (run_dir,) = run_dirs(tmp_path, "style")
    grid = np.asarray(Image.open(run_dir / "reconstructions" / "astronaut.png"))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    logged = Image.open(io.BytesIO(events.Images("astronaut/reconstructions")[0].encoded_image_string))
    assert np.array_equal(np.asarray(logged), grid)
    assert grid.shape[1] > 3.5 * grid.shape[0] / 2  # 2 rows of 4 tiles (the image and 3 reconstructions)
    assert {"train/content_relu3_2_loss", "train/style_relu3_1_loss"} <= set(events.Tags()["scalars"])


def test_a_wrong_layer_name_stops_before_any_image_with_the_valid_names(tmp_path):
    done = run_py(tmp_path, "experiment=style_reconstructions", "model.weights=null",
                  "task.content_layers=[relu9_9]", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Unknown VGG19 layer(s) ['relu9_9']" in done.stderr.replace("│", " ").replace("\n", " ")

"""Neural style transfer: the maths against hand-computed values, the module, end-to-end runs."""

from __future__ import annotations

import copy
import os
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from app import checks, training
from core.errors import ConfigError
from datamodules.style_images import StyleImagesDataModule
from lightning_modules.nets.vgg_features import VGGFeatures, vgg_layer_names
from lightning_modules.optimization import ParamGroups
from lightning_modules.style_losses import (
    coarse_to_fine_sizes,
    gram_matrix,
    rgb_to_yiq,
    total_variation,
    transfer_luminance,
    yiq_to_rgb,
)
from lightning_modules.style_transfer import StyleTransferModule
from tests.run_py import python, run_dirs, run_py

STYLE_LAYERS = {"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2, "relu5_1": 0.2}
QUIET = ["task=style", "model.weights=null", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
         "data.image_size=48", "task.num_scales=1", "task.evaluations=6", "task.progress_every=3"]


def test_gram_matrix_matches_a_hand_computed_one():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(features)[0], expected)


def test_gram_matrix_does_not_depend_on_image_size():
    features = torch.rand(1, 4, 5, 6)
    tiled = features.repeat(1, 1, 3, 2)  # the same texture over six times the area
    torch.testing.assert_close(gram_matrix(tiled), gram_matrix(features))



def test_gram_matrix_is_computed_in_float32_under_mixed_precision():
    features = torch.rand(1, 8, 16, 16) + 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(features.bfloat16())
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, gram_matrix(features.bfloat16().float()))

def test_vgg_layer_names_follow_torchvision_vgg19_indices_block_by_block():
    names = vgg_layer_names(torchvision.models.vgg19().features)
    assert len(names) == 37
    assert names[0] == "conv1_1" and names[4] == "pool1" and names[5] == "conv2_1"
    assert names.index("relu4_2") == 22 and names.index("conv5_1") == 28 and names[36] == "pool5"


def test_vgg_features_capture_a_conv_output_unharmed_by_the_following_relu():
    net = VGGFeatures(weights=None, layers=["conv1_1", "relu1_1"])
    out = net(torch.rand(1, 3, 32, 32))
    assert (out["conv1_1"] < 0).any()  # an in-place ReLU would have zeroed these
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp(min=0))
    assert len(net.features) == 2  # truncated after the deepest layer asked for
    assert not any(p.requires_grad for p in net.parameters())


def test_unknown_vgg_layer_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown VGG19 layer\(s\) \['conv4_5'\].*relu4_2"):
        VGGFeatures(weights=None, layers=["conv4_5"])


def test_average_pooling_replaces_max_pooling():
    net = VGGFeatures(weights=None, pooling="avg", layers=["relu2_1"])
    assert isinstance(net.features[4], torch.nn.AvgPool2d)


def test_total_variation_matches_a_hand_computed_value():
    image = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert total_variation(image).item() == pytest.approx(1.0)  # no vertical change, 1 horizontally


def test_yiq_round_trip_is_exact():
    image = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(image)), image, atol=1e-5, rtol=0)


def test_preserved_colours_take_luminance_from_the_result_and_chroma_from_the_content():
    result = torch.rand(1, 3, 16, 16) * 0.2 + 0.4  # mid-range colours: nothing is clipped
    content = torch.rand(1, 3, 16, 16) * 0.2 + 0.4
    out = rgb_to_yiq(transfer_luminance(result, content))
    torch.testing.assert_close(out[:, 0], rgb_to_yiq(result)[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-4, rtol=0)


def test_scales_double_up_to_the_final_size():
    assert coarse_to_fine_sizes(128, 3) == [32, 64, 128]
    assert coarse_to_fine_sizes(100, 1) == [100]


def sample(name: str = "a", size: int = 64, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"name": name, "content": torch.rand(1, 3, size, size, generator=generator),
            "styles": [torch.rand(1, 3, size, size, generator=generator)], "style_names": ["s"],
            "style_weights": torch.tensor([1.0])}


@pytest.fixture(scope="module")
def random_vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(weights=None)


def module(tmp_path, vgg: VGGFeatures, **options) -> StyleTransferModule:
    settings = {"content_layers": ["relu4_2"], "style_layers": STYLE_LAYERS, "init": "noise",
                "evaluations": 40, "output_dir": str(tmp_path), **options}
    return StyleTransferModule(copy.deepcopy(vgg), partial(torch.optim.LBFGS, lr=1.0), **settings)


def test_lbfgs_lowers_the_total_loss_by_a_large_factor_within_a_few_dozen_evaluations(tmp_path, random_vgg):
    history = module(tmp_path, random_vgg).stylize(sample())["history"]
    assert len(history) == 40  # counted in loss evaluations
    assert history[-1]["total"] < history[0]["total"] / 4



def test_lbfgs_under_bf16_autocast_lowers_the_float32_loss_of_the_result(tmp_path, random_vgg):
    styler, image = module(tmp_path, random_vgg), sample()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = styler.stylize(image)["result"]
    with torch.no_grad():  # judged in float32, outside autocast
        targets = styler.targets(image["content"], image["styles"], image["style_weights"])
        start = styler.initial_image(image["content"], image["name"])
        assert styler.losses(result, targets)["total"] < styler.losses(start, targets)["total"] / 4

def test_noise_init_depends_on_the_image_name_and_seed_not_on_the_order(tmp_path, random_vgg):
    styler = module(tmp_path, random_vgg)
    content = torch.zeros(1, 3, 8, 8)
    first = styler.initial_image(content, "a")
    styler.initial_image(content, "b")
    torch.testing.assert_close(styler.initial_image(content, "a"), first)
    assert not torch.equal(styler.initial_image(content, "b"), first)


def test_a_nan_loss_stops_that_image_with_a_message_and_the_others_go_on(tmp_path, caplog, random_vgg):
    styler = module(tmp_path, random_vgg, evaluations=3)
    broken = sample("broken")
    broken["content"][..., 0, 0] = float("nan")
    assert "failed" in styler.training_step(broken, 0)
    assert "Styling broken stopped: the loss became nan" in caplog.text
    styler.training_step(sample("fine"), 1)
    assert [p.name for p in tmp_path.glob("*.png")] == ["fine__s.png"]


def test_too_small_an_image_is_refused_with_its_size(tmp_path):
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "tiny.png")
    dm = StyleImagesDataModule(content=str(tmp_path / "tiny.png"))
    with pytest.raises(ValueError, match=r"tiny.png is 24x20 pixels.*at least 32"):
        dm.setup()


def test_missing_and_unreadable_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        StyleImagesDataModule(content=str(tmp_path / "nowhere.jpg")).setup()
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(RuntimeError, match="Cannot read image .*bad.jpg"):
        StyleImagesDataModule(content=str(tmp_path / "bad.jpg")).setup()


def test_style_blend_weights_must_match_the_style_images():
    dm = StyleImagesDataModule(style=["skimage:coffee", "skimage:rocket"], style_weights=[1.0])
    with pytest.raises(ValueError, match="one positive weight per style image"):
        dm.setup()


def test_folder_of_content_images_is_styled_in_one_run(tmp_path):
    for name in ("one", "two"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(
            tmp_path / f"{name}.png")
    dm = StyleImagesDataModule(content=str(tmp_path), style=["skimage:coffee", "skimage:rocket"],
                               style_weights=[3, 1], image_size=40)
    dm.setup()
    items = [dm.dataset[i] for i in range(len(dm.dataset))]
    assert [item["name"] for item in items] == ["one.png", "two.png"]
    assert items[0]["content"].shape == (1, 3, 32, 40)
    torch.testing.assert_close(items[0]["style_weights"], torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_run_py_styles_every_content_image_and_writes_pngs(make_config, tmp_path, optimizer):
    lr = "optimizer.lr=0.05" if optimizer == "adam" else "optimizer.lr=1"
    metrics = training.train(make_config(*QUIET, f"optimizer={optimizer}", lr, "task.num_scales=2",
                                    "data.image_size=64", fast=False))
    written = sorted(p.name for p in (tmp_path / "run" / "stylized").glob("*.png"))
    assert written == ["astronaut__immunohistochemistry.png", "chelsea__immunohistochemistry.png"]
    assert Image.open(tmp_path / "run" / "stylized" / written[0]).size == (64, 64)
    assert metrics["train/total_loss"] > 0


def test_style_with_lbfgs_and_fp16_mixed_precision_is_refused(make_config):
    with pytest.raises(ConfigError, match="lbfgs"):
        checks.check_config(make_config(*QUIET, "precision=16-mixed", fast=False))


def test_lbfgs_stopping_options_are_refused_because_task_evaluations_sets_the_budget(tmp_path):
    done = run_py(tmp_path, "task=style", "+optimizer.max_iter=50", "logger=none", check=False)
    assert done.returncode == 2
    assert "optimizer.max_iter=50 does not apply to task=style" in " ".join(done.stderr.split())


def test_parameter_grouping_options_are_refused_because_the_image_is_one_tensor(tmp_path, random_vgg):
    with pytest.raises(ConfigError, match="param_groups.norm_weight_decay=0.0 does not apply to task=style"):
        module(tmp_path, random_vgg, param_groups=ParamGroups(norm_weight_decay=0.0))
    assert module(tmp_path, random_vgg, param_groups=ParamGroups()).optimizer.func is torch.optim.LBFGS


def test_the_coarsest_scale_obeys_the_data_configs_minimum_size(make_config, tmp_path, random_vgg):
    assert make_config("task=style", "data.min_size=40").task.min_size == 40
    styler = module(tmp_path, random_vgg, num_scales=2, evaluations=1, min_size=40)
    with pytest.raises(ConfigError, match=r"scale would be 32 pixels; VGG needs 40 \(data.min_size\)"):
        styler.stylize(sample(size=64))


@pytest.mark.ddp
def test_an_image_styled_alone_equals_the_same_image_styled_by_two_ddp_processes(tmp_path):
    common = ["run.py", *QUIET, "logger=none", "task.init=noise",
              "data.content=[skimage:astronaut,skimage:coffee,skimage:chelsea]"]
    stylized = {}
    runs = {"alone": ["data.content=skimage:coffee"], "ddp": ["strategy=ddp", "trainer.devices=2"]}
    for name, extra in runs.items():
        done = python(*common, *extra, env={**os.environ, "PROJECT_ROOT": str(tmp_path / name)}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (run_dir,) = run_dirs(tmp_path / name, "style")
        stylized[name] = run_dir / "stylized"
    assert len(list(stylized["ddp"].glob("*.png"))) == 3
    name = "coffee__immunohistochemistry.png"
    a = np.asarray(Image.open(stylized["alone"] / name), dtype=np.int16)
    b = np.asarray(Image.open(stylized["ddp"] / name), dtype=np.int16)
    assert np.abs(a - b).max() <= 2  # 8-bit PNGs of the same result, up to float summation order


def test_local_vgg19_weights_file_is_loaded_whole_or_features_only(tmp_path):
    full = torchvision.models.vgg19()
    torch.save(full.state_dict(), tmp_path / "vgg19.pth")
    torch.save(full.features.state_dict(), tmp_path / "vgg19_features.pth")
    for name in ("vgg19.pth", "vgg19_features.pth"):
        net = VGGFeatures(weights=str(tmp_path / name), layers=["relu5_1"])
        torch.testing.assert_close(net.features[28].weight, full.features[28].weight)


def test_a_content_image_already_at_the_final_size_is_styled_with_lbfgs(tmp_path, random_vgg):
    content = torch.rand(1, 64, 64, 3).permute(0, 3, 1, 2)  # a channels-last view, as from a decoder
    styled = sample()
    styled["content"] = content
    history = module(tmp_path, random_vgg, evaluations=2, init="content").stylize(styled)["history"]
    assert len(history) >= 2

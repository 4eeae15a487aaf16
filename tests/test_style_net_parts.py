"""task=style_net's parts: the networks, the shared loss maths, the loss networks, the datamodules."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from core.errors import ConfigError, DataError, MissingDataError
from datamodules.style_net import CocoDataModule, StyleNetDataModule, WikiArtDataModule, images_under
from lightning_modules.nets.adain import AdaINNet
from lightning_modules.nets.loss_networks import build_loss_network, stage_names
from lightning_modules.nets.transformer_net import MultiStyleNet, TransformerNet, style_weights_for
from lightning_modules.style_losses import (
    LossWeights,
    adaptive_instance_norm,
    gram_matrix,
    match_colours,
    mean_std,
    mean_std_loss,
    perceptual_losses,
    style_loss,
)
from lightning_modules.style_net import StyleNetModule, as_constants
from tests.style_fakes import write_fake_coco, write_fake_wikiart


def reference_transformer_net_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """pytorch/examples' fast_neural_style TransformerNet state dict, key by key, in its order."""
    def conv(name: str, c_in: int, c_out: int, k: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{name}.conv2d.weight", (c_out, c_in, k, k)), (f"{name}.conv2d.bias", (c_out,))]

    def norm(name: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,))]

    shapes = [*conv("conv1", 3, 32, 9), *norm("in1", 32), *conv("conv2", 32, 64, 3), *norm("in2", 64),
              *conv("conv3", 64, 128, 3), *norm("in3", 128)]
    for i in range(1, 6):
        shapes += [*conv(f"res{i}.conv1", 128, 128, 3), *norm(f"res{i}.in1", 128),
                   *conv(f"res{i}.conv2", 128, 128, 3), *norm(f"res{i}.in2", 128)]
    return shapes + [*conv("deconv1", 128, 64, 3), *norm("in4", 64), *conv("deconv2", 64, 32, 3),
                     *norm("in5", 32), *conv("deconv3", 32, 3, 9)]


def test_transformer_net_has_fast_neural_style_state_dict_layout():
    state = TransformerNet().state_dict()
    assert [(key, tuple(value.shape)) for key, value in state.items()] == reference_transformer_net_shapes()
    assert sum(value.numel() for value in state.values()) == 1_679_235


def test_networks_return_images_of_their_inputs_size():
    torch.manual_seed(0)
    single, multi = TransformerNet(base_channels=4).eval(), MultiStyleNet(2, base_channels=4).eval()
    weights = style_weights_for(torch.tensor([0, 1]), 2)
    for height, width in [(8, 8), (9, 13), (31, 17), (33, 64), (50, 37)]:
        content = torch.rand(2, 3, height, width)
        assert single(content).shape == content.shape
        assert multi(content, weights).shape == content.shape


def test_transformer_net_crops_back_what_it_padded_and_leaves_multiples_of_four_alone():
    torch.manual_seed(0)
    net = TransformerNet(base_channels=4).eval()
    content = torch.rand(1, 3, 32, 36)
    padded = torch.nn.functional.pad(content[..., :30, :33], (0, 3, 0, 2), mode="reflect")
    torch.testing.assert_close(net(content[..., :30, :33]), net(padded)[..., :30, :33])


@pytest.mark.parametrize("name", ["transformer_net", "multistyle_net", "adain"])
def test_networks_export_with_dynamic_height_and_width(name):
    torch.manual_seed(0)
    net, extra = {
        "transformer_net": lambda: (TransformerNet(4, 1), ()),
        "multistyle_net": lambda: (MultiStyleNet(2, 4, 1), (torch.tensor([[0.3, 0.7]]),)),
        "adain": lambda: (AdaINNet(encoder_weights=None), (torch.rand(1, 3, 24, 40),)),
    }[name]()
    net.eval()
    size = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    dynamic = (size, *([size] if name == "adain" else [None] * len(extra)))  # AdaIN: any style size too
    exported = torch.export.export(net, (torch.rand(1, 3, 37, 50), *extra), dynamic_shapes=dynamic).module()
    with torch.no_grad():
        for height, width in [(61, 29), (64, 64), (40, 56)]:  # padded or not, the same graph
            content = torch.rand(1, 3, height, width)
            torch.testing.assert_close(exported(content, *extra), net(content, *extra), atol=1e-4, rtol=1e-4)


def test_conditional_instance_norm_blends_styles_by_mixing_their_scales_and_shifts():
    torch.manual_seed(0)
    net = MultiStyleNet(3, base_channels=4, num_residual_blocks=1).eval()
    for module in net.modules():  # give every style its own scale and shift
        if hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 2:
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    content = torch.rand(1, 3, 16, 16)
    blend = torch.tensor([[0.25, 0.75, 0.0]])
    mixed = copy.deepcopy(net)
    for module in mixed.modules():
        if hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 2:
            with torch.no_grad():
                module.weight[0] = 0.25 * module.weight[0] + 0.75 * module.weight[1]
                module.bias[0] = 0.25 * module.bias[0] + 0.75 * module.bias[1]
    torch.testing.assert_close(net(content, blend), mixed(content, torch.tensor([[1.0, 0.0, 0.0]])))
    one_hot = [net(content, style_weights_for(torch.tensor([i]), 3)) for i in range(3)]
    assert not torch.allclose(one_hot[0], one_hot[1]), "each style is its own"


def test_mean_std_are_the_channel_mean_and_unbiased_std_with_eps():
    features = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]).view(1, 2, 1, 3)
    mean, std = mean_std(features)
    torch.testing.assert_close(mean.flatten(), torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(std.flatten(), torch.tensor([1.0 + 1e-5, 4.0 + 1e-5]).sqrt())


def test_adain_gives_the_content_the_style_channel_statistics():
    features = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]).view(1, 2, 1, 3)
    style_mean = torch.tensor([10.0, -1.0]).view(1, 2, 1, 1)
    style_std = torch.tensor([2.0, 0.5]).view(1, 2, 1, 1)
    out = adaptive_instance_norm(features, style_mean, style_std)
    expected = torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
    expected = expected / torch.tensor([[1.0 + 1e-5], [1.0 + 1e-5 / 4]]).sqrt()  # (x - mean) / std
    expected = expected * torch.tensor([[2.0], [0.5]]) + torch.tensor([[10.0], [-1.0]])
    torch.testing.assert_close(out.view(2, 3), expected)
    torch.testing.assert_close(mean_std(out)[0], style_mean)


def test_mean_std_loss_adds_the_squared_errors_of_means_and_of_stds():
    features = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]).view(1, 2, 1, 3)
    mean, std = mean_std(features)
    loss = mean_std_loss(features, mean + torch.tensor([1.0, 3.0]).view(1, 2, 1, 1), std + 2.0)
    assert loss.item() == pytest.approx((1 + 9) / 2 + 4.0)


def test_style_loss_compares_each_image_with_its_own_target_or_one_shared():
    features = torch.rand(3, 4, 5, 6)
    targets = gram_matrix(torch.rand(3, 4, 5, 6))
    each = torch.stack([style_loss(features[i:i + 1], targets[i:i + 1]) for i in range(3)]).mean()
    torch.testing.assert_close(style_loss(features, targets), each)
    shared = style_loss(features, targets[:1].expand(3, 4, 4))
    torch.testing.assert_close(style_loss(features, targets[:1]), shared)


def test_perceptual_losses_weigh_and_sum_the_terms():
    image = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)  # TV 1
    features = {"a": torch.ones(1, 2, 2, 2), "b": torch.zeros(1, 2, 2, 2)}
    content = {"a": torch.zeros(1, 2, 2, 2)}  # content loss 1
    gram_b = gram_matrix(torch.ones(1, 2, 2, 2))  # the zeros' Gram is 0: style loss at b = mean(gram_b**2)
    weights = LossWeights(3.0, 5.0, 7.0)
    losses = perceptual_losses(image, features, content, {"b": gram_b}, {"b": 2.0}, weights)
    style = 2.0 * gram_b.pow(2).mean().item()
    assert losses["content"].item() == pytest.approx(1.0)
    assert losses["style"].item() == pytest.approx(style)
    assert losses["tv"].item() == pytest.approx(1.0)
    assert losses["total"].item() == pytest.approx(3.0 + 5.0 * style + 7.0)


def test_matched_colours_have_the_targets_mean_and_covariance():
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 3, 40, 50, generator=generator) * 0.3 + 0.3
    spread = torch.tensor([0.2, 0.1, 0.3]).view(1, 3, 1, 1)
    target = torch.rand(1, 3, 30, 30, generator=generator) * spread + 0.4
    out = match_colours(source, target)

    def stats(image):
        flat = image.flatten(2)[0].double()
        return flat.mean(1), torch.cov(flat)

    for ours, theirs in zip(stats(out), stats(target), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


@pytest.fixture(scope="module")
def adain() -> AdaINNet:
    torch.manual_seed(0)
    return AdaINNet(encoder_weights=None).eval()


def test_adain_interpolation_equals_the_weighted_sum_of_each_styles_adain_features(adain):
    generator = torch.Generator().manual_seed(1)
    content, style_a, style_b = (torch.rand(1, 3, 32, 32, generator=generator) for _ in range(3))
    with torch.no_grad():
        ours = adain.transfer(content, [style_a, style_b], weights=[1, 3])
        features = adain.encoder(content)["relu4_1"]
        mixed = sum(w * adaptive_instance_norm(features, *adain.style_code(s))
                    for w, s in ((0.25, style_a), (0.75, style_b)))
        torch.testing.assert_close(ours, adain.decoder(mixed), atol=1e-4, rtol=1e-4)


def test_adain_alpha_zero_decodes_the_content_features_and_odd_sizes_come_back_whole(adain):
    content, style = torch.rand(1, 3, 37, 45), torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        out = adain(content, style, alpha=0.0)
        padded = torch.nn.functional.pad(content, (0, 3, 0, 3), mode="reflect")
        torch.testing.assert_close(out, adain.decoder(adain.encoder(padded)["relu4_1"])[..., :37, :45])


def test_adain_preserving_colours_styles_with_the_recoloured_style_image(adain):
    content, style = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(adain.transfer(content, [style], preserve_colors=True),
                                   adain(content, match_colours(style, content)))


def test_adain_refuses_an_encoder_its_decoder_does_not_mirror():
    with pytest.raises(ConfigError, match="mirrors a VGG encoder"):
        AdaINNet(encoder_arch="mobilenet_v3_large", encoder_weights=None)


def test_mobilenet_blocks_are_named_by_resolution_stage():
    names = stage_names(torchvision.models.mobilenet_v3_large().features)
    assert names[:4] == ["stage1_1", "stage1_2", "stage2_1", "stage2_2"]
    assert names[12] == "stage4_6" and names[-1] == "stage5_4"
    net = build_loss_network("mobilenet_v3_large", None, layers=["stage2_2", "stage3_3"])
    out = net(torch.rand(1, 3, 64, 64))
    assert out["stage2_2"].shape[-1] == 16 and out["stage3_3"].shape[-1] == 8
    assert len(net.features) == 7, "truncated after the deepest layer"


@pytest.mark.parametrize("arch", ["vgg16", "mobilenet_v3_large"])
def test_loss_network_weights_are_read_where_torchvision_downloads_them(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    with torch.device("meta"):
        model = torchvision.models.get_model(arch)
    unread = "classifier." if arch == "vgg16" else None  # VGG16's 124M-parameter classifier is never read
    state = {key: torch.randn(value.shape) if value.is_floating_point() else torch.zeros((), dtype=torch.long)
             for key, value in model.state_dict().items() if not (unread and key.startswith(unread))}
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    net = build_loss_network(arch, "DEFAULT")
    if arch == "vgg16":
        torch.testing.assert_close(net.features[0].weight, state["features.0.weight"])
    else:
        torch.testing.assert_close(net.features[0][0].weight, state["features.0.0.weight"])


def test_loss_network_as_constants_moves_with_the_module_but_is_in_no_state_dict():
    torch.manual_seed(0)
    vgg = as_constants(build_loss_network("vgg19", None, layers=["relu2_2"]))
    assert list(vgg.parameters()) == [] and vgg.state_dict() == {}
    assert len(list(vgg.buffers())) > 0
    module = torch.nn.Module()
    module.net, module.loss_network = torch.nn.Conv2d(1, 1, 1), vgg
    assert all(key.startswith("net.") for key in module.state_dict())
    assert module.double().loss_network.features[0].weight.dtype == torch.float64


def test_adain_module_measures_with_its_encoder_and_refuses_another_loss_network():
    net = AdaINNet(encoder_weights=None)
    options = {"content_layers": ["relu4_1"], "style_layers": ["relu1_1", "relu4_1"],
               "style_loss": "mean_std", "content_target": "adain"}
    module = StyleNetModule(net, torch.optim.Adam, {"arch": "vgg19", "weights": None}, **options)
    assert module.loss_network is None and "net.encoder.features.0.weight" in module.state_dict()
    with pytest.raises(ConfigError, match="choose loss_network=vgg19"):
        StyleNetModule(net, torch.optim.Adam, {"arch": "vgg16", "weights": None}, **options)
    with pytest.raises(ConfigError, match=r"not in AdaIN's encoder, which ends at relu4_1"):
        StyleNetModule(net, torch.optim.Adam, {"arch": "vgg19"}, **{**options, "style_layers": ["relu5_1"]})


def test_adain_objective_on_a_size_that_is_not_a_multiple_of_8_compares_like_with_like():
    torch.manual_seed(0)
    options = {"content_layers": ["relu4_1"], "style_layers": ["relu1_1", "relu4_1"],
               "style_loss": "mean_std", "content_target": "adain"}
    module = StyleNetModule(AdaINNet(encoder_weights=None), torch.optim.Adam, {"arch": "vgg19"}, **options)
    losses = module.objective({"content": torch.rand(2, 3, 37, 45), "style": torch.rand(2, 3, 40, 40)})
    assert all(torch.isfinite(value) for value in losses.values())


def test_content_target_adain_needs_the_adain_network():
    with pytest.raises(ConfigError, match="content_target=adain needs model=adain"):
        StyleNetModule(TransformerNet(base_channels=4), torch.optim.Adam, {"arch": "vgg19", "weights": None},
                       ["relu2_2"], ["relu1_2"], content_target="adain")


def test_bundled_photos_split_into_seeded_training_crops_and_whole_held_out_images():
    dm = StyleNetDataModule(image_size=48, resize_size=64, crops_per_image=3, eval_size=80, style_size=40)
    dm.setup()
    again = StyleNetDataModule(image_size=48, resize_size=64, crops_per_image=3, eval_size=80, style_size=40)
    again.setup()
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 6 * 3 and len(val) == 2
    assert val.sources == again.datasets["val"].sources and not set(val.sources) & set(train.sources)
    crop = train[0]
    assert crop["content"].shape == (3, 48, 48) and crop["content"].dtype == torch.float32
    assert crop["style_index"] == 0
    whole = [val[i]["content"] for i in range(len(val))]
    assert all(max(image.shape[-2:]) == 80 for image in whole), "whole images, longer side at eval_size"
    assert dm.styles[0][0] == "immunohistochemistry" and max(dm.styles[0][1].shape[-2:]) == 40


def test_a_nested_folder_is_read_at_every_depth_without_macos_files(tmp_path):
    rng = np.random.default_rng(0)
    for relative in ("a.jpg", "trips/b.png", "trips/2019/c.jpg", "trips/._b.png", ".DS_Store",
                     "__MACOSX/trips/._c.jpg"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith((".jpg", ".png")) and not path.name.startswith("."):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).save(path)
        else:
            path.write_bytes(b"\x00\x05\x16\x07 not an image")
    assert [p.rsplit("/", 1)[-1] for p in images_under(tmp_path)] == ["a.jpg", "c.jpg", "b.png"]
    dm = StyleNetDataModule(content=str(tmp_path), image_size=16, val_fraction=0.3)
    dm.setup()
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["val"]) == 1


@pytest.mark.parametrize("year", [2014, 2017])
def test_coco_trains_on_train_year_and_holds_out_val_year(tmp_path, year):
    write_fake_coco(tmp_path, year=year, train=3, val=2)
    dm = CocoDataModule(str(tmp_path), year=year, image_size=32, test_images=1)
    dm.setup()
    assert [s.rsplit("/", 2)[-2] for s in dm.datasets["train"].sources] == [f"train{year}"] * 3
    assert len(dm.datasets["val"]) == 2 and len(dm.datasets["test"]) == 1
    assert dm.datasets["val"][0]["name"].startswith("COCO_val2014_" if year == 2014 else "0000000")


def test_coco_without_its_folders_names_the_layout(tmp_path):
    with pytest.raises(MissingDataError, match=r"train2017.*data.year=2017"):
        CocoDataModule(str(tmp_path), year=2017).setup()


def test_wikiart_splits_by_artgans_csv_files_and_gives_each_crop_a_painting(tmp_path):
    write_fake_wikiart(tmp_path, per_style=3)
    dm = WikiArtDataModule(str(tmp_path), train_csv="style_train.csv", val_csv="style_val.csv", val_styles=2,
                           image_size=24, resize_size=32, style_size=32)
    dm.setup()
    assert dm.samples_styles and len(dm.styles) == 2
    assert all("-no-0-" in name for name, _ in dm.styles), "evaluation styles come from style_val.csv"
    crop = dm.datasets["train"][0]
    assert crop["content"].shape == crop["style"].shape == (3, 24, 24) and "style_index" not in crop


def test_wikiart_without_csv_holds_out_a_seeded_part_and_a_bad_csv_row_is_named(tmp_path):
    write_fake_wikiart(tmp_path, per_style=3, with_csv=False)
    dm = WikiArtDataModule(str(tmp_path), style_val_fraction=0.2, val_styles=5, image_size=24, resize_size=32)
    dm.setup()
    assert len(dm.styles) == 2 and len(dm.datasets["train"].style_pool) == 7
    (tmp_path / "bad.csv").write_text("Cubism/missing.jpg,1\n")
    bad = WikiArtDataModule(str(tmp_path), train_csv="bad.csv", val_csv="bad.csv")
    with pytest.raises(MissingDataError, match=r"Cubism/missing.jpg"):
        bad.setup()
    with pytest.raises(ConfigError, match="does not apply to data=wikiart"):
        WikiArtDataModule(str(tmp_path), style=["a.jpg"])


def test_an_unreadable_content_image_is_named_before_training(tmp_path):
    write_fake_coco(tmp_path, train=2, val=1)
    (tmp_path / "train2014" / "COCO_train2014_000000000777.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="COCO_train2014_000000000777.jpg"):
        CocoDataModule(str(tmp_path)).setup()


def test_an_unreadable_style_image_and_an_empty_evaluation_are_refused(tmp_path):
    (tmp_path / "style.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"1 style image\(s\) cannot be read:\n.*style.jpg"):
        StyleNetDataModule(style=str(tmp_path / "style.jpg")).setup()
    with pytest.raises(ConfigError, match="data.val_images=0"):
        StyleNetDataModule(val_images=0)

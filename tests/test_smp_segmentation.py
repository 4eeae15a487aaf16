"""smp models (configs, offline encoder weights), the poly schedule and the smp x Cityscapes/ADE20K runs."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from hydra.utils import instantiate
from safetensors.torch import save_file
from torch import nn

from app import training
from core.errors import CheckpointError, ConfigError
from lightning_modules.nets.smp_segmenter import PaddedSegmenter, build_smp, hub_weights_dir
from lightning_modules.optimization import poly
from tests.fakes import write_fake_ade20k, write_fake_cityscapes
from tests.test_run_segment import HELD_OUT_MIOU_THRESHOLD

SMALL_CROPS = ["data.image_size=64", "data.base_size=64", "data.batch_size=2", "data.num_workers=0"]


def random_state(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """`module`'s state dict with every floating tensor replaced by seeded random values."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value.clone()
            for key, value in module.state_dict().items()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline: nothing is fetched from the network."""
    cache = tmp_path / "hf_hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def place_hub_weights(encoder: str, weights: str = "imagenet") -> dict[str, torch.Tensor]:
    """Write random weights as smp's downloaded config.json + model.safetensors of `encoder`."""
    _, folder = hub_weights_dir(encoder, weights)
    folder.mkdir(parents=True)
    state = random_state(smp.encoders.get_encoder(encoder))
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    return state


def test_imagenet_encoder_weights_load_from_smps_hub_cache(hub_cache):
    state = place_hub_weights("resnet18")
    model = build_smp("Unet", "resnet18", num_classes=3, in_channels=3, encoder_weights="imagenet")
    assert hub_weights_dir("resnet18", "imagenet")[1].is_relative_to(hub_cache)
    assert torch.equal(model.model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    gray = build_smp("Unet", "resnet18", num_classes=3, in_channels=1, encoder_weights="imagenet")
    assert torch.allclose(gray.model.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


def test_a_failed_download_names_the_files_and_where_to_put_them(hub_cache):
    with pytest.raises(CheckpointError) as error:
        build_smp("Unet", "resnet34", num_classes=3, encoder_weights="imagenet")
    _, folder = hub_weights_dir("resnet34", "imagenet")
    message = str(error.value)
    assert "model.safetensors" in message and str(folder) in message
    assert "huggingface.co/smp-hub/resnet34.imagenet" in message and "model.encoder_weights" in message


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_weights_from_a_torchvision_resnet_file(tmp_path, suffix):
    state = random_state(torchvision.models.resnet18())  # fc.* included: the encoder has no head
    path = tmp_path / f"resnet18{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, path)
    model = build_smp("FPN", "resnet18", num_classes=4, in_channels=1, encoder_weights=str(path))
    assert torch.equal(model.model.encoder.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert torch.allclose(model.model.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


def test_timm_encoder_weights_from_a_local_file(tmp_path):
    state = random_state(timm.create_model("resnet18"))
    path = tmp_path / "resnet18.safetensors"
    save_file(state, path)
    model = build_smp("Unet", "tu-resnet18", num_classes=2, encoder_weights=str(path))
    assert torch.equal(model.model.encoder.model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_a_wrong_encoder_weights_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(random_state(torchvision.models.mobilenet_v2()), path)
    with pytest.raises(CheckpointError, match="does not fit this backbone"):
        build_smp("Unet", "resnet18", num_classes=2, encoder_weights=str(path))


@pytest.mark.parametrize("arch, encoder, weights, message", [
    ("Unett", "resnet18", None, "Unknown smp architecture.*UnetPlusPlus"),
    ("Unet", "resnet19", None, "Unknown smp encoder.*tu-<name>"),
    ("Unet", "resnet18", "imagenet21k", "has no weights 'imagenet21k'.*imagenet"),
])
def test_unknown_architectures_encoders_and_weights_are_config_errors(arch, encoder, weights, message):
    with pytest.raises(ConfigError, match=message):
        build_smp(arch, encoder, num_classes=2, encoder_weights=weights)


@pytest.mark.parametrize("model, arch, encoder", [
    ("unet_resnet34", smp.Unet, "resnet34"),
    ("deeplabv3plus_resnet50", smp.DeepLabV3Plus, "resnet50"),
    ("segformer_mit_b0", smp.Segformer, "mit_b0"),
])
def test_short_model_configs_build_their_pair_for_the_data(model, arch, encoder, make_config):
    cfg = make_config("task=segment", "data=ade20k", f"model={model}")
    net = instantiate(cfg.model).eval()  # ASPP pooling: BatchNorm on a 1x1 map needs 2 images to train
    assert isinstance(net, PaddedSegmenter) and isinstance(net.model, arch)
    assert cfg.model.encoder == encoder and cfg.model.encoder_weights is None
    assert net(torch.zeros(1, 3, 50, 70)).shape == (1, 150, 50, 70)  # padded to the stride, cropped back


def test_poly_decays_per_step_to_min_factor():
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.01)
    scheduler = poly(opt, total_steps=10, power=0.9, min_factor=0.01)
    values = []
    for _ in range(11):
        values.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    expected = [1e-4 + (0.01 - 1e-4) * (1 - step / 10) ** 0.9 for step in range(11)]
    assert values == pytest.approx(expected)


def test_deeplabv3plus_resnet50_on_cityscapes_with_ohem_and_poly(make_config, tmp_path):
    root = write_fake_cityscapes(tmp_path / "cityscapes")
    cfg = make_config("task=segment", "model=smp", "model.arch=DeepLabV3Plus", "model.encoder=resnet50",
                      "data=cityscapes", f"data.root={root}", *SMALL_CROPS, "scheduler=poly",
                      "task.losses={ohem_ce:1.0,dice:0.5}", f"task.class_weights=[2{',1' * 18}]")
    metrics = training.train(cfg)
    assert {"test/miou", "val/miou", "train/loss"} <= metrics.keys()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/miou"] == metrics["test/miou"]


def test_segformer_mit_b0_on_ade20k_with_ce_and_lovasz(make_config, tmp_path):
    root = tmp_path / "ade20k"
    write_fake_ade20k(root)
    cfg = make_config("task=segment", "data=ade20k", "model=segformer_mit_b0", "task.losses={ce:1,lovasz:1}",
                      f"data.root={root}", *SMALL_CROPS)
    metrics = training.train(cfg)
    assert 0.0 <= metrics["test/miou"] <= 1.0 and metrics["train/loss"] > 0


@pytest.mark.parametrize("experiment, encoder, writer, published", [
    ("cityscapes_deeplabv3plus_r50", "resnet50", write_fake_cityscapes, "79.83 mIoU"),
    ("ade20k_segformer_b0", "mit_b0", write_fake_ade20k, "37.41 mIoU"),
])
def test_recipes_cite_their_target_and_build_on_imagenet_weights_from_the_cache(
        experiment, encoder, writer, published, hub_cache, make_config, tmp_path):
    text = (Path(__file__).parents[1] / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    assert published in text and "Not measured here" in text
    state = place_hub_weights(encoder)
    cfg = make_config(f"experiment={experiment}", f"data.root={writer(tmp_path / 'data')}",
                      "data.batch_size=2")  # the fakes hold 2 training images
    assert cfg.task_name == "segment" and cfg.model.encoder_weights == "imagenet"
    assert cfg.scheduler.scheduler._target_.endswith("optimization.poly") and cfg.data.cat_max_ratio == 0.75
    net = instantiate(cfg.model)
    name, value = next(iter(state.items()))
    assert torch.equal(net.model.encoder.state_dict()[name], value)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert len(datamodule.classes) == cfg.model.num_classes == cfg.data.num_classes


@pytest.mark.slow
def test_smp_unet_resnet18_learns_held_out_digit_scenes_as_well_as_the_from_scratch_unet(make_config):
    cfg = make_config(
        "task=segment", "data=digit_scenes", "model=smp", "model.arch=Unet", "model.encoder=resnet18",
        "+model.encoder_depth=3", "+model.decoder_channels=[64,32,16]",  # 32 px scenes need no 1 px level
        "task.class_weights=[0.2,1,1,1,1,1,1,1,1,1,1]", "optimizer.lr=3e-3", "scheduler=onecycle",
        "trainer.max_epochs=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "~callbacks.rich_progress_bar", "~callbacks.rich_model_summary", "logger=none", fast=False,
    )
    assert cfg.model.encoder_weights is None  # random encoder: nothing pretrained helps
    metrics = training.train(cfg)
    assert metrics["test/miou"] >= HELD_OUT_MIOU_THRESHOLD  # measured 0.568

"""Structured pruning (Torch-Pruning): widths kept where they must be, pruned shapes rebuilt from a
checkpoint, the compress mode end to end (then train=false, predict, export), refusals, and
unstructured sparsity with Lightning's ModelPruning."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from lightning_modules.nets.mnist_cnn import MNISTCNN
from lightning_modules.nets.simple_cnn import SimpleCNN
from lightning_modules.nets.unet import UNet
from lightning_modules.pruning import class_layers, layer_shapes, prune_channels, reshape_to
from tests.inference_helpers import digits_classifier, read_checkpoint_keys, run_in_process, small_unet


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def torchvision_net(name: str) -> nn.Module:
    from lightning_modules.nets.torchvision_classifier import build_classifier

    return build_classifier(name=name, num_classes=10, in_channels=1)


def smp_unet() -> nn.Module:
    from lightning_modules.nets.smp_segmenter import build_smp

    return build_smp(arch="Unet", encoder="resnet18", num_classes=11, in_channels=1, encoder_weights=None)


NETWORKS = {  # name: (build, input shape, classes)
    "mnist_cnn": (lambda: MNISTCNN(1, 10, 28), (2, 1, 28, 28), 10),
    "simple_cnn": (lambda: SimpleCNN(3, 10, 32), (2, 3, 32, 32), 10),
    "unet": (lambda: UNet(1, 11, depth=2, base_width=8), (2, 1, 32, 32), 11),
    "resnet18": (lambda: torchvision_net("resnet18"), (2, 1, 32, 32), 10),
    "mobilenet_v3_large": (lambda: torchvision_net("mobilenet_v3_large"), (2, 1, 32, 32), 10),
    "smp_unet_resnet18": (smp_unet, (2, 1, 32, 32), 11),
}
SLOW_NETWORKS = ("resnet18", "mobilenet_v3_large", "smp_unet_resnet18")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_NETWORKS else [])
                                  for n in NETWORKS])
def test_pruning_half_the_channels_keeps_the_class_width_and_a_rebuilt_copy_gives_the_same_logits(name):
    build, shape, classes = NETWORKS[name]
    torch.manual_seed(0)
    net = build().eval()
    before = parameters(net)
    images = torch.randn(shape)
    prune_channels(net, images[:1], 0.5, "magnitude", class_layers(net, classes))
    net.eval()
    with torch.no_grad():
        logits = net(images)
    assert logits.shape[1] == classes and logits.shape[0] == shape[0]
    assert parameters(net) < 0.35 * before  # both sides of most layers halve: about a quarter is left
    rebuilt = build()
    reshape_to(rebuilt, layer_shapes(net))
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), logits)


def test_taylor_importance_scores_channels_by_the_gradients_it_is_given():
    torch.manual_seed(0)
    net = MNISTCNN(1, 10, 28)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    calls = []

    def gradients() -> None:
        calls.append(1)
        nn.functional.cross_entropy(net(images), labels).backward()

    prune_channels(net, images[:1], 0.3, "taylor", class_layers(net, 10), accumulate_gradients=gradients)
    assert calls == [1] and net.features[0].out_channels == 32 - round(0.3 * 32)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize(("ratio", "method", "match"), [(0.0, "magnitude", "ratio=0.0"),
                                                        (1.0, "magnitude", "ratio=1.0"),
                                                        (0.5, "l1", "method='l1'")])
def test_a_ratio_outside_zero_one_or_an_unknown_method_is_refused(ratio, method, match):
    with pytest.raises(ConfigError, match=match):
        prune_channels(MNISTCNN(), torch.zeros(1, 1, 28, 28), ratio, method, [])


def test_a_network_with_attention_layers_is_refused_with_the_reason():
    net = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Flatten(2), nn.MultiheadAttention(8, 2))
    with pytest.raises(ConfigError, match=r"attention layers \(MultiheadAttention\)"):
        prune_channels(net, torch.zeros(1, 1, 4, 4), 0.5, "magnitude", [])


@pytest.mark.slow
def test_compress_prunes_fine_tunes_and_tests_and_its_checkpoint_evaluates_predicts_and_exports(
        tmp_path, tmp_path_factory):
    checkpoint, trained = digits_classifier(tmp_path_factory.getbasetemp())
    metrics = run_in_process(tmp_path / "pruned", "compress.prune.ratio=0.5", f"ckpt_path={checkpoint}",
                             "debug=smoke")
    assert metrics["prune/ratio"] == 0.5 and "unpruned/test/acc" in metrics and "test/acc" in metrics
    assert metrics["unpruned/cost/parameters"] == trained["cost/parameters"]
    assert metrics["cost/parameters"] < 0.3 * trained["cost/parameters"]
    assert metrics["cost/macs"] < 0.3 * trained["cost/macs"]
    pruned = sorted((tmp_path / "pruned" / "checkpoints").glob("epoch*.ckpt"))[-1]
    stored = torch.load(pruned, map_location="cpu", weights_only=False)["visionlab_pruned"]
    assert stored["ratio"] == 0.5 and stored["shapes"]["features.0"]["attributes"]["out_channels"] == 16
    evaluated = run_in_process(tmp_path / "evaluate", "train=false", f"ckpt_path={pruned}", "debug=smoke")
    assert evaluated["cost/parameters"] == metrics["cost/parameters"]
    run_in_process(tmp_path / "export", "export.format=onnx", f"ckpt_path={pruned}", "debug=smoke")
    exported = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert exported["cost/parameters"] == metrics["cost/parameters"]
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("L", (28, 28), 128).save(images / "a.png")
    run_in_process(tmp_path / "predict", f"predict.input={images}", f"ckpt_path={pruned}", "debug=smoke")
    assert (tmp_path / "predict" / "predictions.csv").is_file()


def test_compressing_a_segmentation_checkpoint_asks_for_its_task(tmp_path):
    from omegaconf import OmegaConf

    from app.compose import compose_config

    config = OmegaConf.to_container(compose_config(["task=segment"], tmp_path / "composed"), resolve=True)
    checkpoint = tmp_path / "segment.ckpt"
    torch.save({"state_dict": {}, "visionlab_config": config}, checkpoint)
    with pytest.raises(ConfigError, match="task=segment checkpoint: add task=segment"):
        run_in_process(tmp_path, "compress.prune.ratio=0.5", f"ckpt_path={checkpoint}", "debug=smoke")


@pytest.mark.slow
def test_compress_prunes_a_unet_without_touching_its_class_head(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    metrics = run_in_process(tmp_path, "task=segment", "compress.prune.ratio=0.3",
                             "compress.prune.method=taylor", f"ckpt_path={checkpoint}", "debug=smoke")
    assert "test/miou" in metrics and metrics["cost/parameters"] < metrics["unpruned/cost/parameters"]
    pruned = sorted((tmp_path / "checkpoints").glob("epoch*.ckpt"))[-1]
    shapes = torch.load(pruned, map_location="cpu", weights_only=False)["visionlab_pruned"]["shapes"]
    assert shapes["head"]["attributes"]["out_channels"] == 11


def test_callbacks_pruning_zeroes_half_the_networks_conv_and_linear_weights_and_no_bias(tmp_path):
    run_in_process(tmp_path, "callbacks=pruning", "model=simple_cnn", "debug=smoke")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    weights = [v for k, v in state["state_dict"].items() if k.startswith("net.") and k.endswith(".weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.001)
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in state["state_dict"])
    biases = [v for k, v in state["state_dict"].items() if k.endswith(".bias")]
    assert all((b != 0).all() for b in biases)
    keys, _ = read_checkpoint_keys(tmp_path / "checkpoints" / "last.ckpt")
    assert keys

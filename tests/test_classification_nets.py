"""Classification networks: textbook CNNs and torchvision models adapted to the data."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torch import nn

from core.errors import CheckpointError
from lightning_modules.nets import torchvision_classifier
from lightning_modules.nets.mnist_cnn import MNISTCNN
from lightning_modules.nets.simple_cnn import SimpleCNN
from lightning_modules.nets.torchvision_classifier import build_classifier


@pytest.mark.parametrize("net_class", [MNISTCNN, SimpleCNN])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 20)])
def test_textbook_cnns_give_one_logit_per_class_for_any_input_size(net_class, channels, size):
    net = net_class(in_channels=channels, num_classes=7, image_size=size)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_textbook_cnn_rejects_images_too_small_for_it():
    with pytest.raises(ValueError, match="at least 16x16"):
        SimpleCNN(image_size=12)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_model_gets_a_new_head_for_num_classes(name):
    net = build_classifier(name, num_classes=5)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_first_convolution_takes_one_channel_as_the_sum_of_the_rgb_filters():
    torch.manual_seed(0)
    rgb = build_classifier("resnet18", num_classes=4)
    torch.manual_seed(0)
    gray = build_classifier("resnet18", num_classes=4, in_channels=1)
    assert gray.model.conv1.weight.shape[1] == 1
    torch.testing.assert_close(gray.model.conv1.weight, rgb.model.conv1.weight.sum(1, keepdim=True))
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_frozen_backbone_trains_only_the_head():
    # Its batch-norm statistics stay fixed during training: tests/test_finetuning.py.
    net = build_classifier("resnet18", num_classes=3, freeze_backbone=True)
    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["model.fc.weight", "model.fc.bias"]
    assert net.head_name == "model.fc"


def test_local_weights_file_is_loaded_before_the_head_is_replaced(tmp_path):
    source = build_classifier("resnet18", num_classes=1000).model
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    net = build_classifier("resnet18", num_classes=10, weights=str(path))
    torch.testing.assert_close(net.model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert net.model.fc.out_features == 10


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth"):
        build_classifier("resnet18", num_classes=10, weights=str(tmp_path / "nope.pth"))


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown torchvision model 'resnet7'.*resnet18"):
        build_classifier("resnet7", num_classes=10)


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        build_classifier("resnet18", num_classes=10, weights="IMAGENET9K")


def test_weights_that_cannot_be_downloaded_say_where_to_put_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    expected = r"copy https://download.pytorch.org/.*resnet18-.*\.pth to .*checkpoints"
    with pytest.raises(RuntimeError, match=expected):
        torchvision_classifier.build_classifier("resnet18", num_classes=10, weights="DEFAULT")


def test_frozen_network_with_nothing_trainable_is_reported():
    from lightning_modules.optimization import configure_optimization

    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        configure_optimization(frozen.parameters(), torch.optim.SGD, None, total_steps=10)

"""UNet for any input size, and torchvision segmenters: class count, channels, local weights, errors."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torchvision

from lightning_modules.nets.torchvision_segmenter import build_segmenter
from lightning_modules.nets.unet import UNet


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (37, 29), (5, 63)])
def test_unet_returns_logits_of_the_input_size_for_any_size(size, bilinear):
    net = UNet(in_channels=1, num_classes=4, depth=3, base_width=4, bilinear=bilinear)
    assert net(torch.randn(2, 1, *size)).shape == (2, 4, *size)


def test_unet_depth_and_width_set_the_encoder():
    net = UNet(in_channels=3, num_classes=2, depth=2, base_width=8, batch_norm=False)
    assert [block[0].out_channels for block in net.downs] == [16, 32]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "fcn_resnet50",
                                  "lraspp_mobilenet_v3_large"])
def test_torchvision_segmenters_return_full_size_logits_for_the_classes(name):
    net = build_segmenter(name, num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        output = net(torch.randn(1, 1, 33, 47))
    assert output["out"].shape == (1, 5, 33, 47)
    assert ("aux" in output) == (not name.startswith("lraspp"))


def test_auxiliary_head_can_be_left_out():
    net = build_segmenter("deeplabv3_mobilenet_v3_large", num_classes=3, aux_loss=False).eval()
    with torch.no_grad():
        assert set(net(torch.randn(1, 3, 32, 32))) == {"out"}


def test_full_model_weights_load_from_a_local_file_and_the_head_is_replaced(tmp_path):
    source = torchvision.models.get_model("deeplabv3_mobilenet_v3_large", num_classes=21, aux_loss=True,
                                          weights_backbone=None)
    path = tmp_path / "deeplabv3.pth"
    torch.save(source.state_dict(), path)
    net = build_segmenter("deeplabv3_mobilenet_v3_large", num_classes=4, weights=str(path))
    assert torch.equal(net.backbone["0"][0].weight, source.backbone["0"][0].weight)
    assert net.classifier[4].out_channels == 4 and net.aux_classifier[4].out_channels == 4


def test_imagenet_backbone_loads_from_a_local_classification_state_dict(tmp_path):
    classifier = torchvision.models.mobilenet_v3_large()
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(classifier.state_dict(), path)
    net = build_segmenter("lraspp_mobilenet_v3_large", num_classes=2, weights_backbone=str(path))
    assert torch.equal(net.backbone["0"][0].weight, classifier.features[0][0].weight)


def test_a_backbone_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this backbone"):
        build_segmenter("fcn_resnet50", num_classes=2, weights_backbone=str(path))


def test_failed_download_says_where_to_put_the_weights_file(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"(?s)without internet, copy https://.*mobilenet_v3_large.*"
                                           r"checkpoints.*model.weights_backbone"):
        build_segmenter("lraspp_mobilenet_v3_large", num_classes=2, weights_backbone="DEFAULT")


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="deeplabv3_resnet50"):
        build_segmenter("segformer", num_classes=2)

"""Feature maps and Grad-CAM: layer names and the default layer per family, Grad-CAM's maths by hand, and
the figures read back from TensorBoard's event files; bad layer and class names stop with the choices."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.errors import ConfigError
from lightning_modules.attribution import class_over_pixels, grad_cam
from lightning_modules.nets.layers import default_cam_layer, find_layers
from lightning_modules.nets.mnist_cnn import MNISTCNN
from lightning_modules.nets.simple_cnn import SimpleCNN
from lightning_modules.nets.unet import UNet
from tests.inference_helpers import QUIET, digits_classifier, run_in_process, small_unet, write_scene_pngs
from tests.run_py import run_dirs, run_py


def tensorboard_images(run_dir) -> dict[str, np.ndarray]:
    """The last image of every image tag in a run's TensorBoard events, decoded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    images = {tag: np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)))
              for tag in events.Tags()["images"]}
    images["histograms"] = events.Tags()["histograms"]
    images["epochs"] = {tag: len(events.Images(tag)) for tag in events.Tags()["images"]}
    return images


# ---- layer names ----

def test_an_unknown_layer_name_lists_the_valid_ones_and_the_closest():
    with pytest.raises(ConfigError) as error:
        find_layers(MNISTCNN(), ["features.0", "feature.3", "head"], "callbacks.feature_maps.layers")
    message = str(error.value)
    assert "callbacks.feature_maps.layers" in message and "'feature.3', 'head'" in message
    assert "did you mean features.3" in message
    assert "features, features.0, features.1, features.2, features.3" in message and "classifier.3" in message


@pytest.mark.parametrize(("make", "example", "layer"), [
    (lambda: MNISTCNN(), (1, 28, 28), "features.3"),  # the ReLU after the last convolution
    (lambda: SimpleCNN(), (3, 32, 32), "features.4"),
    (lambda: UNet(3, 4, depth=3, base_width=4), (3, 32, 32), "downs.2"),  # the bottleneck
    ("resnet18", (3, 64, 64), "model.layer4"),
    ("mobilenet_v3_large", (3, 64, 64), "model.features"),
    ("lraspp_mobilenet_v3_large", (3, 64, 64), "backbone.16"),  # a segmenter: its encoder's last stage
])
def test_default_cam_layer_is_the_last_convolutional_stage_of_each_family(make, example, layer):
    if make == "lraspp_mobilenet_v3_large":
        from lightning_modules.nets.torchvision_segmenter import build_segmenter

        net = build_segmenter(make, 5)
    elif isinstance(make, str):
        from lightning_modules.nets.torchvision_classifier import build_classifier

        net = build_classifier(make, 10)
    else:
        net = make()
    assert default_cam_layer(net, torch.zeros(1, *example)) == layer


def test_a_network_that_attends_after_its_last_convolution_needs_a_layer_named():
    class PatchTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patches = nn.Conv2d(3, 8, 4, stride=4)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.patches(x).flatten(2).transpose(1, 2)
            return self.attention(tokens, tokens, tokens)[0].mean(1)

    with pytest.raises(ConfigError, match="attends after its last convolution.*callbacks.cam.layer"):
        default_cam_layer(PatchTransformer(), torch.zeros(1, 3, 16, 16))


# ---- Grad-CAM's maths ----

class LinearReadout(nn.Module):
    """A 1x1 convolution (the layer) read out linearly: d score_k / d A_c = w[k, c] / (H W) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(2, 3, 1)
        self.readout = nn.Parameter(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).mean(dim=(2, 3)) @ self.readout.T


def test_grad_cam_is_the_relu_of_activations_weighted_by_their_mean_gradients():
    torch.manual_seed(0)
    net = LinearReadout()
    images = torch.randn(2, 2, 5, 7)
    target = torch.tensor([0, 1])
    with torch.no_grad():
        activations = net.layer(images)
    expected = torch.stack([torch.einsum("c,chw->hw", net.readout[k] / 35, activations[i]).relu()
                            for i, k in enumerate(target.tolist())])
    expected = expected / expected.flatten(1).amax(1)[:, None, None]

    with torch.inference_mode():  # as in Lightning's evaluation loops
        maps = grad_cam(net, net.layer, images, target)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert all(p.grad is None for p in net.parameters()), "Grad-CAM leaves the parameters' gradients alone"


def test_the_figures_maps_of_the_predicted_and_true_class_are_each_classes_grad_cam():
    from callbacks.cam import GradCAMFigure
    from core.figures import heatmap_overlay

    torch.manual_seed(0)
    net = MNISTCNN().eval()
    images = torch.randn(6, 1, 28, 28)
    predicted = net(images).argmax(1)
    figure = GradCAMFigure(enabled=True)
    figure.targets = torch.tensor([(c + 1) % 10 if i % 2 else c for i, c in enumerate(predicted.tolist())])
    shown = images.sigmoid()
    names = [str(c) for c in range(10)]
    tiles, captions = figure.classification_tiles(net, net.features[3], images, shown, names)
    for column, classes in ((1, predicted), (2, figure.targets)):  # image | predicted | true, per row
        expected = grad_cam(net, net.features[3], images, classes)
        for i in range(6):
            assert torch.allclose(tiles[3 * i + column], heatmap_overlay(shown[i], expected[i]), atol=1e-5)
    assert captions[2].startswith(f"true {figure.targets[0].item()} (")


def test_a_segmentation_class_over_no_pixels_has_an_all_zero_map():
    net = nn.Conv2d(3, 4, 3, padding=1)
    images = torch.randn(2, 3, 8, 8)
    pixels = torch.zeros(2, 8, 8, dtype=torch.bool)
    pixels[0, :4] = True
    maps = grad_cam(class_over_pixels(net, 2, pixels), net, images)
    assert maps.shape == (2, 8, 8) and maps[0].max() == 1 and maps[1].abs().max() == 0


# ---- through run.py ----

def test_feature_maps_histograms_and_grad_cam_reach_tensorboard_each_epoch(tmp_path):
    run_py(tmp_path, "callbacks.feature_maps.layers=[features.0,classifier.1]", "callbacks.cam.enabled=true",
           "callbacks.cam.num_images=3", "trainer.max_epochs=2")
    (run_dir,) = run_dirs(tmp_path)
    images = tensorboard_images(run_dir)
    assert {"feature_maps/features.0", "feature_maps/classifier.1"} <= set(images["histograms"])
    assert images["epochs"]["val/grad_cam"] == images["epochs"]["feature_maps/features.0"] == 2
    cam = images["val/grad_cam"]
    assert cam.ndim == 3 and cam.std() > 10  # three captioned rows of image | predicted | true
    maps = images["feature_maps/features.0"]
    assert maps.shape[0] < maps.shape[1]  # 4 rows of image + 8 channels
    assert len(np.unique(maps.reshape(-1, maps.shape[-1]), axis=0)) > 50  # coloured maps, not blank


def test_segmentation_grad_cam_of_a_chosen_class_reaches_tensorboard(tmp_path):
    run_py(tmp_path, "task=segment", "model.depth=2", "model.base_width=8", "callbacks.cam.enabled=true",
           "callbacks.cam.class_name=background", "callbacks.feature_maps.layers=[downs.1]")
    (run_dir,) = run_dirs(tmp_path, "segment")
    images = tensorboard_images(run_dir)
    assert images["val/grad_cam"].std() > 10 and "feature_maps/downs.1" in images


@pytest.mark.parametrize(("overrides", "named"), [
    (["callbacks.feature_maps.layers=[features.9]"], "features.0, features.1"),
    (["callbacks.cam.enabled=true", "callbacks.cam.layer=layer4"], "features.0, features.1"),
    (["task=segment", "callbacks.cam.enabled=true", "callbacks.cam.class_name=cat"], "background, 0, 1"),
])
def test_a_bad_layer_or_class_stops_the_run_with_the_valid_choices(tmp_path, overrides, named):
    done = run_py(tmp_path, *overrides, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert named in " ".join((done.stdout + done.stderr).replace("│", " ").split())


def test_a_segmentation_class_is_found_by_name_or_index_and_a_missing_one_lists_the_classes():
    from callbacks.cam import class_index

    assert class_index("cat", ["background", "cat"]) == 1 and class_index(0, ["background", "cat"]) == 0
    assert class_index(1, ["1", "2"]) == 0  # names first: the class called "1", not index 1
    for wrong in (None, "dog", 2):
        with pytest.raises(ConfigError, match="callbacks.cam.class_name.*Choose one of: background, cat"):
            class_index(wrong, ["background", "cat"])


def test_predict_cam_writes_an_overlay_per_image_at_least_224_pixels(tmp_path, tmp_path_factory):
    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    for index, folder in enumerate(["in", "in", "in/sub"]):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (28, 28), dtype=np.uint8)).save(
            tmp_path / folder / f"{index}.png")
    run_dir = tmp_path / "run"
    run_in_process(run_dir, *QUIET, f"predict.input={tmp_path / 'in'}", f"ckpt_path={checkpoint}",
                   "predict.cam=true")
    overlays = sorted((run_dir / "cam").rglob("*.png"))
    assert [p.relative_to(run_dir / "cam").as_posix() for p in overlays] == [
        "0.png.png", "1.png.png", "sub/2.png.png"]  # named as the other outputs: relative path, extension
    pixels = np.asarray(Image.open(overlays[0]))
    assert pixels.shape == (224, 224, 3)  # 28 px x 8
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2]).max() > 50  # a coloured map over a grey image


def test_predict_cam_of_a_segmentation_class_covers_images_of_several_sizes(tmp_path, tmp_path_factory):
    checkpoint = small_unet(tmp_path_factory.getbasetemp())
    names = [p.name for p in write_scene_pngs(tmp_path / "in", sizes=(32, 48))]  # one batch, two sizes
    run_dir = tmp_path / "run"
    run_in_process(run_dir, *QUIET, "task=segment",  # what run.py adds for a segmentation checkpoint
                   f"predict.input={tmp_path / 'in'}", f"ckpt_path={checkpoint}", "predict.cam=true",
                   "callbacks.cam.class_name=background")
    overlays = {p.name: Image.open(p).size for p in (run_dir / "cam").glob("*.png")}
    assert sorted(overlays) == sorted(f"{name}.png" for name in names)
    assert {overlays[f"{name}.png"] for name in names if name.startswith("scene32")} == {(224, 224)}  # x7
    assert {overlays[f"{name}.png"] for name in names if name.startswith("scene48")} == {(240, 240)}  # x5


def test_predict_cam_with_an_exported_model_says_it_needs_the_checkpoint(tmp_path):
    from app.predict import ExportedTask, cam_writers
    from tests.conftest import compose_config

    cfg = compose_config(["predict.cam=true", "predict.model=model.onnx"], tmp_path)
    with pytest.raises(ConfigError, match="needs the network's gradients: give ckpt_path"):
        cam_writers(cfg, ExportedTask(None, "classify", {}), None, [], {})

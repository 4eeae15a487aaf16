"""Using trained style networks: predict on images and videos, export to ONNX and TorchScript with the same
images as eager, serve them, and the bad input each of these refuses with one message and exit code 2.

The networks are smoke-trained once per test session (2 steps of 32 px crops, VGG19 with random weights):
their pictures mean nothing, but they are real checkpoints of run.py, and what is tested is that every way of
running one gives the images the checkpoint's own network gives. The multi-style and AdaIN networks train at
learning rates (1e-2, 1e-3) at which two steps already make their styles differ by several grey levels in
8-bit images (at AdaIN's default 1e-4 its decoder still returns about 0.01 everywhere).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from app.stylize import StyleModel, style_choices, stylize_videos
from app.trained_model import PREDICTABLE_TASKS, build_from_checkpoint, load_checkpoint
from app.video import VideoFacts
from core.contracts import ModelInfo, StyleNetwork
from core.errors import ConfigError, DataError
from datamodules.transforms import resize_longer_side
from lightning_modules.style_inference import StyleChoice, inference_graph, stylize
from tests.inference_helpers import run_in_process, trained
from tests.run_py import run_dirs, run_py
from tests.style_fakes import photo, write_fake_video

SMALL = ["task=style_net", "task.loss_network.weights=null", "debug=smoke"]
NARROW = ["model.base_channels=8", "model.num_residual_blocks=1"]
PIXEL = 1  # exported and eager images agree to 1e-4 (export.tolerance); as 8-bit PNGs within one grey level
MULTI_STYLES = ("immunohistochemistry", "hubble_deep_field", "colorwheel")  # conf/model/multistyle_net.yaml


def johnson(base: Path) -> Path:
    return trained(base, "style_johnson", *SMALL, *NARROW)[0]


def multistyle(base: Path) -> Path:
    return trained(base, "style_multistyle", *SMALL, *NARROW, "model=multistyle_net", "optimizer.lr=1e-2")[0]


def adain(base: Path) -> Path:
    return trained(base, "style_adain", *SMALL, "model=adain", "optimizer.lr=1e-3")[0]


def as_floats(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 pixels as a (1, 3, H, W) image in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255


def differ(a: np.ndarray, b: np.ndarray, levels: int = 4) -> bool:
    """Whether two 8-bit images differ somewhere by more than `levels` grey levels."""
    return bool(np.abs(a - b).max() > levels)


def write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Photos of three sizes (two named x.png in different folders) and a 6-frame video of odd size with
    audio; {output name: (width, height)}."""
    sizes = {"a/x.png": (40, 30), "b/x.png": (23, 17), "c.jpg": (33, 48)}
    for index, (name, size) in enumerate(sizes.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        photo(index, size).save(folder / name)
    write_fake_video(folder / "clip.mp4", frames=6, size=(49, 33), fps=12)
    return sizes


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def eager_png(checkpoint: Path, image_path: Path, choice: StyleChoice | None = None) -> np.ndarray:
    """The image as the checkpoint's network styles it alone, in `choice`, as 8-bit pixels."""
    _, module = build_from_checkpoint(*load_checkpoint(str(checkpoint), [], PREDICTABLE_TASKS))
    image = torch.from_numpy(np.array(Image.open(image_path).convert("RGB"))).permute(2, 0, 1)[None]
    with torch.inference_mode():
        styled = stylize(inference_graph(module.network), image.float() / 255, choice or StyleChoice())[0]
    return (styled * 255).round().short().permute(1, 2, 0).numpy()


def video_facts(path: Path) -> tuple[int, Fraction, int, int, list[str]]:
    """(frames decoded, average rate, width, height, stream kinds) of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        kinds = [s.type for s in container.streams]
        return frames, stream.average_rate, stream.width, stream.height, kinds


def test_a_folder_and_a_video_are_styled_at_their_own_size_as_the_network_styles_each_alone(
        tmp_path, tmp_path_factory):
    checkpoint = johnson(tmp_path_factory.getbasetemp())
    sizes = write_inputs(tmp_path / "in")
    run_dir = tmp_path / "run"
    run_in_process(run_dir, "task=style_net", f"predict.input={tmp_path / 'in'}", f"ckpt_path={checkpoint}",
                   "predict.batch_size=4", "debug=smoke")
    for name, size in sizes.items():
        styled = png(run_dir / "stylized" / f"{name}.png")
        assert styled.shape == (size[1], size[0], 3)
        assert np.abs(styled - eager_png(checkpoint, tmp_path / "in" / name)).max() <= PIXEL, name
    frames, rate, width, height, kinds = video_facts(run_dir / "stylized" / "clip.mp4.mp4")
    assert (frames, rate, width, height) == (6, 12, 48, 32), "every frame, the source's rate, even sides"
    assert kinds == ["video"], "the audio is dropped"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["cost/video_frames_per_s"] > 0 and metrics["cost/parameters"] > 0


def test_image_size_sets_the_longer_side_of_images_and_videos(tmp_path, tmp_path_factory):
    checkpoint = johnson(tmp_path_factory.getbasetemp())
    write_inputs(tmp_path / "in")
    run_in_process(tmp_path / "run", "task=style_net", f"predict.input={tmp_path / 'in'}",
                   f"ckpt_path={checkpoint}", "predict.image_size=24", "debug=smoke")
    assert Image.open(tmp_path / "run" / "stylized" / "c.jpg.png").size == (16, 24)
    assert Image.open(tmp_path / "run" / "stylized" / "b" / "x.png.png").size == (24, 18)
    assert video_facts(tmp_path / "run" / "stylized" / "clip.mp4.mp4")[2:4] == (24, 16)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exports_verify_and_predict_the_eager_images_through_run_py(fmt, tmp_path, tmp_path_factory):
    checkpoint = johnson(tmp_path_factory.getbasetemp())
    sizes = write_inputs(tmp_path / "in")
    run_py(tmp_path, f"export.format={fmt}", f"ckpt_path={checkpoint}")
    folder = run_dirs(tmp_path, "style_net")[0] / "export"
    info = json.loads((folder / "model.json").read_text())
    assert info["schema_version"] == 3 and info["task"] == "style_net" and info["output_name"] == "stylized"
    assert info["dynamic_axes"] == ["batch", "height", "width"]
    assert info["style"] == {"conditioning": "none", "styles": ["immunohistochemistry"], "min_size": 8,
                             "style_min_size": None, "inputs": []}
    assert info["verification"]["max_abs_difference"] <= 1e-4
    model = folder / ("model.onnx" if fmt == "onnx" else "model.pt")
    run_py(tmp_path, f"predict.input={tmp_path / 'in'}", f"predict.model={model}")
    run_dir = run_dirs(tmp_path, "style_net")[-1]
    for name in sizes:
        exported = png(run_dir / "stylized" / f"{name}.png")
        assert np.abs(exported - eager_png(checkpoint, tmp_path / "in" / name)).max() <= PIXEL, name
    assert video_facts(run_dir / "stylized" / "clip.mp4.mp4")[:4] == (6, 12, 48, 32)


@pytest.mark.slow
def test_a_three_style_network_styles_in_each_style_one_or_a_blend_and_exports_its_inputs(
        tmp_path, tmp_path_factory):
    checkpoint = multistyle(tmp_path_factory.getbasetemp())
    photo(0, (36, 28)).save(tmp_path / "in.png")
    image = f"predict.input={tmp_path / 'in.png'}"
    run_in_process(tmp_path / "all", "task=style_net", image, f"ckpt_path={checkpoint}", "debug=smoke")
    each = {name: png(tmp_path / "all" / "stylized" / name / "in.png.png") for name in MULTI_STYLES}
    assert all(differ(each[a], each[b]) for a, b in [MULTI_STYLES[:2], MULTI_STYLES[1:], MULTI_STYLES[::2]])
    run_in_process(tmp_path / "one", "task=style_net", image, f"ckpt_path={checkpoint}",
                   "predict.style_index=1", "debug=smoke")
    assert np.array_equal(png(tmp_path / "one" / "stylized" / "in.png.png"), each["hubble_deep_field"])
    blend = StyleChoice((torch.tensor([0.5, 0.0, 0.5]),))
    run_in_process(tmp_path / "blend", "task=style_net", image, f"ckpt_path={checkpoint}",
                   "predict.style_weights=[1,0,1]", "debug=smoke")
    blended = png(tmp_path / "blend" / "stylized" / "in.png.png")
    assert np.abs(blended - eager_png(checkpoint, tmp_path / "in.png", blend)).max() <= PIXEL
    assert all(differ(blended, image, 2) for image in each.values())

    run_in_process(tmp_path / "export", "task=style_net", "export.format=onnx", f"ckpt_path={checkpoint}",
                   "debug=smoke")
    info = json.loads((tmp_path / "export" / "export" / "model.json").read_text())
    assert info["style"]["styles"] == list(MULTI_STYLES) and info["style"]["inputs"] == ["style_weights"]
    run_in_process(tmp_path / "onnx", "task=style_net", image, "predict.style_weights=[1,0,1]", "debug=smoke",
                   f"predict.model={tmp_path / 'export' / 'export' / 'model.onnx'}")
    assert np.abs(png(tmp_path / "onnx" / "stylized" / "in.png.png") - blended).max() <= PIXEL


@pytest.mark.slow
def test_adain_styles_with_any_image_alpha_blends_and_colours_and_its_export_agrees(
        tmp_path, tmp_path_factory):
    checkpoint = adain(tmp_path_factory.getbasetemp())
    photo(0, (36, 28)).save(tmp_path / "in.png")
    photo(4, (50, 40)).save(tmp_path / "style.jpg")
    options = ["task=style_net", f"predict.input={tmp_path / 'in.png'}", "debug=smoke",
               f"predict.style=[{tmp_path / 'style.jpg'},skimage:coffee]", "predict.style_weights=[3,1]",
               "predict.alpha=0.6", "predict.style_size=32"]
    run_in_process(tmp_path / "eager", *options, f"ckpt_path={checkpoint}")
    eager = png(tmp_path / "eager" / "stylized" / "in.png.png")
    assert eager.shape == (28, 36, 3)
    first = resize_longer_side(as_floats(np.array(Image.open(tmp_path / "style.jpg"))), 32)
    second = resize_longer_side(as_floats(skimage.data.coffee()), 32)
    assert first.shape[-2:] == (26, 32) and second.shape[-2:] == (21, 32)  # 40x50 and 400x600 at 32
    styles = torch.cat([first[..., 2:23, :], second])  # the centre 21 rows of the first
    expected = StyleChoice((styles, torch.tensor([0.75, 0.25]), torch.tensor(0.6)))
    assert np.abs(eager - eager_png(checkpoint, tmp_path / "in.png", expected)).max() <= PIXEL
    for other in (["predict.alpha=1"], ["predict.style_weights=[1,3]"], ["predict.preserve_colors=true"]):
        run_in_process(tmp_path / other[0], *options, *other, f"ckpt_path={checkpoint}")
        assert differ(png(tmp_path / other[0] / "stylized" / "in.png.png"), eager, 2), other

    run_in_process(tmp_path / "export", "task=style_net", "export.format=onnx", f"ckpt_path={checkpoint}",
                   "debug=smoke")
    info = json.loads((tmp_path / "export" / "export" / "model.json").read_text())
    assert info["style"]["inputs"] == ["styles", "style_weights", "alpha"] and info["style"]["styles"] == []
    assert [shape[0] for shape in info["verification"]["shapes"]] == [2, 2]
    model = tmp_path / "export" / "export" / "model.onnx"
    for folder, extra in (("onnx", []), ("onnx_colours", ["predict.preserve_colors=true"])):
        run_in_process(tmp_path / folder, *options, *extra, f"predict.model={model}")
        reference = png(tmp_path / (extra or ["eager"])[0] / "stylized" / "in.png.png")
        assert np.abs(png(tmp_path / folder / "stylized" / "in.png.png") - reference).max() <= PIXEL


@pytest.mark.slow
def test_a_served_style_network_answers_with_the_image_predict_writes(tmp_path, tmp_path_factory):
    import httpx

    from tests.test_serve import server

    checkpoint = johnson(tmp_path_factory.getbasetemp())
    photo(1, (40, 30)).save(tmp_path / "in.png")
    run_in_process(tmp_path / "predicted", "task=style_net", f"predict.input={tmp_path / 'in.png'}",
                   f"ckpt_path={checkpoint}", "debug=smoke")
    with server(tmp_path, checkpoint) as (url, _):
        answer = httpx.post(f"{url}/predict", content=(tmp_path / "in.png").read_bytes(),
                            headers={"content-type": "image/png"}, timeout=120)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    (tmp_path / "served.png").write_bytes(answer.content)
    predicted = png(tmp_path / "predicted" / "stylized" / "in.png.png")
    assert np.abs(png(tmp_path / "served.png") - predicted).max() <= PIXEL  # other threads: other roundings


# ---- bad input: one message each, exit code 2, nothing written ----

def bad_inputs(folder: Path) -> dict[str, Path]:
    """A photo, a text file named .jpg, an audio-only MP4, a text file named .mp4, and a folder holding a
    photo and a 4x4 image."""
    (folder / "small").mkdir(parents=True, exist_ok=True)
    photo(0, (32, 24)).save(folder / "photo.png")
    (folder / "broken.jpg").write_text("not an image")
    write_fake_video(folder / "sound.mp4", video=False)
    (folder / "broken.mp4").write_text("not a video")
    photo(0, (32, 24)).save(folder / "small" / "photo.png")
    Image.new("RGB", (4, 4)).save(folder / "small" / "tiny.png")
    return {path.name: path for path in folder.iterdir()}


BAD = {  # name: (network, overrides given the inputs, words of the message)
    "unreadable style image": ("adain", lambda f: [f"predict.input={f['photo.png']}",
                                                    f"predict.style={f['broken.jpg']}"],
                               "the style image"),
    "video without a video stream": ("johnson", lambda f: [f"predict.input={f['sound.mp4']}"],
                                     "holds no video stream (its streams: audio)"),
    "unreadable video": ("johnson", lambda f: [f"predict.input={f['broken.mp4']}"], "Cannot read video"),
    "style index out of range": ("multistyle", lambda f: [f"predict.input={f['photo.png']}",
                                                          "predict.style_index=3"],
                                 "predict.style_index=3 is out of range: this network learned 3 style(s)"),
    "image smaller than the network's minimum": ("johnson", lambda f: [f"predict.input={f['small']}"],
                                                 "1 input(s) are smaller than the network's minimum of 8"),
    "style image for a one-style network": ("johnson", lambda f: [f"predict.input={f['photo.png']}",
                                                                   f"predict.style={f['photo.png']}"],
                                            "does not apply to a one-style network"),
}


@pytest.mark.parametrize("name", [  # the AdaIN and multi-style checkpoints cost a training each: slow
    pytest.param(name, marks=[pytest.mark.slow] if BAD[name][0] != "johnson" else []) for name in BAD])
def test_bad_input_exits_2_with_one_message_and_writes_nothing(name, tmp_path, tmp_path_factory):
    network, overrides, words = BAD[name]
    checkpoint = {"adain": adain, "johnson": johnson, "multistyle": multistyle}[network](
        tmp_path_factory.getbasetemp())
    done = run_py(tmp_path, *overrides(bad_inputs(tmp_path / "in")), f"ckpt_path={checkpoint}", check=False)
    message = " ".join(done.stderr.replace("│", " ").split())
    assert done.returncode == 2 and words in message and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not list(run_dirs(tmp_path, "style_net")[0].glob("stylized")), "nothing written"


def test_a_video_that_fails_part_way_leaves_no_file_and_says_so(tmp_path):
    write_fake_video(tmp_path / "clip.mp4", frames=6)
    calls = []

    def fails_on_the_second_batch(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        if len(calls) == 2:
            raise DataError("frame 5 cannot be decoded.")
        return images

    model = StyleModel(fails_on_the_second_batch, StyleNetwork("none", ("a",), 8), None, "fake")
    kept = r"frame 5 cannot be decoded\. No styled file of .*clip\.mp4 was kept"
    with pytest.raises(DataError, match=kept):
        stylize_videos(model, [StyleChoice()], [VideoFacts.probe(tmp_path / "clip.mp4")], ["clip.mp4"],
                       tmp_path / "run", 4, None, torch.device("cpu"), progress=False)
    assert calls == [4, 2] and not list((tmp_path / "run").rglob("*.mp4*")), "no partial file"


# ---- the style options, checked before anything is read ----

ONE = StyleNetwork("none", ("mosaic",), 8)
THREE = StyleNetwork("style_weights", ("mosaic", "candy", "udnie"), 8)
ADAIN = StyleNetwork("style_image", (), 9, 16)


@pytest.mark.parametrize(("network", "options", "words"), [
    (ONE, {"style_index": 0}, "predict.style_index=0 does not apply to a one-style network"),
    (ONE, {"style_weights": [1]}, "it learned one style (mosaic)"),
    (ONE, {"alpha": 0.5}, "predict.alpha=0.5 does not apply"),
    (THREE, {"style": "a.jpg"}, "choose one with predict.style_index=K"),
    (THREE, {"style_index": -1}, "predict.style_index=-1 is out of range"),
    (THREE, {"style_index": True}, "predict.style_index=True is out of range"),
    (THREE, {"style_weights": [1, 2]}, "give 3 non-negative weights"),
    (THREE, {"style_weights": [1, -1, 1]}, "give 3 non-negative weights"),
    (THREE, {"style_weights": [0, 0, 0]}, "not all 0"),
    (THREE, {"style_index": 1, "style_weights": [1, 0, 0]}, "not both"),
    (ADAIN, {}, "add predict.style=IMG"),
    (ADAIN, {"style": "skimage:coffee", "alpha": 1.5}, "predict.alpha=1.5"),
    (ADAIN, {"style": ["skimage:coffee", "skimage:rocket"], "style_weights": [1]}, "give 2 non-negative"),
    (ADAIN, {"style_index": 0}, "does not apply to AdaIN: it takes any style image"),
    (ADAIN, {"style": "skimage:coffee", "style_size": 8}, "predict.style_size=8"),
    (ONE, {"image_size": 4}, "predict.image_size=4"),
])
def test_style_options_the_network_cannot_take_are_refused_with_what_it_takes(network, options, words):
    defaults = {"style_size": 512, "image_size": None, "preserve_colors": False}
    with pytest.raises(ConfigError) as raised:
        style_choices({**defaults, **options}, network)
    assert words in str(raised.value)


def test_an_unreadable_or_too_small_style_image_is_a_data_error_naming_it(tmp_path):
    defaults = {"style_size": 512, "image_size": None, "preserve_colors": False}
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"the style image .*broken\.jpg cannot be read"):
        style_choices({**defaults, "style": ["skimage:coffee", str(tmp_path / "broken.jpg")]}, ADAIN)
    Image.new("RGB", (300, 6)).save(tmp_path / "thin.png")
    with pytest.raises(DataError, match=r"thin\.png is 512x10 pixels .* needs 16 on each side"):
        style_choices({**defaults, "style": str(tmp_path / "thin.png")}, ADAIN)


def test_style_choices_blend_normalised_and_each_learned_style_gets_its_folder():
    defaults = {"style_size": 512, "image_size": None, "preserve_colors": False}
    each = style_choices(defaults, THREE)
    assert [choice.label for choice in each] == ["mosaic", "candy", "udnie"]
    assert [choice.inputs[0].tolist() for choice in each] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    (blend,) = style_choices({**defaults, "style_weights": [1, 3, 0], "preserve_colors": True}, THREE)
    assert blend.inputs[0].tolist() == [0.25, 0.75, 0.0] and blend.label is None
    assert blend.preserve_colors == "luminance"
    (styled,) = style_choices({**defaults, "style": ["skimage:coffee", "skimage:astronaut"], "style_size": 40,
                               "alpha": 0.5, "preserve_colors": True}, ADAIN)
    styles, weights, alpha = styled.inputs
    assert styles.shape == (2, 3, 27, 40), "coffee 400x600 is 27x40 at 40, the astronaut 40x40: both 27x40"
    assert torch.equal(styles[1], resize_longer_side(
        torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255, 40)[0, :, 6:33])
    assert weights.tolist() == [0.5, 0.5] and float(alpha) == 0.5 and styled.preserve_colors == "style"


def test_style_options_and_videos_are_refused_for_a_classifier(tmp_path, tmp_path_factory):
    from tests.inference_helpers import digits_classifier

    checkpoint, _ = digits_classifier(tmp_path_factory.getbasetemp())
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="predict.alpha=0.5 applies to style networks"):
        run_in_process(tmp_path / "run", f"predict.input={tmp_path / 'a.png'}", f"ckpt_path={checkpoint}",
                       "predict.alpha=0.5")
    write_fake_video(tmp_path / "clip.mp4")
    with pytest.raises(DataError, match="videos are styled by task=style_net networks only"):
        run_in_process(tmp_path / "run", f"predict.input={tmp_path / 'clip.mp4'}", f"ckpt_path={checkpoint}")


def test_model_json_with_a_style_network_reads_back_and_older_files_still_read():
    network = StyleNetwork("style_image", (), 9, 16)
    assert network.to_json()["inputs"] == ["styles", "style_weights", "alpha"]
    assert StyleNetwork.from_json(network.to_json()) == network
    with pytest.raises(ValueError, match="Style conditioning 'colour'"):
        StyleNetwork("colour", (), 8)
    version_2 = {"schema_version": 2, "task": "classify", "format": "onnx", "file": "model.onnx",
                 "classes": ["a"], "num_classes": 1, "channels": 1, "input_size": [8, 8],
                 "preprocessing": {"mode": "L", "mean": [0.5], "std": [0.5]}, "ignore_index": None,
                 "task_options": {}, "checkpoint": "x.ckpt", "opset": 18, "input_name": "images",
                 "output_name": "logits", "dynamic_axes": ["batch"], "verification": {}, "versions": {}}
    assert ModelInfo.from_json(version_2, "model.json").style is None

"""A trained style network (task=style_net) used to style new images and videos: the network of a checkpoint
or an exported file behind one call, the style the `predict.*` options choose (checked before anything is read
or written), and the predict step, video loop and size checks that `app.predict` runs them with."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from app.runtime import ExportedModel
from app.video import VideoFacts, VideoWriter, frame_batches
from core.contracts import StyleNetwork
from core.errors import ConfigError, DataError
from datamodules.image_files import UnreadableImageError, distinct, listing, scan_images
from datamodules.style_images import image_sources, read_source, source_name
from datamodules.transforms import resize_longer_side
from lightning_modules.style_inference import Forward, StyleChoice, inference_graph, stylize

STYLE_OPTIONS = ("style", "style_index", "style_weights", "alpha", "preserve_colors", "image_size")


def style_network(net: nn.Module, names: Sequence[str]) -> StyleNetwork:
    """What the eager network `net` takes (`names`: the styles it learned, as stored with its checkpoint)."""
    learned = () if net.conditioning == "style_image" else tuple(names)
    return StyleNetwork(net.conditioning, learned, int(net.min_size), getattr(net, "style_min_size", None))


@dataclass
class StyleModel:
    """A style network ready to style images: `forward` (an inference graph of `style_inference`, eager, or
    the exported file of one), what it takes, and, for a checkpoint, the network itself (for its costs)."""

    forward: Forward
    network: StyleNetwork
    net: nn.Module | None
    description: str

    @classmethod
    def eager(cls, net: nn.Module, names: Sequence[str], source: str) -> StyleModel:
        """A checkpoint's trained network."""
        return cls(inference_graph(net), style_network(net, names), net,
                   f"{type(net).__name__} from {Path(source).name}")

    @classmethod
    def exported(cls, model: ExportedModel, network: StyleNetwork) -> StyleModel:
        """An exported model.onnx / model.pt and its model.json's `style`."""
        return cls(model, network, None, f"{model.path.name}")


def style_options(options: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The style options (`STYLE_OPTIONS` and `style_size`) of `predict.*`, as plain values."""
    values = OmegaConf.to_container(options) if isinstance(options, DictConfig) else dict(options)
    return {key: values.get(key) for key in (*STYLE_OPTIONS, "style_size")}


def refuse_style_options(options: dict[str, Any], task: str) -> None:
    """Style options given for a network that styles nothing (classify, segment)."""
    given = [f"predict.{key}={options[key]}" for key in STYLE_OPTIONS
             if options.get(key) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} applies to style networks (task=style_net); this is a "
                          f"task={task} model, whose images are prepared as in its training. Remove it.")


def style_choices(options: dict[str, Any], network: StyleNetwork) -> list[StyleChoice]:
    """The style(s) `predict.*` chooses for `network`, checked: ConfigError (DataError for a style image)
    naming the option and the fix. A multi-style network without a choice styles in each learned style."""
    kind = network.conditioning
    check_options_fit(options, network)
    preserve = ("style" if kind == "style_image" else "luminance") if options.get("preserve_colors") else None
    if kind == "none":
        return [StyleChoice((), preserve)]
    if kind == "style_image":
        styles, weights = style_images(options, network)
        alpha = options.get("alpha")
        alpha = 1.0 if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise ConfigError(f"predict.alpha={alpha!r}: give a number from 0 (the content's features) to 1 "
                              "(the style's; the default).")
        return [StyleChoice((styles, weights, torch.tensor(float(alpha))), preserve)]
    count, index = len(network.styles), options.get("style_index")
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ConfigError(f"predict.style_index={index!r} is out of range: this network learned {count} "
                              f"style(s): {learned_styles(network)}. Give one of 0-{count - 1}.")
        return [StyleChoice((torch.nn.functional.one_hot(torch.tensor(index), count).float(),), preserve)]
    if options.get("style_weights") is not None:
        weights = blend_weights(options["style_weights"], count, learned_styles(network))
        return [StyleChoice((weights,), preserve)]
    labels = distinct([safe_name(name) for name in network.styles])
    return [StyleChoice((torch.nn.functional.one_hot(torch.tensor(i), count).float(),), preserve, label)
            for i, label in enumerate(labels)]


def learned_styles(network: StyleNetwork) -> str:
    """`0 mosaic, 1 candy, ...`."""
    return ", ".join(f"{i} {name}" for i, name in enumerate(network.styles))


def check_options_fit(options: dict[str, Any], network: StyleNetwork) -> None:
    """Options that the network's kind cannot take, refused with what it takes instead."""
    kind = network.conditioning
    takes = {"none": f"it learned one style ({network.styles[0] if network.styles else 'its own'}) and takes "
                     "no style option",
             "style_weights": f"it learned {len(network.styles)} styles ({learned_styles(network)}): choose "
                              "one with predict.style_index=K or blend them with predict.style_weights=[...]",
             "style_image": "it takes any style image: predict.style=IMG (or a list, with "
                            "predict.style_weights), predict.alpha"}[kind]
    refused = []
    if kind != "style_image":
        refused += [key for key in ("style", "alpha") if options.get(key) is not None]
    if kind != "style_weights" and options.get("style_index") is not None:
        refused.append("style_index")
    if kind == "none" and options.get("style_weights") is not None:
        refused.append("style_weights")
    if refused:
        given = ", ".join(f"predict.{key}={options[key]}" for key in refused)
        network_kind = {"none": "a one-style network (model=transformer_net)",
                        "style_weights": "a multi-style network (model=multistyle_net)"}.get(kind, "AdaIN")
        raise ConfigError(f"{given} does not apply to {network_kind}: {takes}.")
    if kind == "style_weights" and None not in (options.get("style_index"), options.get("style_weights")):
        raise ConfigError("Give predict.style_index (one learned style) or predict.style_weights (a blend of "
                          "them), not both.")
    size = options.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < network.min_size):
        raise ConfigError(f"predict.image_size={size!r}: give the results' longer side in pixels, at least "
                          f"{network.min_size} (null: each input's own size).")


def blend_weights(weights: Any, count: int, names: str) -> torch.Tensor:
    """`weights` (one per style, >= 0, not all 0) normalised to sum to 1."""
    values = list(weights) if isinstance(weights, list | tuple | ListConfig) else [weights]
    numeric = all(isinstance(w, int | float) and not isinstance(w, bool) for w in values)
    if len(values) != count or not numeric or min(values) < 0 or sum(values) <= 0:
        raise ConfigError(f"predict.style_weights={values}: give {count} non-negative weights, not all 0, "
                          f"one per style ({names}); they are normalised to sum to 1.")
    total = float(sum(values))
    return torch.tensor([float(w) / total for w in values])


def style_images(options: dict[str, Any], network: StyleNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaIN's style images (S, 3, h, w), their longer side `predict.style_size` (several of different shapes
    centre-cropped to the size they share), and their normalised weights."""
    spec = options.get("style")
    if spec is None:
        raise ConfigError("An AdaIN network styles with any image you give it: add predict.style=IMG (a file "
                          "or skimage:<name>, or a list [a.jpg,b.jpg] blended by predict.style_weights).")
    size = options.get("style_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < (network.style_min_size or 1):
        raise ConfigError(f"predict.style_size={size!r}: give the style images' longer side in pixels, at "
                          f"least {network.style_min_size}.")
    sources = image_sources(list(spec) if isinstance(spec, list | ListConfig) else str(spec))
    images = []
    for source in sources:
        try:
            image = read_source(source)
        except (UnreadableImageError, FileNotFoundError) as err:
            raise DataError(f"predict.style={spec}: the style image {source} cannot be read ({err}). Give an "
                            "image file Pillow reads.") from err
        image = resize_longer_side(image.unsqueeze(0).float() / 255, size)
        if min(image.shape[-2:]) < (network.style_min_size or 1):
            raise DataError(f"predict.style: {source} is {image.shape[-1]}x{image.shape[-2]} pixels at "
                            f"predict.style_size={size}; the encoder needs {network.style_min_size} on each "
                            "side. Use a less elongated image, or a larger predict.style_size.")
        images.append(image)
    height, width = (min(image.shape[dim] for image in images) for dim in (-2, -1))
    styles = torch.cat([centre_crop(image, height, width) for image in images])
    names = ", ".join(source_name(s) for s in sources)
    weights = options.get("style_weights")
    return styles, blend_weights(weights, len(sources), names) if weights is not None else torch.full(
        (len(sources),), 1 / len(sources))


def centre_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centre `height` x `width` of `image`."""
    top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - width) // 2
    return image[..., top:top + height, left:left + width]


def safe_name(name: str) -> str:
    """A style's name as one folder name."""
    return re.sub(r"[\\/:*?\"<>|\s]+", "_", name).strip("._") or "style"


def network_inputs(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> floats in [0, 1], their longer side resized to `size` (None: kept)."""
    images = images.float() / 255
    return images if size is None else resize_longer_side(images, size)


def image_transform(size: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`network_inputs` of one (3, H, W) image."""
    return lambda image: network_inputs(image.unsqueeze(0), size)[0]


def resized(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(height, width) after `resize_longer_side(..., size)`."""
    if size is None:
        return height, width
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_sizes(images: Sequence[Path], videos: Sequence[VideoFacts], min_size: int, size: int | None
                ) -> None:
    """Every input at least `min_size` on each side once resized to `size`: one DataError listing the others,
    before anything is styled (files that cannot be read are skipped and listed by the run itself)."""
    sizes, _ = scan_images(images)
    found = [(path, width, height) for path, (width, height) in sizes.items()]
    found += [(video.path, video.width, video.height) for video in videos]
    small = []
    for path, width, height in found:
        new_height, new_width = resized(height, width, size)
        if min(new_height, new_width) < min_size:
            at = f" ({new_width}x{new_height} at predict.image_size={size})" if size else ""
            small.append(f"{path}: {width}x{height}{at}")
    if small:
        raise DataError(f"{len(small)} input(s) are smaller than the network's minimum of {min_size} pixels "
                        f"a side:\n{listing(small)}\nNothing was styled. Remove them, or set a larger "
                        "predict.image_size (the results' longer side).")


class StylizeTask(pl.LightningModule):
    """A style network in Lightning's predict loop: each image of a batch in every chosen style."""

    def __init__(self, model: StyleModel, choices: Sequence[StyleChoice]) -> None:
        super().__init__()
        self.model = model.forward  # an nn.Module (moved to the device with this one) or an exported file
        self.net = model.net
        self.choices = list(choices)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        results: list[list[torch.Tensor] | None] = [None] * len(batch["index"])
        for positions, images in batch["groups"]:
            styled = [stylize(self.model, images, choice).float().cpu() for choice in self.choices]
            for k, position in enumerate(positions):
                results[position] = [result[k] for result in styled]
        return {"index": batch["index"], "skipped": batch["skipped"], "images": results}


def inference_device(accelerator: str) -> torch.device:
    """The device the video loop runs on: a CUDA GPU when `trainer.accelerator` allows one and one is here."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}, but torch sees no CUDA device here. Use "
                          "trainer.accelerator=cpu (or auto).")
    use_cuda = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def output_path(output_dir: Path, choice: StyleChoice, name: str, suffix: str) -> Path:
    """`<run dir>/stylized/[<style>/]<name><suffix>`."""
    folder = output_dir / "stylized" / (choice.label or "")
    return folder / f"{name}{suffix}"


def stylize_videos(model: StyleModel, choices: Sequence[StyleChoice], videos: Sequence[VideoFacts],
                   names: Sequence[str], output_dir: Path, batch_size: int, size: int | None,
                   device: torch.device, progress: bool) -> float | None:
    """Style every video in every chosen style, `batch_size` frames at a time, with a progress bar; returns
    the frames per second from the first decoded frame to the last encoded one. A video that fails part-way
    leaves no file of it (and the error says so)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    forward = model.forward.to(device) if isinstance(model.forward, nn.Module) else model.forward
    frames, start = 0, time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        for video, name in zip(videos, names, strict=True):
            task = bar.add_task(f"Styling {video.path.name}", total=video.frames or None)
            writers: list[VideoWriter] = []
            try:
                for frames_read, stamps in frame_batches(video.path, batch_size):
                    images = network_inputs(frames_read, size).to(device)
                    with torch.inference_mode():
                        results = [stylize(forward, images, choice).cpu() for choice in choices]
                    if not writers:
                        height, width = images.shape[-2:]
                        writers = [VideoWriter(output_path(output_dir, choice, name, ".mp4"), width, height,
                                               video.rate, stamps[0][1]) for choice in choices]
                    for writer, result in zip(writers, results, strict=True):
                        writer.write(result, stamps)
                    frames += len(images)
                    bar.advance(task, len(images))
                for writer in writers:
                    writer.close()
            except BaseException as err:
                for writer in writers:
                    writer.discard()
                if isinstance(err, DataError):
                    raise DataError(f"{err} No styled file of {video.path} was kept.") from err
                raise
            if not writers:
                raise DataError(f"{video.path} has a video stream but no frame could be decoded: nothing to "
                                "style.")
            shown = ", ".join(str(writer.path) for writer in writers)
            cut = " (an odd side cut by a pixel: H.264 in yuv420p needs even sides)" if writers[0].cut else ""
            print(f"Styled {writers[0].frames} frame(s) of {video.path} into {shown}{cut}"
                  f"{'; its audio was not copied' if video.has_audio else ''}")
    seconds = time.perf_counter() - start
    return frames / seconds if frames else None

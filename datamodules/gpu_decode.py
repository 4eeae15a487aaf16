"""JPEG decoding on the GPU (`data.decode=gpu`): loader workers only read the files; the device decodes
each batch's JPEGs at once (nvJPEG, through `torchvision.io.decode_jpeg(device="cuda")`) and applies
the same transforms.v2 pipeline to the decoded images there.

What nvJPEG cannot take (PNG, GIF, CMYK JPEGs, JPEGs whose EXIF tag says they are stored sideways:
`decode_jpeg` applies EXIF orientation on the CPU only) is decoded by the worker as on the CPU path,
so every file gives the same pixels, upright, either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from core.errors import ConfigError
from datamodules.image_files import (
    SKIP_HINT,
    ImageFileDataset,
    UnreadableImageError,
    header_orientation,
    opened_image,
    read_image,
)

DECODERS = ("cpu", "gpu")


class LoadedImage(NamedTuple):
    """A JPEG's bytes for the device to decode (`encoded`), or pixels a worker decoded; its file."""

    data: torch.Tensor
    encoded: bool
    path: str


def check_decoder(decode: str, device: torch.device | None = None) -> None:
    """Refuse an unknown `data.decode`; with `device` (training, testing), `gpu` without a CUDA device."""
    if decode not in DECODERS:
        raise ConfigError(f"data.decode={decode!r}: use cpu (loader workers decode) or gpu (nvJPEG on the "
                          "training GPU).")
    if decode != "gpu" or device is None:  # a checkpoint's config read for predict or export is fine
        return
    if not torch.cuda.is_available():
        raise ConfigError("data.decode=gpu decodes JPEGs with nvJPEG on a CUDA GPU, and torch sees no CUDA "
                          "device here. Use data.decode=cpu (the default) on this machine.")
    if device is not None and device.type != "cuda":
        raise ConfigError(f"data.decode=gpu needs the run to train on a CUDA GPU, and it trains on {device}. "
                          "Set trainer.accelerator=gpu, or data.decode=cpu.")


class EncodedImageFiles(ImageFileDataset):
    """The samples of an ImageFileDataset as `LoadedImage`s: RGB or grayscale JPEGs stored upright are
    left encoded; anything else is decoded here, as on the CPU path."""

    def read(self, path: Path) -> LoadedImage:
        with opened_image(path, self.max_pixels) as image:
            gpu = image.format == "JPEG" and image.mode in ("RGB", "L") and header_orientation(image) == 1
        if gpu:
            return LoadedImage(read_file(str(path)), True, str(path))
        return LoadedImage(read_image(path, self.mode, self.min_size, self.max_pixels), False, str(path))


@dataclass
class EncodedBatch:
    """A batch of `LoadedImage`s and their labels, from one split; pinned by the DataLoader like a tensor."""

    images: list[LoadedImage]
    targets: torch.Tensor
    split: str
    pinned: bool = field(default=False)

    def pin_memory(self) -> EncodedBatch:
        images = [image._replace(data=image.data.pin_memory()) for image in self.images]
        return EncodedBatch(images, self.targets.pin_memory(), self.split, pinned=True)


def collate_encoded(split: str) -> Callable[[Sequence[tuple[LoadedImage, int]]], EncodedBatch]:
    """The collate function of `split`'s loader: the images stay a list (their sizes differ)."""

    def collate(samples: Sequence[tuple[LoadedImage, int]]) -> EncodedBatch:
        labels = torch.tensor([label for _, label in samples])
        return EncodedBatch([image for image, _ in samples], labels, split)

    return collate


def decode_on_device(
    batch: EncodedBatch, device: torch.device, transform: Callable[[torch.Tensor], torch.Tensor], mode: str,
    skip_bad_images: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) on `device`: the batch's JPEGs decoded there in one call, every image transformed
    there by `transform` (the split's v2 pipeline), then stacked. Unreadable JPEGs raise naming the file,
    or with `skip_bad_images` are dropped from the batch with a warning."""
    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    images, keep = decoded_images(batch.images, device, read_mode, skip_bad_images)
    transformed = [transform(image).as_subclass(torch.Tensor) for image in images]
    targets = batch.targets.to(device, non_blocking=batch.pinned)
    if len(keep) < len(batch.images):
        targets = targets[torch.tensor(keep, device=device)]
    return torch.stack(transformed), targets


def decoded_images(images: list[LoadedImage], device: torch.device, read_mode: ImageReadMode,
                   skip_bad_images: bool) -> tuple[list[torch.Tensor], list[int]]:
    """Every image on `device` (JPEGs decoded by nvJPEG), and the indices of those kept."""
    encoded = [image.data for image in images if image.encoded]
    try:
        decoded = iter(decode_jpeg(encoded, mode=read_mode, device=device) if encoded else [])
    except RuntimeError:  # one bad file fails the whole call: find it
        decoded = iter(decode_each(images, device, read_mode, skip_bad_images))
    result, keep = [], []
    for index, image in enumerate(images):
        pixels = next(decoded) if image.encoded else image.data.to(device, non_blocking=True)
        if pixels is not None:
            result.append(pixels)
            keep.append(index)
    return result, keep


def decode_each(images: list[LoadedImage], device: torch.device, read_mode: ImageReadMode,
                skip_bad_images: bool) -> list[torch.Tensor | None]:
    """The batch's JPEGs decoded one by one: None for those that cannot be (skipped), or an error."""
    decoded: list[torch.Tensor | None] = []
    for image in (image for image in images if image.encoded):
        try:
            decoded.append(decode_jpeg(image.data, mode=read_mode, device=device))
        except RuntimeError as err:
            if not skip_bad_images:
                raise UnreadableImageError(f"Cannot decode image {image.path} on the GPU: {err} {SKIP_HINT}"
                                           ) from err
            warnings.warn(f"Skipping unreadable image {image.path}", stacklevel=2)
            decoded.append(None)
    return decoded


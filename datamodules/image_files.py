"""Reading image files robustly, and a dataset over a list of (path, label) samples."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF


class UnreadableImageError(RuntimeError):
    """An image file that exists but cannot be decoded."""


def read_image(path: str | Path, mode: str = "RGB", min_size: int | None = None) -> torch.Tensor:
    """Decode `path` into a uint8 CxHxW tensor in `mode` ("RGB" or "L").

    Any format Pillow reads works (JPEG, PNG, GIF, BMP, CMYK or palette images, a PNG named
    .jpg). With `min_size`, large JPEGs are decoded directly at a reduced scale whose shorter
    side is still at least `min_size` pixels, which is much faster than decoding in full. Other
    RGB or grayscale JPEGs go straight to a tensor through torchvision.io, faster than Pillow.
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and image.mode in ("RGB", "L") and mode in ("RGB", "L"):
                if min_size is not None and min(image.size) >= 2 * min_size:
                    image.draft(mode, (min_size, min_size))
                else:
                    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
                    return decode_jpeg(read_file(str(path)), mode=read_mode)
            return TF.pil_to_tensor(image.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, RuntimeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise UnreadableImageError(f"Cannot read image {path}: {err}") from err


class ImageFileDataset(Dataset):
    """Images read from files, each with an integer label, through an optional transform."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        transform: Callable[[torch.Tensor], Any] | None = None,
        mode: str = "RGB",
        min_size: int | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.mode = mode
        self.min_size = min_size
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                image = read_image(path, self.mode, self.min_size)
            except UnreadableImageError as err:
                if not self.skip_bad_images:
                    raise UnreadableImageError(
                        f"{err}. Replace or delete the file, or set data.skip_bad_images=true "
                        "to skip unreadable images with a warning."
                    ) from err
                warnings.warn(f"Skipping unreadable image {path}", stacklevel=2)
                continue
            return (self.transform(image) if self.transform else image), label
        raise UnreadableImageError("No image in this dataset can be read.")


def check_files_exist(samples: Sequence[tuple[Path, int]], listed_in: str) -> None:
    """Raise one error naming every sample file that is missing."""
    missing = [str(path) for path, _ in samples if not Path(path).is_file()]
    if missing:
        shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {listed_in} do not exist:\n  {shown}\n"
            "Check that data.root points at a complete copy of the dataset."
        )

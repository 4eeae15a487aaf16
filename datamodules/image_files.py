"""Reading image files robustly, scanning them before training, and a dataset of (path, label) samples."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF

from core.errors import DataError, MissingDataError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (about 0.25 GB as RGB)
ORIENTATION = ExifTags.Base.Orientation
TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16- and 32-bit integer images
SKIP_HINT = ("Replace or delete the file(s), or set data.skip_bad_images=true to skip unreadable "
             "images with one warning.")


class UnreadableImageError(DataError, RuntimeError):
    """An image file that exists but cannot be decoded (a RuntimeError too, as it was before)."""


class ImageTooLargeError(UnreadableImageError):
    """An image with more pixels than the decompression-bomb limit allows."""


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Pillow's lazily opened image (header only), refusing more than `max_pixels` pixels."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard must not refuse what the user allows
    fix = ("Raise data.max_image_pixels if the image is genuine, or set data.skip_bad_images=true "
           "to skip it.")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"Image {path} is too large to decode safely: {err} {fix}") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"Image {path} is {width}x{height} = {width * height:,} pixels, more than "
            f"data.max_image_pixels={max_pixels:,} (a guard against decompression bombs). {fix}"
        )
    return image


@contextmanager
def opened_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """`open_image` as a context; any failure to read the file raises UnreadableImageError naming it."""
    try:
        with open_image(path, max_pixels) as image:
            yield image
    except (UnreadableImageError, FileNotFoundError):
        raise
    except UnidentifiedImageError as err:
        raise UnreadableImageError(f"Cannot read image {path}: not an image format Pillow knows, "
                                   "or its header is corrupt") from err
    except (OSError, ValueError, SyntaxError, RuntimeError) as err:
        raise UnreadableImageError(f"Cannot read image {path}: {err}") from err


def to_8_bits(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer images scaled to 8-bit 'L' (Pillow's convert clips them at 255).

    'I' images whose values fit 16 bits (how Pillow opens some 16-bit files) are scaled as 16-bit.
    """
    if image.mode not in INTEGER_MODES:
        return image
    values = np.asarray(image).astype(np.int64)
    top = 65535 if values.max(initial=0) <= 65535 else 2**31 - 1
    scaled = (np.clip(values, 0, top) * 255 + top // 2) // top
    return Image.fromarray(scaled.astype(np.uint8))


def header_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright) without decoding pixels (a PNG's EXIF after them is not seen)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole PNG to look for EXIF after the pixel data
    return image.getexif().get(ORIENTATION, 1)


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (phone photos are stored sideways)."""
    if image.getexif().get(ORIENTATION, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def read_image(
    path: str | Path | bytes, mode: str = "RGB", min_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode `path` into a uint8 CxHxW tensor in `mode` ("RGB" or "L"), upright (EXIF orientation).

    Any format Pillow reads works (JPEG, PNG, GIF, BMP, CMYK, palette, 16- or 32-bit integer
    images, a PNG named .jpg). With `min_size`, large JPEGs are decoded directly at a reduced scale
    whose shorter side is still at least `min_size` pixels, which is much faster than decoding in
    full. Other RGB or grayscale JPEGs go straight to a tensor through torchvision.io, faster than
    Pillow. Images of more than `max_pixels` pixels raise ImageTooLargeError. `path` may also be the
    file's bytes (an upload).
    """
    with opened_image(io.BytesIO(path) if isinstance(path, bytes) else path, max_pixels) as image:
        if image.format == "JPEG" and image.mode in ("RGB", "L") and mode in ("RGB", "L"):
            if min_size is not None and min(image.size) >= 2 * min_size:
                image.draft(mode, (min_size, min_size))
            else:
                read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
                data = (torch.frombuffer(bytearray(path), dtype=torch.uint8) if isinstance(path, bytes)
                        else read_file(str(path)))
                return decode_jpeg(data, mode=read_mode, apply_exif_orientation=True)
        return TF.pil_to_tensor(to_8_bits(upright(image)).convert(mode))


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of `path` as `read_image` decodes it (EXIF orientation applied), from its header."""
    with opened_image(path, max_pixels) as image:
        width, height = image.size
        if header_orientation(image) in TRANSPOSED:
            return height, width
        return width, height


def scan_images(
    paths: Sequence[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 8
) -> tuple[dict[Path, tuple[int, int]], dict[Path, str]]:
    """Read every file's header in threads: the size of each readable image, why each other is not.

    Threads overlap the waits of cold or network storage; on a warm local disk one thread is as fast.
    """

    def scan(path: str | Path) -> tuple[int, int] | str:
        try:
            return image_size(path, max_pixels)
        except FileNotFoundError:
            return f"{path} does not exist"
        except UnreadableImageError as err:
            return str(err)

    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(scan, paths))
    sizes = {Path(p): r for p, r in zip(paths, found, strict=True) if not isinstance(r, str)}
    problems = {Path(p): r for p, r in zip(paths, found, strict=True) if isinstance(r, str)}
    return sizes, problems


def listing(lines: Sequence[str], limit: int = 10) -> str:
    """Up to `limit` lines, indented, with a count of the others."""
    rest = len(lines) - limit
    return "\n".join(f"  {line}" for line in lines[:limit]) + (f"\n  ... and {rest} more" if rest > 0 else "")


def drop_unreadable(
    splits: dict[str, list[tuple[Path, int]]], skip: bool, max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, list[tuple[Path, int]]]:
    """Header-scan all splits: raise naming each unreadable image, or (`skip`) drop them, warning once."""
    _, problems = scan_images([path for samples in splits.values() for path, _ in samples], max_pixels)
    if not problems:
        return splits
    counts = {split: sum(path in problems for path, _ in samples) for split, samples in splits.items()}
    where = ", ".join(f"{count} in {split}" for split, count in counts.items() if count)
    report = f"{len(problems)} image(s) cannot be read ({where}):\n{listing(list(problems.values()))}"
    if not skip:
        raise UnreadableImageError(f"{report}\n{SKIP_HINT}")
    rank_zero_warn(f"Skipping {report}\n(data.skip_bad_images=true)")
    return {split: [s for s in samples if s[0] not in problems] for split, samples in splits.items()}


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """Each input's name for the files made from it: its path relative to the inputs' common folder with
    its extension (`sub/photo.jpg`), so that `photo.jpg` and `photo.png`, or `a/x.png` and `b/x.png`, never
    share an output; see `distinct` for inputs listed twice."""
    absolute = [Path(os.path.abspath(Path(path).expanduser())) for path in paths]
    if not absolute:
        return []
    root = Path(os.path.commonpath([path.parent for path in absolute]))
    return distinct([path.relative_to(root).as_posix() for path in absolute])


def distinct(names: Sequence[str]) -> list[str]:
    """`names`, each repeat given `~2`, `~3`, ...; names that differ only in case count as repeats, since
    their files would overwrite each other on a case-insensitive disk (macOS, Windows, exFAT)."""
    taken = {name.casefold() for name in names}
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, count = name, 1
        while candidate.casefold() in seen or (candidate != name and candidate.casefold() in taken):
            count += 1
            candidate = f"{name}~{count}"
        seen.add(candidate.casefold())
        result.append(candidate)
    return result


class ImageFileDataset(Dataset):
    """Images read from files, each with an integer label, through an optional transform."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        transform: Callable[[torch.Tensor], Any] | None = None,
        mode: str = "RGB",
        min_size: int | None = None,
        skip_bad_images: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.mode = mode
        self.min_size = min_size
        self.skip_bad_images = skip_bad_images
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        # The header scan before training cannot see a file whose data is corrupt past its header.
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                image = self.read(path)
            except UnreadableImageError as err:
                if not self.skip_bad_images:
                    raise type(err)(f"{err} {SKIP_HINT}") from err
                warnings.warn(f"Skipping unreadable image {path}", stacklevel=2)
                continue
            return (self.transform(image) if self.transform else image), label
        raise UnreadableImageError("No image in this dataset can be read. " + SKIP_HINT)

    def read(self, path: Path) -> Any:
        """One sample's image as the transform takes it: here decoded (`read_image`)."""
        return read_image(path, self.mode, self.min_size, self.max_pixels)


def is_clutter(name: str) -> bool:
    """Whether a file or folder name is left beside the data by an operating system or tool, not data:
    hidden names (`.DS_Store`, macOS's AppleDouble `._<name>.jpg`, `.ipynb_checkpoints/`) and
    `__MACOSX/` (what a zip made on a Mac unpacks beside the files)."""
    return name.startswith(".") or name == "__MACOSX"


def visible_image_files(folder: Path, extensions: tuple[str, ...] = IMG_EXTENSIONS) -> tuple[list[Path], int]:
    """The image files under `folder` (recursively, links followed, in torchvision's ImageFolder order)
    that are not clutter (`is_clutter`, on any part of their path below `folder`), and how many image
    files were left out as clutter."""
    found, ignored = [], 0
    for directory, _, names in sorted(os.walk(folder, followlinks=True)):
        hidden = any(is_clutter(part) for part in Path(directory).relative_to(folder).parts)
        for name in sorted(names):
            if not name.lower().endswith(extensions):
                continue
            if hidden or is_clutter(name):
                ignored += 1
            else:
                found.append(Path(directory) / name)
    return found, ignored


def report_ignored(ignored: int, where: Path | str) -> None:
    """One info line saying how many image files were ignored as clutter under `where`."""
    if ignored:
        rank_zero_info(f"Ignored {ignored} image file(s) under {where} that are hidden or macOS metadata "
                       "(names starting with '.', such as AppleDouble ._<name> files, or inside __MACOSX/).")


def check_files_exist(samples: Sequence[tuple[Path, int]], listed_in: str) -> None:
    """Raise one error naming every sample file that is missing."""
    missing = [str(path) for path, _ in samples if not Path(path).is_file()]
    if missing:
        raise MissingDataError(
            f"{len(missing)} image(s) listed in {listed_in} do not exist:\n{listing(missing)}\n"
            "Check that data.root points at a complete copy of the dataset."
        )

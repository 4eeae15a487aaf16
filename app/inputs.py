"""What `predict.input` names (an image, a folder, a glob, a list file) as image paths, and their dataset."""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from core.errors import DataError
from datamodules.image_files import (
    UnreadableImageError,
    is_clutter,
    output_names,
    read_image,
    report_ignored,
    visible_image_files,
)

GLOB_CHARACTERS = set("*?[")


def is_image_name(path: Path) -> bool:
    """Whether the file name ends in an image extension torchvision knows."""
    return path.name.lower().endswith(IMG_EXTENSIONS)


def glob_base(pattern: Path) -> Path:
    """The folder a glob pattern starts from: its leading parts without glob characters."""
    for index, part in enumerate(pattern.parts):
        if GLOB_CHARACTERS & set(part):
            return Path(*pattern.parts[:index])
    return pattern.parent


def list_inputs(spec: str) -> list[Path]:
    """The image paths `spec` names: an image file, a folder (recursively), a glob, or a .txt of paths.
    Hidden and macOS metadata files and folders (AppleDouble `._x.jpg`, `__MACOSX/`) found in a folder or
    by a glob are left out, with one info line saying how many.

    Paths in a list file are relative to the list file's folder unless absolute. Raises
    DataError when `spec` does not exist or names no image.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        found, ignored = visible_image_files(path)
        found = sorted(found)
        report_ignored(ignored, path)
    elif path.is_file() and path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        found = [(path.parent / line) for line in lines if line and not line.startswith("#")]
    elif path.is_file():
        found = [path]
    elif GLOB_CHARACTERS & set(spec):
        matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                         if Path(p).is_file() and is_image_name(Path(p)))
        base = glob_base(path)
        found = [p for p in matched if not any(is_clutter(part) for part in p.relative_to(base).parts)]
        report_ignored(len(matched) - len(found), base)
    else:
        raise DataError(f"predict.input={spec}: no such file or folder. Give an image, a folder of "
                        "images, a glob such as 'photos/*.jpg' (quoted), or a .txt file of image paths.")
    if not found:
        raise DataError(f"predict.input={spec} names no image (extensions {', '.join(IMG_EXTENSIONS)}). "
                        "Point it at a folder, glob or list that holds images.")
    return found


class PredictionInputs(Dataset):
    """Images read from `paths` and preprocessed; an unreadable file gives `image=None` (skipped, listed)."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[torch.Tensor], torch.Tensor],
                 mode: str = "RGB") -> None:
        self.paths = list(paths)
        self.names = output_names(self.paths)
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = read_image(self.paths[index], self.mode)
        except (UnreadableImageError, FileNotFoundError) as err:
            return {"index": index, "image": None, "error": str(err)}
        return {"index": index, "image": self.transform(image), "error": None}


def collate_inputs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch of the readable images in groups of one size, each group one tensor: every image is
    predicted at its own size, never padded, so its result does not depend on the other images."""
    readable = [s for s in samples if s["image"] is not None]
    by_size: dict[tuple[int, ...], list[int]] = {}
    for position, sample in enumerate(readable):
        by_size.setdefault(tuple(sample["image"].shape), []).append(position)
    return {
        "index": [s["index"] for s in readable],
        "skipped": [(s["index"], s["error"]) for s in samples if s["image"] is None],
        "groups": [(positions, torch.stack([readable[p]["image"] for p in positions]))
                   for positions in by_size.values()],
    }

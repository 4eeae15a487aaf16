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
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def is_image_name(path: Path, extensions: tuple[str, ...] = IMG_EXTENSIONS) -> bool:
    """Whether the file name ends in an image extension torchvision knows (or one of `extensions`)."""
    return path.name.lower().endswith(extensions)


def is_video_name(path: Path) -> bool:
    """Whether the file name ends in a video container's extension."""
    return path.name.lower().endswith(VIDEO_EXTENSIONS)


def glob_base(pattern: Path) -> Path:
    """The folder a glob pattern starts from: its leading parts without glob characters."""
    for index, part in enumerate(pattern.parts):
        if GLOB_CHARACTERS & set(part):
            return Path(*pattern.parts[:index])
    return pattern.parent


def list_inputs(spec: str, videos: bool = False) -> list[Path]:
    """The image (and with `videos`, video) paths `spec` names: a file, a folder (recursively), a glob, or a
    .txt of paths. Hidden and macOS metadata files and folders (AppleDouble `._x.jpg`, `__MACOSX/`) found in
    a folder or by a glob are left out, with one info line saying how many.

    Paths in a list file are relative to the list file's folder unless absolute. Raises
    DataError when `spec` does not exist or names no image, or names a video when `videos` is false.
    """
    extensions = IMG_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    what = "image or video" if videos else "image"
    path = Path(spec).expanduser()
    if path.is_dir():
        found, ignored = visible_image_files(path, extensions)
        found = sorted(found)
        report_ignored(ignored, path)
    elif path.is_file() and path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        found = [(path.parent / line) for line in lines if line and not line.startswith("#")]
    elif path.is_file():
        found = [path]
    elif GLOB_CHARACTERS & set(spec):
        matched = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                         if Path(p).is_file() and is_image_name(Path(p), extensions))
        base = glob_base(path)
        found = [p for p in matched if not any(is_clutter(part) for part in p.relative_to(base).parts)]
        report_ignored(len(matched) - len(found), base)
    else:
        raise DataError(f"predict.input={spec}: no such file or folder. Give an {what}, a folder of "
                        f"them, a glob such as 'photos/*.jpg' (quoted), or a .txt file of paths.")
    if not found:
        raise DataError(f"predict.input={spec} names no {what} (extensions {', '.join(extensions)}). "
                        f"Point it at a folder, glob or list that holds them.")
    if not videos and any(is_video_name(p) for p in found):
        raise DataError(f"predict.input={spec} names a video ({next(p for p in found if is_video_name(p))}): "
                        "videos are styled by task=style_net networks only; give images.")
    return found


class PredictionInputs(Dataset):
    """Images read from `paths` and preprocessed; an unreadable file gives `image=None` (skipped, listed).
    `names` (the outputs' names) default to `output_names(paths)`."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[torch.Tensor], torch.Tensor],
                 mode: str = "RGB", names: Sequence[str] | None = None) -> None:
        self.paths = list(paths)
        self.names = output_names(self.paths) if names is None else list(names)
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

"""Content images x style images for style transfer: each content image is one sample."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from core.errors import ConfigError, DataError, MissingDataError
from datamodules.base import batches_per_process, check_batch_limits
from datamodules.image_files import distinct, is_clutter, output_names, read_image, report_ignored
from datamodules.transforms import resize_longer_side

EMBEDDED_PREFIX = "skimage:"
DEFAULT_CONTENT = ("skimage:astronaut", "skimage:chelsea")
DEFAULT_STYLE = ("skimage:immunohistochemistry",)
# The smallest image side VGG's deepest layers can read (data.min_size, which task=style's coarsest
# scale also obeys through task.min_size).
MIN_SIZE = 32


def image_sources(spec: str | Sequence[str]) -> list[str]:
    """Expand a file, a folder, `skimage:<name>`, or a list of those into image sources."""
    items = [spec] if isinstance(spec, str) else list(spec)
    sources = []
    for item in items:
        path = Path(str(item)).expanduser()
        if str(item).startswith(EMBEDDED_PREFIX):
            sources.append(str(item))
        elif path.is_dir():
            images = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMG_EXTENSIONS]
            found = [str(p) for p in images if not is_clutter(p.name)]
            report_ignored(len(images) - len(found), path)
            if not found:
                raise MissingDataError(f"The folder {path} holds no images ({', '.join(IMG_EXTENSIONS)}): "
                                       "add some, or give image files or skimage:<name> instead.")
            sources.extend(found)
        elif path.is_file():
            sources.append(str(path))
        else:
            raise MissingDataError(
                f"Image {path} does not exist. Give a file, a folder of images, or skimage:<name> "
                "(e.g. skimage:astronaut) for a photograph bundled with scikit-image."
            )
    return sources


def source_name(source: str) -> str:
    """A short name for output files: the file stem, or the scikit-image picture's name."""
    return source.removeprefix(EMBEDDED_PREFIX) if source.startswith(EMBEDDED_PREFIX) else Path(source).stem


def content_names(sources: Sequence[str]) -> list[str]:
    """Each content image's distinct name for its output files: a file's path relative to the files'
    common folder with its extension (`photo.jpg`, `a/x.png`), a scikit-image picture's name."""
    files = iter(output_names([s for s in sources if not s.startswith(EMBEDDED_PREFIX)]))
    return distinct([source_name(s) if s.startswith(EMBEDDED_PREFIX) else next(files) for s in sources])


def read_source(source: str) -> torch.Tensor:
    """A (3, H, W) uint8 RGB image: a file, or `skimage:<name>` for a photograph bundled with scikit-image."""
    if not source.startswith(EMBEDDED_PREFIX):
        return read_image(source, "RGB")
    import numpy as np
    import skimage.data

    name = source.removeprefix(EMBEDDED_PREFIX)
    if not hasattr(skimage.data, name):
        raise ConfigError(f"scikit-image has no sample picture {name!r}: use a name from skimage.data, "
                          "e.g. skimage:astronaut.")
    array = getattr(skimage.data, name)()
    array = np.stack([array] * 3, axis=-1) if array.ndim == 2 else array[..., :3]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def load_source(source: str, size: int, min_size: int) -> torch.Tensor:
    """A (1, 3, H, W) float image in [0, 1] whose longer side is `size`."""
    image = read_source(source)
    if min(image.shape[-2:]) < min_size:
        raise DataError(
            f"Image {source} is {image.shape[-1]}x{image.shape[-2]} pixels; VGG's deepest layers need "
            f"at least {min_size} pixels on each side. Use a larger image."
        )
    return resize_longer_side(image.unsqueeze(0).float() / 255.0, size).contiguous()


class StylePairs(Dataset):
    """Each item: one content image with every style image and the styles' blend weights."""

    def __init__(self, contents: list[str], styles: list[str], style_weights: list[float],
                 image_size: int, style_scale: float, min_size: int) -> None:
        self.contents = contents
        self.names = content_names(contents)
        self.styles = [load_source(s, round(image_size * style_scale), min_size) for s in styles]
        self.style_names = [source_name(s) for s in styles]
        self.style_weights = torch.tensor(style_weights, dtype=torch.float32)
        self.image_size = image_size
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.contents)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = self.contents[index]
        return {
            "name": self.names[index],
            "content": load_source(source, self.image_size, self.min_size),
            "styles": self.styles,
            "style_names": self.style_names,
            "style_weights": self.style_weights,
        }


def single_item(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for batches of one: images of different sizes are never stacked."""
    return batch[0]


class StyleImagesDataModule(pl.LightningDataModule):
    """`content` (file, folder, list, or skimage:<name>) x `style` (one or several, blended)."""

    def __init__(
        self,
        content: str | Sequence[str] = DEFAULT_CONTENT,
        style: str | Sequence[str] = DEFAULT_STYLE,
        style_weights: Sequence[float] | None = None,
        image_size: int = 128,
        style_scale: float = 1.0,
        min_size: int = MIN_SIZE,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.content = content
        self.style = style
        self.style_weights = style_weights
        self.image_size = image_size
        self.style_scale = style_scale
        self.min_size = min_size
        self.num_workers = num_workers
        self.dataset: StylePairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        contents, styles = image_sources(self.content), image_sources(self.style)
        weights = list(self.style_weights) if self.style_weights else [1.0] * len(styles)
        if len(weights) != len(styles) or sum(weights) <= 0:
            raise ConfigError(
                f"data.style_weights {weights} must give one positive weight per style image "
                f"({len(styles)}: {', '.join(map(source_name, styles))})."
            )
        weights = [w / sum(weights) for w in weights]
        for source in contents:  # fail on a bad file now, not after hours of styling others
            load_source(source, self.image_size, self.min_size)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        check_batch_limits(self.trainer, {"train": batches_per_process(len(contents), 1, world_size, "train",
                                                                       drop_last=False)}, batch_size=1)
        self.dataset = StylePairs(contents, styles, weights, self.image_size, self.style_scale, self.min_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=1, shuffle=False, collate_fn=single_item,
                          num_workers=self.num_workers)

"""Content and style images for training feed-forward style networks (task=style_net).

Training samples are random crops of content images (resized so that their shorter side is
`resize_size`, cropped to `image_size`, flipped), each with the style it is trained towards: an index
into a fixed set of style images (Johnson et al., Dumoulin et al.), or a crop (made alike) of a
randomly drawn style image from a collection (WikiArt, for AdaIN). Validation and test style whole held-out
content images (their longer side at most `eval_size`) in each evaluation style.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from core.contracts import Preprocessing
from core.errors import ConfigError, DataError, MissingDataError
from datamodules.image_files import listing, scan_images
from datamodules.style_images import EMBEDDED_PREFIX, image_sources, load_source, read_source, source_name
from datamodules.transforms import resize_longer_side

# scikit-image's bundled photographs: scenes and objects to style (grayscale ones as RGB), no download.
EMBEDDED_CONTENT = tuple(f"{EMBEDDED_PREFIX}{name}" for name in (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "coins", "clock"))
DEFAULT_STYLE = f"{EMBEDDED_PREFIX}immunohistochemistry"


def is_hidden(path: Path, root: Path) -> bool:
    """Files and folders that are not images of the dataset: dot-files (macOS `._x.jpg`, `.DS_Store`),
    and macOS archive folders (`__MACOSX`)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def images_under(folder: Path) -> list[str]:
    """Every image file beneath `folder` (any depth), sorted, leaving out hidden and macOS files."""
    found = sorted(str(p) for p in folder.rglob("*")
                   if p.suffix.lower() in IMG_EXTENSIONS and p.is_file() and not is_hidden(p, folder))
    if not found:
        raise MissingDataError(f"The folder {folder} holds no images ({', '.join(IMG_EXTENSIONS)}) at any "
                               "depth: point the setting at the folder that holds them.")
    return found


def content_sources(spec: str | Sequence[str]) -> list[str]:
    """Content images of `spec`: a folder (every image beneath it), or a file / `skimage:<name>` / list."""
    if isinstance(spec, str) and Path(spec).expanduser().is_dir():
        return images_under(Path(spec).expanduser())
    return image_sources(spec)


def hold_out(sources: list[str], fraction: float, seed: int, key: str) -> tuple[list[str], list[str]]:
    """(kept, held out): `fraction` of `sources` (at least one) held out, chosen by `seed`, both sorted."""
    if not 0 < fraction < 1:
        raise ConfigError(f"{key}={fraction}: hold out a fraction between 0 and 1 (e.g. 0.25) of the images "
                          "for validation; there is no separate validation folder.")
    if len(sources) < 2:
        raise DataError(f"{len(sources)} image(s) cannot be split into training and held-out images: give "
                        f"at least two ({sources}).")
    order = np.random.default_rng(seed).permutation(len(sources))
    count = min(len(sources) - 1, max(1, round(fraction * len(sources))))
    held = set(order[:count].tolist())
    kept = [source for i, source in enumerate(sources) if i not in held]
    return kept, [source for i, source in enumerate(sources) if i in held]


def check_readable(sources: Sequence[str], what: str) -> None:
    """One error naming every file of `sources` whose header cannot be read (bundled pictures are fine)."""
    files = [s for s in sources if not s.startswith(EMBEDDED_PREFIX)]
    _, problems = scan_images(files)
    if problems:
        raise DataError(f"{len(problems)} {what} image(s) cannot be read:\n"
                        f"{listing(list(problems.values()))}\nReplace or delete them.")


class ContentCrops(Dataset):
    """`crops_per_image` random crops of each content image per epoch, each with its style (an index
    into `num_styles` fixed styles, or a random crop of one of `style_pool`)."""

    def __init__(self, sources: list[str], image_size: int, resize_size: int, crops_per_image: int,
                 num_styles: int, style_pool: list[str] | None = None) -> None:
        self.sources = sources
        self.crops_per_image = crops_per_image
        self.num_styles = num_styles
        self.style_pool = style_pool
        self.crop = self.random_crop(resize_size, image_size)

    @staticmethod
    def random_crop(resize_size: int, crop_size: int) -> v2.Compose:
        """Resize the shorter side to `resize_size`, random `crop_size` crop, flip, floats in [0, 1]."""
        return v2.Compose([v2.ToImage(), v2.Resize(resize_size, antialias=True),
                           v2.RandomCrop(crop_size, pad_if_needed=True), v2.RandomHorizontalFlip(),
                           v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])

    def __len__(self) -> int:
        return len(self.sources) * self.crops_per_image

    def __getitem__(self, index: int) -> dict[str, Any]:
        source = self.sources[index // self.crops_per_image]
        sample: dict[str, Any] = {"content": self.crop(read_source(source))}
        if self.style_pool is None:
            sample["style_index"] = int(torch.randint(self.num_styles, ()))
        else:
            drawn = self.style_pool[int(torch.randint(len(self.style_pool), ()))]
            sample["style"] = self.crop(read_source(drawn))
        return sample


class WholeImages(Dataset):
    """Held-out content images, whole (longer side at most `eval_size`), one per batch."""

    def __init__(self, sources: list[str], eval_size: int | None) -> None:
        self.sources = sources
        self.eval_size = eval_size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_source(self.sources[index]).float().unsqueeze(0) / 255.0
        if self.eval_size is not None and max(image.shape[-2:]) > self.eval_size:
            image = resize_longer_side(image, self.eval_size)
        return {"content": image[0].contiguous(), "name": source_name(self.sources[index])}


class StyleNetDataModule(pl.LightningDataModule):
    """Content images (`content`: a folder, files, `skimage:<name>` or a list) with a seeded held-out
    part, and a fixed set of style images (`style`: one or a list, each its own style)."""

    def __init__(
        self,
        content: str | Sequence[str] = EMBEDDED_CONTENT,
        style: str | Sequence[str] = DEFAULT_STYLE,
        image_size: int = 256,
        resize_size: int | None = None,
        crops_per_image: int = 1,
        eval_size: int | None = 512,
        style_size: int = 512,
        val_fraction: float = 0.25,
        val_images: int | None = 8,
        test_images: int | None = None,
        split_seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        if crops_per_image < 1:
            raise ConfigError(f"data.crops_per_image={crops_per_image}: take at least one crop per image.")
        for key, count in (("val_images", val_images), ("test_images", test_images)):
            if count is not None and count < 1:
                raise ConfigError(f"data.{key}={count}: evaluate at least one held-out image (null: all "
                                  "of them).")
        self.content = content
        self.style = style
        self.image_size = image_size
        self.resize_size = resize_size or image_size
        if self.resize_size < image_size:
            raise ConfigError(f"data.resize_size={resize_size} is smaller than the crop, data.image_size="
                              f"{image_size}: set data.resize_size to {image_size} or more (or null).")
        self.crops_per_image = crops_per_image
        self.eval_size = eval_size
        self.style_size = style_size
        self.val_fraction = val_fraction
        self.val_images = val_images
        self.test_images = test_images
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.styles: list[tuple[str, torch.Tensor]] = []
        self.datasets: dict[str, Dataset] | None = None

    @property
    def samples_styles(self) -> bool:
        """Whether training draws style images from a collection instead of a fixed set of styles."""
        return False

    def inference_preprocessing(self) -> Preprocessing:
        """A new image as the networks take it: RGB in [0, 1] at its own size (no normalisation)."""
        return Preprocessing(mode="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def content_splits(self) -> tuple[list[str], list[str]]:
        """(training, held-out) content images."""
        sources = content_sources(self.content)
        return hold_out(sources, self.val_fraction, self.split_seed, "data.val_fraction")

    def style_sources(self) -> list[str]:
        """The style images: the fixed styles, or those evaluated on (a collection's held-out ones)."""
        return image_sources(self.style)

    def training_set(self, sources: list[str]) -> ContentCrops:
        """Random crops of the training content images, each with the index of a random fixed style."""
        return ContentCrops(sources, self.image_size, self.resize_size, self.crops_per_image,
                            len(self.styles))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is not None:
            return
        train, held_out = self.content_splits()
        style_sources = self.style_sources()
        check_readable([*train, *held_out], "content")
        check_readable(style_sources, "style")
        self.styles = [(source_name(s), load_source(s, self.style_size, min_size=1)) for s in style_sources]
        self.datasets = {
            "train": self.training_set(train),
            "val": WholeImages(held_out[: self.val_images], self.eval_size),
            "test": WholeImages(held_out[: self.test_images], self.eval_size),
        }

    def pins_memory(self) -> bool:
        """`pin_memory`, where "auto" pins exactly when the trainer's device is a CUDA GPU."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        assert self.datasets is not None, "setup() must run before the loaders are asked for"
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pins_memory(),
                          persistent_workers=self.persistent_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", 1, shuffle=False)  # whole images of different sizes

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", 1, shuffle=False)


class CocoDataModule(StyleNetDataModule):
    """MS-COCO's images as content, in their own layout: `<root>/train<year>/*.jpg` to train on and
    `<root>/val<year>/*.jpg` held out (annotations are not needed)."""

    def __init__(self, root: str, year: int = 2014, **options: Any) -> None:
        super().__init__(**options)
        self.root = Path(root).expanduser()
        self.year = year

    def content_splits(self) -> tuple[list[str], list[str]]:
        splits = []
        for split in ("train", "val"):
            folder = self.root / f"{split}{self.year}"
            if not folder.is_dir():
                raise MissingDataError(
                    f"No COCO folder {folder}. data=coco reads <root>/train{self.year}/*.jpg and "
                    f"<root>/val{self.year}/*.jpg (train2014.zip and val2014.zip, or the 2017 ones with "
                    "data.year=2017, from cocodataset.org, unzipped into data.root)."
                )
            splits.append(sorted(str(p) for p in folder.glob("*.jpg") if not p.name.startswith(".")))
            if not splits[-1]:
                raise MissingDataError(f"The COCO folder {folder} holds no .jpg images.")
        return splits[0], splits[1]


def read_split_csv(path: Path, root: Path) -> list[str]:
    """The image paths of a WikiArt split file (ArtGAN's `style_train.csv`: `<style>/<file>.jpg,<label>`
    rows, no header), resolved against `root`."""
    if not path.is_file():
        raise MissingDataError(f"WikiArt split file {path} does not exist: check data.train_csv / "
                               "data.val_csv (null holds out data.val_fraction of the images instead).")
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and row[0].strip()]
    images = [str(root / row[0].strip()) for row in rows]
    missing = [image for image in images if not Path(image).is_file()]
    if missing:
        raise MissingDataError(f"{len(missing)} image(s) listed in {path} are not under {root}:\n"
                               f"{listing(missing)}\nCheck data.root.")
    return images


class WikiArtDataModule(StyleNetDataModule):
    """Content images as `StyleNetDataModule` takes them, and style images drawn at random from WikiArt
    (`<root>/<style>/<artist>_<title>.jpg`): each training crop gets a random crop of a random painting.

    Paintings are split by ArtGAN's CSV files (`train_csv`, `val_csv`, relative to `root` or absolute)
    or, without them, by holding out `style_val_fraction` (seeded); `val_styles` held-out paintings
    are the evaluation styles.
    """

    def __init__(self, root: str, train_csv: str | None = None, val_csv: str | None = None,
                 style_val_fraction: float = 0.1, val_styles: int = 2, style: Any = None,
                 **options: Any) -> None:
        if style:
            raise ConfigError(f"data.style={style} does not apply to data=wikiart, which draws its styles "
                              "from data.root. Remove it (model=multistyle_net sets it: WikiArt trains "
                              "model=adain).")
        super().__init__(style=(), **options)
        self.root = Path(root).expanduser()
        self.train_csv = train_csv
        self.val_csv = val_csv
        self.style_val_fraction = style_val_fraction
        self.val_styles = val_styles
        self._paintings: tuple[list[str], list[str]] | None = None

    @property
    def samples_styles(self) -> bool:
        return True

    def paintings(self) -> tuple[list[str], list[str]]:
        """(training, held-out) paintings."""
        if self._paintings is None:
            if not self.root.is_dir():
                raise MissingDataError(f"No WikiArt folder {self.root}: data=wikiart reads <root>/<style>/"
                                       "<artist>_<title>.jpg (ArtGAN's wikiart.zip): set data.root.")
            if (self.train_csv is None) != (self.val_csv is None):
                raise ConfigError("Give both data.train_csv and data.val_csv (ArtGAN's style_train.csv and "
                                  "style_val.csv), or neither to hold out data.style_val_fraction of the "
                                  "paintings.")
            if self.train_csv is not None:
                self._paintings = (read_split_csv(self.root / self.train_csv, self.root),
                                   read_split_csv(self.root / self.val_csv, self.root))
            else:
                self._paintings = hold_out(images_under(self.root), self.style_val_fraction, self.split_seed,
                                           "data.style_val_fraction")
        return self._paintings

    def style_sources(self) -> list[str]:
        return self.paintings()[1][: self.val_styles]

    def training_set(self, sources: list[str]) -> ContentCrops:
        """Random crops of the training content images, each with a random crop of a random painting."""
        pool = self.paintings()[0]
        check_readable(pool, "style")
        return ContentCrops(sources, self.image_size, self.resize_size, self.crops_per_image, len(pool),
                            pool)

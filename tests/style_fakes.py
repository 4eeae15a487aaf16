"""Fake COCO, WikiArt and COCO-Stuff folders in their exact on-disk layouts, from scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
# Unused raw ids of COCO-Stuff's stuffthingmaps (the 11 thing classes dropped from COCO's 91): never in a map.
STUFF_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def photo(index: int, size: tuple[int, int]) -> Image.Image:
    """One of scikit-image's colour photographs, resized to (width, height)."""
    import skimage.data

    array = getattr(skimage.data, PHOTOS[index % len(PHOTOS)])()[..., :3]
    return Image.fromarray(array).resize(size)


def write_fake_coco(root: Path, year: int = 2014, train: int = 4, val: int = 2) -> Path:
    """`<root>/train<year>/*.jpg` and `<root>/val<year>/*.jpg` named as COCO names them (no annotations)."""
    for split, count in (("train", train), ("val", val)):
        folder = root / f"{split}{year}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image_id = 9 + 33 * i + (1000 if split == "val" else 0)
            name = f"COCO_{split}{year}_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"
            photo(i + (3 if split == "val" else 0), (64 + 8 * i, 48)).save(folder / name, quality=90)
    return root


def write_fake_wikiart(root: Path, per_style: int = 3, with_csv: bool = True) -> Path:
    """`<root>/<Style>/<artist>_<title>.jpg` (ArtGAN's wikiart.zip), with its `style_train.csv` and
    `style_val.csv` (`<Style>/<file>.jpg,<label>` rows, no header) beside the style folders."""
    styles = ("Impressionism", "Cubism", "Ukiyo_e")
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for label, style in enumerate(styles):
        (root / style).mkdir(parents=True, exist_ok=True)
        for i in range(per_style):
            name = f"{style.lower()}-painter_painting-no-{i}-19{10 + i}.jpg"
            photo(label + i, (56, 64)).save(root / style / name, quality=90)
            rows["val" if i == 0 else "train"].append(f"{style}/{name},{label}")
    if with_csv:
        for split, lines in rows.items():
            (root / f"style_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_fake_coco_stuff(root: Path, train: int = 4, val: int = 2) -> Path:
    """cocostuff's layout: `<root>/images/{train2017,val2017}/*.jpg` and the stuffthingmaps PNGs
    `<root>/annotations/{train2017,val2017}/*.png` (raw ids 0-181 without the 11 unused, 255 unlabelled)."""
    used = [i for i in range(182) if i not in STUFF_UNUSED]
    rng = np.random.default_rng(0)
    for split, count in (("train2017", train), ("val2017", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            stem = f"{139 + 17 * i + (5000 if split == 'val2017' else 0):012d}"
            width, height = 48 + 4 * i, 40
            photo(i, (width, height)).save(root / "images" / split / f"{stem}.jpg", quality=90)
            mask = np.full((height, width), 255, dtype=np.uint8)
            for value in rng.choice(used, size=3, replace=False):
                top, left = rng.integers(0, height - 10), rng.integers(0, width - 10)
                mask[top:top + 10, left:left + 12] = value
            mask[:10, :10] = 0  # person, on every map
            Image.fromarray(mask).save(root / "annotations" / split / f"{stem}.png")
    return root


def write_fake_video(path: Path, frames: int = 6, size: tuple[int, int] = (48, 32), fps: int = 12,
                     audio: bool = True, video: bool = True) -> Path:
    """An H.264 MP4 of `frames` frames of a scikit-image photo panning by (width, height) `size`, at `fps`
    frames per second, with a second of silent AAC audio (`audio`); `video=False`: the audio alone."""
    import av

    width, height = size
    picture = np.asarray(photo(0, (width * 2, height)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps) if video else None
        sound = container.add_stream("aac", rate=22050) if audio or not video else None
        if stream is not None:
            odd = width % 2 or height % 2  # 4:2:0 chroma needs even sides
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p" if odd else "yuv420p"
            for index in range(frames):
                left = index * width // max(frames, 1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:, left:left + width]),
                                                   format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        if sound is not None:
            silence = np.zeros((1, 22050), np.float32)
            samples = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 22050, 0
            container.mux(sound.encode(samples))
            container.mux(sound.encode(None))
    return path

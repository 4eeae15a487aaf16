"""Tiny classification datasets written in the exact on-disk layouts their real readers expect."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.synthetic import CIFAR10_CLASSES, class_pattern, write_cifar10

__all__ = ["CIFAR10_CLASSES", "write_cifar10"]


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """MNIST idx files as torchvision reads them: <root>/MNIST/raw/*-ubyte."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.stack([class_pattern(int(y), 28, 1, rng)[..., 0] for y in labels])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def write_jpeg(path: Path, label: int, size: tuple[int, int], rng: np.random.Generator,
               mode: str = "RGB", fmt: str = "JPEG") -> None:
    """An image file of `label`'s pattern in `mode`, saved in format `fmt` whatever its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = class_pattern(label, max(size), 3, rng)[: size[1], : size[0]]
    Image.fromarray(array).convert(mode).save(path, format=fmt)


def write_mit67(root: Path, classes: tuple[str, ...] = ("bakery", "kitchen", "living room"),
                train_per_class: int = 6, test_per_class: int = 2, seed: int = 0) -> Path:
    """MIT67's layout with its real quirks: <root>/Images/<class>/<file>, TrainImages.txt, TestImages.txt.

    Lines end in CRLF; class counts are uneven; one file name has spaces; the images include a
    grayscale JPEG, a CMYK JPEG, a PNG and a GIF named .jpg, and sizes vary.
    """
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"TrainImages.txt": [], "TestImages.txt": []}
    odd_kinds = [("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG"), ("P", "GIF")]
    for label, name in enumerate(classes):
        n_train = train_per_class + label  # uneven class counts
        for i in range(n_train + test_per_class):
            file_name = f"{name}_{i:04d}.jpg" if i != 1 else f"{name} photo {i}.jpg"
            mode, fmt = odd_kinds[i] if i < len(odd_kinds) else ("RGB", "JPEG")
            size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
            write_jpeg(root / "Images" / name / file_name, label, size, rng, mode, fmt)
            lists["TrainImages.txt" if i < n_train else "TestImages.txt"].append(f"{name}/{file_name}")
    for list_name, entries in lists.items():
        (root / list_name).write_bytes(("\r\n".join(entries) + "\r\n").encode())
    return root


def write_image_folder(root: Path, splits: tuple[str, ...] = ("train", "test"),
                       classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6, seed: int = 0) -> Path:
    """An ImageFolder tree <root>/<split>/<class>/<image>.jpg."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, name in enumerate(classes):
            for i in range(per_class):
                write_jpeg(root / split / name / f"{i}.jpg", label, (48, 40), rng)
    return root

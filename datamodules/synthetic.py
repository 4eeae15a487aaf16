"""Synthetic datasets in real on-disk formats, for benchmarks, smoke runs and the tests' fakes to read."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]



def class_pattern(label: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy image whose bright stripe position encodes `label`, so the classes differ."""
    image = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
    row = (label * size) // 10
    image[row : row + max(1, size // 10)] = 230
    return image


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 python pickles: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, name: str) -> dict:
        labels = [i % 10 for i in range(n)]
        data = np.stack([class_pattern(y, 32, 3, rng).transpose(2, 0, 1).reshape(-1) for y in labels])
        names = [f"{i}.png" for i in range(n)]
        return {"batch_label": name, "labels": labels, "data": data, "filenames": names}

    for i in range(1, 6):
        content = batch(per_batch, f"training batch {i} of 5")
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(content, 2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, "testing batch 1 of 1"), 2))
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, 2))
    return root

"""Generator states in checkpoints, so that a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def capture_rng_states() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, as types a `weights_only` load accepts."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every generator to the states `capture_rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpoint(pl.Callback):
    """Saves the generator states with each checkpoint and restores them when training resumes.

    Lightning restores weights, optimizer and loop counters but not the generators that shuffle the
    data and draw augmentations and dropout, so a resumed run would train on other batches. With
    them, a run resumed from an end-of-epoch checkpoint repeats the uninterrupted one exactly
    (with trainer.deterministic=true).
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng_states": capture_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_rng_states(state_dict["rng_states"])

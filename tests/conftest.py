"""Shared fixtures: composing run.py's config in-process with its outputs in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from app.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # as run.py does
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Each pytest-xdist worker (and every process it starts) gets its share of the cores: OpenMP threads
    # that outnumber the cores spin against each other and make a torch step many times slower.
    share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(share))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

__all__ = ["CONF_DIR", "ROOT", "compose_config"]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config for a test; `fast=True` adds the `debug=smoke` preset (conf/debug/smoke.yaml)."""

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config([*(["debug=smoke"] if fast else []), *overrides], tmp_path / "run")

    return make

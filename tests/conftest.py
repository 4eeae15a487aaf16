"""Shared fixtures: composing run.py's config in-process with its outputs in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # as run.py does

# Small, quiet and fast: the shape of every in-process end-to-end run.
FAST = ["debug=smoke"]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """run.py's config for `overrides`, as Hydra would compose it, writing under `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(output_dir / "data")
        del cfg.hydra
    return cfg


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config for a test; `fast=True` adds the FAST overrides."""

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config([*(FAST if fast else []), *overrides], tmp_path / "run")

    return make

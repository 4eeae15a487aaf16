"""run.py's config composed without running it (for scripts and tests that build a run themselves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str], output_dir: Path) -> Any:
    """run.py's config for `overrides`, as Hydra would compose it, writing under `output_dir`."""
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from app.renamed_keys import move_renamed_keys, renamed_override

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # as run.py does
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[renamed_override(o) for o in overrides], return_hydra_config=True)
    move_renamed_keys(cfg)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.data_dir = str(output_dir / "data")
        del cfg.hydra
    return cfg

"""The files a run keeps about itself in its directory: its resolved config, and `error.txt` when it fails."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def resolved_config_path(cfg: DictConfig) -> Path:
    """`config_resolved.yaml` of the run; a resumed run writes its own beside its Hydra files."""
    from hydra.core.hydra_config import HydraConfig

    output_dir = Path(cfg.paths.output_dir)
    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    if subdir and Path(subdir).name.startswith("resume-"):
        return output_dir / subdir / "config_resolved.yaml"
    return output_dir / "config_resolved.yaml"


def save_resolved_config(cfg: DictConfig) -> None:
    """Write the run's config with every interpolation resolved (`config_resolved.yaml`)."""
    OmegaConf.save(cfg, resolved_config_path(cfg), resolve=True)


def forget_earlier_failure(cfg: DictConfig) -> None:
    """A requeued or resumed job starts afresh: an earlier attempt's `error.txt` is history."""
    (Path(cfg.paths.output_dir) / "error.txt").unlink(missing_ok=True)

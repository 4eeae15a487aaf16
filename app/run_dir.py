"""The files a run keeps about itself in its directory: its resolved config, and `error.txt` when it fails;
and the check that the directory can be written at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
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
    """A requeued or resumed job starts afresh: an earlier attempt's `error.txt` (and ranks') are history."""
    from app.distributed_job import forget_rank_errors

    output_dir = Path(cfg.paths.output_dir)
    (output_dir / "error.txt").unlink(missing_ok=True)
    forget_rank_errors(output_dir)


def check_writable(folder: Path, key: str, log_dir: str) -> None:
    """Create `folder` and write a file in it; if that fails, a ConfigError naming the folder and the fix,
    printed as one block, and exit code 2 (nothing could be written, not even error.txt)."""
    import tempfile

    from app.console import print_error
    from core.errors import ConfigError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        print_error(ConfigError(
            f"The output folder {folder} cannot be written: {error.strerror} ({error.filename}). Outputs go "
            f"under paths.log_dir={log_dir} (PROJECT_ROOT/outputs, by default beside run.py): give a folder "
            f"you can write, e.g. paths.log_dir=$HOME/visionlab_outputs or PROJECT_ROOT=$HOME/visionlab, or "
            f"name this run's own folder with {key}=..."
        ))
        raise SystemExit(2) from None


class WritableOutputFolder(Callback):
    """Hydra callback: the run's (or sweep's) output folder is checked before Hydra creates it and
    starts logging there; a read-only or forbidden place is a clean error instead of a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir", config.paths.log_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir", config.paths.log_dir)

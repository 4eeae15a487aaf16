"""Train and test one experiment: python run.py [group=option ...] [key=value ...].

The flow, top to bottom: Hydra composes the config from conf/ and the command line (rewritten first by
app/argv.py); the config is checked once (app/checks.py) and printed (app/console.py); then either a
mode that uses a trained model (predict, export) or training (app/training.py: build, fit, test the
best checkpoint, metrics.json, the closing summary). app/boundary.py turns the project's errors into one
block and exit code 2. Heavy libraries are imported inside functions so that `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from app.argv import rewritten
from app.boundary import config_errors_reported, is_rank_zero, rerun_only_this_job, within_boundary
from app.checks import check_config
from app.console import print_config, quiet_known_noise
from app.renamed_keys import move_renamed_keys
from app.run_dir import forget_earlier_failure, save_resolved_config

# Outputs and data default to folders beside this file, whatever the working directory; Hydra
# resolves the sweep directory before it knows its runtime, so the root cannot come from Hydra.
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


def run(cfg: DictConfig) -> float | None:
    """Check, print, then predict/export or train and test; the monitored metric of a training run."""
    rerun_only_this_job()
    if is_rank_zero():
        forget_earlier_failure(cfg)
    quiet_known_noise()
    move_renamed_keys(cfg, quiet=not is_rank_zero())
    check_config(cfg)
    if is_rank_zero():
        print_config(cfg)
        save_resolved_config(cfg)
    mode = mode_of(cfg)
    if mode is not None:
        mode(cfg)
        return None
    from app.slurm import continue_requeued_job
    from app.training import train

    continue_requeued_job(cfg)
    metrics = train(cfg)
    monitored = cfg.monitor.metric
    return metrics.get(f"best/{monitored}", metrics.get(monitored))


def mode_of(cfg: DictConfig) -> Callable[[DictConfig], Any] | None:
    """The mode that uses a trained model when the config asks for one (`export.format`, `predict.input`,
    `serve.model`, `compress.prune.ratio`, `visualize.filters`)."""
    if OmegaConf.select(cfg, "export.format"):
        from app.export import export

        return export
    if OmegaConf.select(cfg, "predict.input"):
        from app.predict import predict

        return predict
    if OmegaConf.select(cfg, "serve.model"):
        from app.serve import serve

        return serve
    if OmegaConf.select(cfg, "compress.prune.ratio") is not None:
        from app.compress import compress

        return compress
    if OmegaConf.select(cfg, "visualize.filters"):
        from app.visualize import visualize

        return visualize
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's entry point: `run` inside the error boundary; sweepers optimise what it returns."""
    return within_boundary(cfg, run)


if __name__ == "__main__":
    with config_errors_reported():
        sys.argv = rewritten(sys.argv)
        main()

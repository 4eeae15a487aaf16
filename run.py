"""Train and test one experiment: python run.py [group=option ...] [key=value ...].

Compose the config, print it, seed, instantiate data, network, task and trainer, fit, test
the best checkpoint, write metrics.json and return the monitored metric (for sweepers).
Heavy libraries are imported inside functions so that `python run.py --help` stays fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from datamodules.errors import ConfigError, VisionlabError

# Outputs and data default to folders beside this file, whatever the working directory; Hydra
# resolves the sweep directory before it knows its runtime, so the root cannot come from Hydra.
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


def check_config(cfg: DictConfig) -> None:
    """Stop early, with the fix in the message, on settings that cannot work together."""
    import torch

    precision = str(cfg.trainer.get("precision", "32-true"))
    optimizer = str(cfg.optimizer.get("_target_", ""))
    if optimizer.endswith("LBFGS") and precision.startswith("16"):
        raise ConfigError(
            f"optimizer=lbfgs cannot run with precision={precision}: fp16 mixed precision scales "
            "the loss with a GradScaler, which cannot step a closure-based optimizer. Use "
            "precision=32 or precision=bf16-mixed (no scaler) with L-BFGS."
        )
    strategy = cfg.trainer.get("strategy")
    strategy_name = str(strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if "FSDP" in strategy_name.upper() and on_cpu:
        raise ConfigError(
            "strategy=fsdp needs CUDA GPUs, and this run would be on the CPU. Use strategy=ddp "
            "(with trainer.devices=N) to train on several CPU processes."
        )
    if not cfg.train and cfg.ckpt_path is None:
        raise ConfigError("train=false evaluates a checkpoint: give it with ckpt_path=PATH.")
    if not cfg.train and not cfg.test:
        raise ConfigError("train=false and test=false: there is nothing to do.")


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a `callbacks` or `logger` config group that has a `_target_`."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def usable_callbacks(callbacks: list[Any], has_logger: bool, progress_bar: bool) -> list[Any]:
    """Drop the callbacks that the rest of the config switched off: LR monitor, progress bar."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar

    return [
        cb for cb in callbacks
        if (has_logger or not isinstance(cb, LearningRateMonitor))
        and (progress_bar or not isinstance(cb, ProgressBar))
    ]


def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config as a rich tree, one branch per top-level key."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", style="bold")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Seed, then instantiate the datamodule, task (with its network) and trainer of `cfg`."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    if cfg.get("channels_last"):  # NHWC weights: cuDNN then runs the convolutions NHWC (tensor cores)
        net = net.to(memory_format=torch.channels_last)
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    module = instantiate(
        cfg.task, net=net, optimizer=instantiate(cfg.optimizer), scheduler=scheduler,
        compile=cfg.compile,
    )
    loggers = instantiate_all(cfg.get("logger"))
    from callbacks.run_config import RunConfigInCheckpoint

    callbacks = usable_callbacks(
        instantiate_all(cfg.get("callbacks")), has_logger=bool(loggers),
        progress_bar=cfg.trainer.get("enable_progress_bar", True),
    )
    callbacks.append(RunConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from `cfg`, fit, test the best checkpoint; return the final metrics."""
    from callbacks.hparams import log_hyperparameters_with_metrics

    datamodule, module, trainer = build(cfg)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)
    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = (best or None) if cfg.train else cfg.ckpt_path
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    log_hyperparameters_with_metrics(trainer.loggers, hyperparameters, metrics)
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def quote_numeric_choices(argv: list[str], groups: tuple[str, ...] = ("precision",)) -> list[str]:
    """Quote numeric options of config groups: Hydra reads `precision=32` as an int, not a choice."""
    pattern = re.compile(rf"^((?:{'|'.join(groups)})=)(.+)$")

    def quote(match: re.Match[str]) -> str:
        values = [f"'{v}'" if v.isdigit() else v for v in match.group(2).split(",")]
        return match.group(1) + ",".join(values)

    return [pattern.sub(quote, arg) for arg in argv]


def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (from RANK, LOCAL_RANK or SLURM_PROCID)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def rerun_only_this_job() -> None:
    """Make Lightning's DDP launcher start ranks > 0 on this multirun job, not on the whole sweep.

    The launcher re-runs `sys.argv` with `hydra.run.dir=<hydra.run.dir>`: inside a multirun that
    would start the sweep again, in another directory. Give it this job's overrides and directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: returns the monitored metric, which sweepers optimise."""
    try:
        return run(cfg)
    except BaseException as error:
        record_error(error, Path(cfg.paths.output_dir))
        if isinstance(error, VisionlabError):
            print_error(error)
            raise SystemExit(2) from None
        raise


def record_error(error: BaseException, output_dir: Path) -> None:
    """Write `error.txt` in the run directory: why the run failed, for sweep summaries."""
    if isinstance(error, SystemExit | KeyboardInterrupt) or not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "error.txt").write_text(f"{type(error).__name__}: {error}\n")


def print_error(error: VisionlabError) -> None:
    """The project's own errors as one short block on stderr: what is wrong and the fix."""
    from rich.console import Console
    from rich.panel import Panel

    Console(stderr=True).print(Panel(str(error), title=type(error).__name__, title_align="left",
                                     border_style="red", expand=False))


def run(cfg: DictConfig) -> float | None:
    """Train and/or test, predict or export as `cfg` says; return the monitored metric (training)."""
    rerun_only_this_job()
    if is_rank_zero():
        print_config_tree(cfg)
        OmegaConf.save(cfg, Path(cfg.paths.output_dir) / "config_resolved.yaml", resolve=True)
    from lightning_modules.inference.pipeline import mode_of

    mode = mode_of(cfg)  # predict.input=... or export.format=...: no training
    if mode is not None:
        mode(cfg)
        return None
    metrics = train(cfg)
    monitored = cfg.monitor.metric
    return metrics.get(f"best/{monitored}", metrics.get(monitored))


if __name__ == "__main__":
    sys.argv = quote_numeric_choices(sys.argv)
    main()

"""Train and test one experiment: python run.py [group=option ...] [key=value ...].

Compose the config, print it, seed, instantiate data, network, task and trainer, fit, test
the best checkpoint, write metrics.json and return the monitored metric (for sweepers).
Heavy libraries are imported inside functions so that `python run.py --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from core.errors import CheckpointError, ConfigError, VisionlabError

# Outputs and data default to folders beside this file, whatever the working directory; Hydra
# resolves the sweep directory before it knows its runtime, so the root cannot come from Hydra.
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
log = logging.getLogger(__name__)


# The numbers users type most: (key, kind, may be null, an example). Checked before anything is built,
# so that `trainer.max_epochs=abc` is named instead of failing deep inside Lightning.
TYPED_KEYS = (
    ("seed", "whole", False, "42"),
    ("trainer.max_epochs", "whole", True, "10"),
    ("trainer.min_epochs", "whole", True, "1"),
    ("trainer.max_steps", "whole", False, "1000 (-1: no limit)"),
    ("trainer.num_nodes", "whole", False, "1"),
    ("trainer.accumulate_grad_batches", "whole", False, "4"),
    ("trainer.check_val_every_n_epoch", "whole", True, "1"),
    ("trainer.log_every_n_steps", "whole", True, "10"),
    ("trainer.limit_train_batches", "number", True, "0.25 (a fraction) or 10 (batches)"),
    ("trainer.limit_val_batches", "number", True, "0.25 (a fraction) or 10 (batches)"),
    ("trainer.limit_test_batches", "number", True, "0.25 (a fraction) or 10 (batches)"),
    ("trainer.gradient_clip_val", "number", True, "1.0"),
    ("data.batch_size", "whole", False, "64"),
    ("data.num_workers", "workers", False, "4 or auto"),
    ("optimizer.lr", "number", False, "1e-3"),
    ("optimizer.weight_decay", "number", True, "1e-4"),
    ("optimizer.momentum", "number", True, "0.9"),
)
KINDS = {"whole": "a whole number", "number": "a number", "workers": "a whole number or auto"}
ABSENT = object()


def override_key(override: str) -> str:
    """The key a command-line override sets (`+a.b=1`, `~a.b` and `a.b=1` all set `a.b`)."""
    return override.lstrip("+~").partition("=")[0]


def command_line_override(key: str) -> str | None:
    """The command-line override that set `key`, if one did."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    for override in HydraConfig.get().overrides.task:
        if override_key(override) == key:
            return override
    return None


def where_set(key: str) -> str:
    """Where the value of `key` came from: the command line, or the composed config files."""
    override = command_line_override(key)
    if override is not None:
        return f"given on the command line as `{override}`"
    return "set in the composed config (conf/ or an experiment= file)"


def has_kind(value: Any, kind: str) -> bool:
    """Whether `value` is a whole number ("whole"; "workers": or `auto`) or any real number ("number")."""
    if kind == "workers":
        return value == "auto" or (has_kind(value, "whole") and value >= 0)
    numeric = (int,) if kind == "whole" else (int, float)
    return isinstance(value, numeric) and not isinstance(value, bool)


def valid_devices(devices: Any) -> bool:
    """Lightning's `devices`: a count (-1: all), "auto", a list of indices, or a string of them."""
    if isinstance(devices, str):
        return devices == "auto" or re.fullmatch(r"-?\d+|(\d+,)*\d+,?", devices.strip()) is not None
    if isinstance(devices, list | ListConfig):
        return all(has_kind(index, "whole") for index in devices)
    return has_kind(devices, "whole") and devices >= -1


def check_value_types(cfg: DictConfig) -> None:
    """Name the key, where it was set and an example when a number users type is not a number."""
    for key, kind, nullable, example in TYPED_KEYS:
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT or (value is None and nullable) or has_kind(value, kind):
            continue
        raise ConfigError(f"{key}={value!r} is not {KINDS[kind]}: {where_set(key)}. "
                          f"Give {KINDS[kind]}, e.g. {key}={example}.")
    devices = OmegaConf.select(cfg, "trainer.devices", default="auto")
    if not valid_devices(devices):
        where = where_set("trainer.devices")
        raise ConfigError(f"trainer.devices={devices!r} is not a device count: {where}. "
                          "Give a count (trainer.devices=2; -1 for all), a list of indices "
                          "(trainer.devices=[0,1]) or trainer.devices=auto.")


def checkpoint_to_read(cfg: DictConfig) -> Path | None:
    """The checkpoint file `ckpt_path` names: a path, or `last` when the run directory has one."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, "best", "hpc"):
        return None
    if ckpt_path == "last":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None  # Lightning starts afresh, with a warning
    return Path(str(ckpt_path)).expanduser()


def network_and_task(config: dict[str, Any] | DictConfig) -> tuple[str, str]:
    """The network a config builds (model.name, or its class) and its task name."""
    model = config.get("model") or {}
    network = model.get("name") or str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    return str(network), str(config.get("task_name", "?"))


def check_checkpoint(cfg: DictConfig) -> None:
    """The checkpoint to resume or evaluate is readable and holds the network and task this run builds."""
    from callbacks.run_config import CHECKPOINT_KEY
    from lightning_modules.checkpoint_io import read_checkpoint

    path = checkpoint_to_read(cfg)
    if path is None:
        return
    stored = read_checkpoint(path, mmap=True).get(CHECKPOINT_KEY)
    if not stored:
        return  # written before runs stored their config: checkpoint_loading names a misfit
    (trained_net, trained_task), (net, task) = network_and_task(stored), network_and_task(cfg)
    if (trained_net, trained_task) != (net, task):
        data = str((stored.get("data") or {}).get("_target_", "?")).rsplit(".", 1)[-1]
        raise CheckpointError(
            f"Checkpoint {path} holds network {trained_net} trained for task={trained_task} ({data}), but "
            f"this run builds {net} for task={task}. Give the checkpoint's network and task on the command "
            f"line (task={trained_task} and the model= option of {trained_net}), or a checkpoint of {net}."
        )


@contextmanager
def checkpoint_loading(ckpt_path: Any) -> Iterator[None]:
    """Turn a state dict that does not fit the network into a CheckpointError naming the file."""
    try:
        yield
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        lines = str(error).splitlines()
        shown = "\n".join(line[:300] for line in lines[:4])
        raise CheckpointError(
            f"Checkpoint {ckpt_path} does not fit the network this run builds:\n{shown}\n"
            "Use the model= and data.num_classes that the checkpoint was trained with."
        ) from error


def check_config(cfg: DictConfig) -> None:
    """Stop early, with the fix in the message, on settings that cannot work together."""
    check_value_types(cfg)

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
    if "FSDP" in strategy_name.upper() and runs_on_cpu(accelerator):
        raise ConfigError(
            "strategy=fsdp needs CUDA GPUs, and this run would be on the CPU. Use strategy=ddp "
            "(with trainer.devices=N) to train on several CPU processes."
        )
    if not cfg.train and cfg.ckpt_path is None:
        raise ConfigError("train=false evaluates a checkpoint: give it with ckpt_path=PATH.")
    if not cfg.train and not cfg.test:
        raise ConfigError("train=false and test=false: there is nothing to do.")
    if not uses_a_trained_model(cfg):  # predict and export rebuild the checkpoint's own network
        check_checkpoint(cfg)


def uses_a_trained_model(cfg: DictConfig) -> bool:
    """Whether the run predicts or exports (`predict.input`, `export.format`) instead of training."""
    return bool(OmegaConf.select(cfg, "predict.input") or OmegaConf.select(cfg, "export.format"))


def runs_on_cpu(accelerator: str) -> bool:
    """Whether `trainer.accelerator` puts the run on the CPU (imports torch only when it must ask CUDA)."""
    if accelerator != "auto":
        return accelerator == "cpu"
    import torch

    return not torch.cuda.is_available()


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


def console_width() -> int:
    """The terminal's width, or 80 columns when the output is not a terminal."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config as a rich tree, one branch per top-level key, wrapped to fit."""
    import rich.console
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", style="bold")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rich.console.Console(width=console_width()).print(tree)


def print_config_choices(output_dir: Path) -> None:
    """Print the chosen config groups and the command-line overrides: the run's config in brief."""
    import rich.console
    import rich.table
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    hidden = ("hydra", "paths", "debug/")
    chosen = {group: option for group, option in hydra_cfg.runtime.choices.items()
              if option is not None and not group.startswith(hidden)}
    first = ["task", "data", "model", "optimizer", "scheduler", "precision", "strategy", "trainer"]
    order = [*[g for g in first if g in chosen], *sorted(set(chosen) - set(first))]
    choices = [f"{group}={chosen[group]}" for group in order]
    grid = rich.table.Table.grid(padding=(0, 1))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("groups", "  ".join(choices))
    grid.add_row("overrides", "  ".join(hydra_cfg.overrides.task) or "none")
    grid.add_row("config", f"{shown(output_dir / 'config_resolved.yaml')} (print_config=full prints it here)")
    rich.console.Console(width=console_width()).print(grid)


def not_a_tip(record: logging.LogRecord) -> bool:
    """Drop Lightning's advertisements for its cloud products ("💡 Tip: ...")."""
    return not record.getMessage().startswith("💡 Tip")


def quiet_known_noise() -> None:
    """Silence the console messages that ask nothing of the user; each is explained here, once."""
    import warnings

    # Lightning 2.6 itself calls torch's deprecated `isinstance(treespec, LeafSpec)`: no user can act on it.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not_a_tip not in lightning_log.filters:
        lightning_log.addFilter(not_a_tip)


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
    from callbacks.finite_loss import StopOnNonFiniteLoss
    from callbacks.run_config import RunConfigInCheckpoint
    from callbacks.stop_checkpoint import CheckpointOnSIGTERM

    callbacks = usable_callbacks(
        instantiate_all(cfg.get("callbacks")), has_logger=bool(loggers),
        progress_bar=cfg.trainer.get("enable_progress_bar", True),
    )
    callbacks += [
        RunConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True)),
        StopOnNonFiniteLoss(),
        CheckpointOnSIGTERM(Path(cfg.paths.output_dir) / "checkpoints", resume_command(cfg)),
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def resume_command(cfg: DictConfig) -> str:
    """The command line that continues this run in its own directory (ckpt_path to be added)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if override_key(o) not in ("ckpt_path", "hydra.run.dir")]
    return shlex.join(["python", "run.py", *kept, f"hydra.run.dir={cfg.paths.output_dir}"])


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate everything from `cfg`, fit, test the best checkpoint; return the final metrics."""
    from callbacks.hparams import log_hyperparameters_with_metrics

    datamodule, module, trainer = build(cfg)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)
    metrics: dict[str, float] = {}
    if cfg.train:
        with checkpoint_loading(cfg.ckpt_path):
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()})
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = (best or None) if cfg.train else cfg.ckpt_path
        with checkpoint_loading(ckpt_path):
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
        logging.getLogger("run").info(run_summary(cfg, trainer, metrics))
    return metrics


def shown(path: str | Path) -> str:
    """`path` relative to the working directory when it is inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def run_summary(cfg: DictConfig, trainer: Any, metrics: dict[str, float]) -> str:
    """Where a finished run's results are: directory, metrics, checkpoints, images, TensorBoard."""
    from pytorch_lightning.loggers import TensorBoardLogger

    output_dir = Path(cfg.paths.output_dir)
    lines = [f"Run finished. Directory: {shown(output_dir)}"]
    monitored = f"best/{cfg.monitor.metric}"
    if monitored in metrics:
        lines.append(f"  {monitored}: {metrics[monitored]:.4g} ({cfg.monitor.mode}imised)")
    tested = [f"{key} {value:.4g}" for key, value in sorted(metrics.items()) if key.startswith("test/")]
    if tested:
        lines.append("  " + ", ".join(tested))
    lines.append(f"  all final metrics: {shown(output_dir / 'metrics.json')}")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        lines.append(f"  best checkpoint: {shown(checkpoint.best_model_path)}")
    if (output_dir / "checkpoints").is_dir():
        lines.append(f"  checkpoints: {shown(output_dir / 'checkpoints')}/")
    stylized = cfg.task.get("output_dir")
    if stylized and Path(stylized).is_dir():
        lines.append(f"  stylized images: {shown(stylized)}/")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"  tensorboard --logdir {shown(logger.log_dir)}")
    return "\n".join(lines)


def quote_numeric_choices(argv: list[str], groups: tuple[str, ...] = ("precision",)) -> list[str]:
    """Quote numeric options of config groups: Hydra reads `precision=32` as an int, not a choice."""
    pattern = re.compile(rf"^((?:{'|'.join(groups)})=)(.+)$")

    def quote(match: re.Match[str]) -> str:
        values = [f"'{v}'" if v.isdigit() else v for v in match.group(2).split(",")]
        return match.group(1) + ",".join(values)

    return [pattern.sub(quote, arg) for arg in argv]


def is_rank_zero() -> bool:
    """Whether this process is the global rank 0 (from RANK, LOCAL_RANK or SLURM_PROCID).

    Lightning's answer once it is imported (its strategies correct it); before that, the variables
    Lightning reads, so that a config error does not wait for Lightning to import.
    """
    if "pytorch_lightning" in sys.modules:
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        return rank_zero_only.rank == 0
    rank = next((os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if key in os.environ), "0")
    return int(rank) == 0


def is_sigterm_stop(error: BaseException) -> bool:
    """Whether Lightning stopped fitting or testing because the process received SIGTERM."""
    if "pytorch_lightning" not in sys.modules:
        return False
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(error, SIGTERMException)


def sigterm_handler(signum: int, frame: Any) -> None:
    """Stop the run with Lightning's SIGTERMException, unless Lightning's own handler is calling this one.

    During fit and test Lightning's handler calls the handler it found (this one) too, and stops at
    the end of the batch in progress; outside them (data checks, between fit and test) SIGTERM would
    otherwise kill the process without a word or an exit code of its own.
    """
    if signal.getsignal(signal.SIGTERM) is not sigterm_handler:
        return
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    raise SIGTERMException


@contextmanager
def sigterm_stops_the_run() -> Iterator[None]:
    """Within the block SIGTERM raises through `sigterm_handler` (signal handlers: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    """Hydra entry point: returns the monitored metric, which sweepers optimise.

    The error boundary: the project's own errors print as one block (on global rank 0 only) and exit
    with code 2; SIGTERM exits with 143 (128 + 15, as if the signal had killed the process); anything
    else keeps its traceback. A failed multirun job returns None after reporting its error, so that
    the sweep goes on to the other jobs and its summary runs (Hydra's sweepers stop at a job's
    exception); the summary marks the job failed and the sweep exits non-zero.
    """
    try:
        with sigterm_stops_the_run():
            return run(cfg)
    except BaseException as raised:
        error = unwrap_instantiation(raised)
        record_error(error, Path(cfg.paths.output_dir))
        if is_sigterm_stop(error):
            raise SystemExit(143) from None
        full_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"  # set by debug=anomaly, or the user
        if full_traceback and isinstance(error, Exception) and is_rank_zero():
            traceback.print_exception(error)
        if isinstance(error, VisionlabError) and is_rank_zero():
            print_error(error)
        if in_multirun() and isinstance(error, Exception):
            if not isinstance(error, VisionlabError):
                log.error("This job failed; the sweep goes on.", exc_info=error)
            return None
        if isinstance(error, VisionlabError):
            raise SystemExit(2) from None
        if full_traceback and isinstance(error, Exception):
            raise SystemExit(1) from None  # Hydra restores the environment, then would shorten it
        raise


def unwrap_instantiation(error: BaseException) -> BaseException:
    """The exception a constructor raised, out of the InstantiationException that Hydra wraps it in."""
    from hydra.errors import InstantiationException

    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def in_multirun() -> bool:
    """Whether this process runs a job of a multirun (a sweep), not a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_error(error: BaseException, output_dir: Path) -> None:
    """Write `error.txt` in the run directory: why the run failed, for sweep summaries."""
    stopped = is_sigterm_stop(error)
    if (isinstance(error, SystemExit | KeyboardInterrupt) and not stopped) or not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    message = str(error)
    if stopped:
        saved = (output_dir / "checkpoints" / "stopped.ckpt").is_file()
        message = "stopped by SIGTERM" + ("; checkpoints/stopped.ckpt holds the stop point" if saved else "")
    (output_dir / "error.txt").write_text(f"{type(error).__name__}: {message}\n")


def print_error(error: VisionlabError) -> None:
    """The project's own errors as one short block on stderr: what is wrong and the fix."""
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    hint = "" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "HYDRA_FULL_ERROR=1 shows the traceback"
    Console(stderr=True).print(Panel(escape(str(error)), title=type(error).__name__, title_align="left",
                                     subtitle=hint, subtitle_align="right", border_style="red",
                                     expand=False))


def run(cfg: DictConfig) -> float | None:
    """Train and/or test, predict or export as `cfg` says; return the monitored metric (training)."""
    rerun_only_this_job()
    if is_rank_zero():  # a requeued or resumed job starts afresh: an earlier attempt's failure is history
        (Path(cfg.paths.output_dir) / "error.txt").unlink(missing_ok=True)
    quiet_known_noise()
    check_config(cfg)
    if is_rank_zero():
        printers = {"short": lambda: print_config_choices(Path(cfg.paths.output_dir)),
                    "full": lambda: print_config_tree(cfg), "none": lambda: None}
        if cfg.print_config not in printers:
            raise ConfigError(f"print_config={cfg.print_config}: choose one of {', '.join(printers)}.")
        printers[cfg.print_config]()
        OmegaConf.save(cfg, resolved_config_path(cfg), resolve=True)
    from lightning_modules.inference.pipeline import mode_of

    mode = mode_of(cfg)  # predict.input=... or export.format=...: no training
    if mode is not None:
        mode(cfg)
        return None
    metrics = train(cfg)
    monitored = cfg.monitor.metric
    return metrics.get(f"best/{monitored}", metrics.get(monitored))


def continue_latest_run(argv: list[str]) -> list[str]:
    """`ckpt_path=latest`: the command line that continues, in its own directory, the newest run of
    the same task whose overrides are these (ckpt_path aside); says which run it picked."""
    if "ckpt_path=latest" not in argv[1:]:
        return argv
    overrides = [arg for arg in argv[1:] if not arg.startswith("ckpt_path=")]
    if {"-m", "--multirun"} & set(overrides):
        raise ConfigError("ckpt_path=latest continues one run; it cannot be used in a multirun (-m).")
    from hydra.errors import HydraException

    try:
        run_dir = latest_matching_run([arg for arg in overrides if not arg.startswith("-")])
    except HydraException:  # overrides that do not compose: Hydra's own run says why
        return argv
    print(f"ckpt_path=latest: continuing {run_dir} from checkpoints/last.ckpt "
          "(the newest run of this task with the same overrides)", file=sys.stderr)
    return [argv[0], *overrides, f"hydra.run.dir='{run_dir}'", "ckpt_path=last"]


def latest_matching_run(overrides: list[str]) -> Path:
    """The newest `<log_dir>/<task>/runs/<run>` whose `.hydra/overrides.yaml` holds `overrides`
    (in any order, ckpt_path aside) and which has `checkpoints/last.ckpt`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides if not o.startswith("hydra.")])
    runs_dir = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    wanted = sorted(overrides)

    def overrides_of(overrides_file: Path) -> list[str]:
        return sorted(str(o) for o in OmegaConf.load(overrides_file) if not str(o).startswith("ckpt_path="))

    matching = [file for file in sorted(runs_dir.glob("*/.hydra/overrides.yaml"), reverse=True)
                if overrides_of(file) == wanted]
    for overrides_file in matching:
        if (overrides_file.parent.parent / "checkpoints" / "last.ckpt").is_file():
            return overrides_file.parent.parent
    shown = " ".join(overrides) or "(none)"
    found = (f"{len(matching)} run(s) with these overrides, none with checkpoints/last.ckpt"
             if matching else "no run with exactly these overrides")
    raise ConfigError(
        f"ckpt_path=latest: {found} in {runs_dir} (overrides: {shown}). Give the same overrides as the "
        "run to continue, or name it: hydra.run.dir=<its directory> ckpt_path=last."
    )


def resolved_config_path(cfg: DictConfig) -> Path:
    """`config_resolved.yaml` of the run; a resumed run writes its own beside its Hydra files."""
    from hydra.core.hydra_config import HydraConfig

    output_dir = Path(cfg.paths.output_dir)
    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    if subdir and Path(subdir).name.startswith("resume-"):
        return output_dir / subdir / "config_resolved.yaml"
    return output_dir / "config_resolved.yaml"


def keep_original_run_files(argv: list[str]) -> list[str]:
    """Resuming in an existing run directory: Hydra's files go to .hydra/resume-N, not over the originals.

    Hydra saves `.hydra/{config,hydra,overrides}.yaml` before the job starts, so the choice must be
    made on the command line: `hydra.output_subdir=.hydra/resume-N` for the N-th resume.
    """
    options = dict(arg.partition("=")[::2] for arg in argv[1:] if "=" in arg)
    run_dir, ckpt_path = options.get("hydra.run.dir", "").strip("'\""), options.get("ckpt_path")
    if not run_dir or ckpt_path in (None, "", "null") or "hydra.output_subdir" in options:
        return argv
    hydra_dir = Path(run_dir) / ".hydra"
    if not (hydra_dir / "overrides.yaml").is_file():
        return argv
    number = 1 + sum(1 for p in hydra_dir.glob("resume-*") if p.is_dir())
    return [*argv, f"hydra.output_subdir=.hydra/resume-{number}"]


if __name__ == "__main__":
    sys.argv = quote_numeric_choices(sys.argv)
    try:
        sys.argv = continue_latest_run(sys.argv)
    except VisionlabError as error:
        print_error(error)
        raise SystemExit(2) from None
    sys.argv = keep_original_run_files(sys.argv)
    main()

"""What a run prints: its config in brief (or in full), the project's errors as one block, the closing
summary; and the console noise that asks nothing of the user, silenced at its source."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, VisionlabError


def console_width() -> int:
    """The terminal's width, or 80 columns when the output is not a terminal."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config as a rich tree, one branch per top-level key, wrapped to fit."""
    import rich.console
    import rich.syntax
    import rich.tree
    from rich.text import Text

    tree = rich.tree.Tree("config", style="bold")
    for key, value in cfg.items():
        branch = tree.add(Text(str(key)), style="bold cyan")
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rich.console.Console(width=console_width()).print(tree)


def print_config_choices(output_dir: Path) -> None:
    """Print the chosen config groups and the command-line overrides: the run's config in brief."""
    import rich.console
    import rich.table
    from hydra.core.hydra_config import HydraConfig
    from rich.text import Text

    from app.overrides import command_line_overrides

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
    grid.add_row("groups", Text("  ".join(choices)))  # Text: printed as given, never read as rich markup
    grid.add_row("overrides", Text("  ".join(command_line_overrides()) or "none"))
    console = rich.console.Console(width=console_width())
    console.print(grid)
    config = display_path(output_dir / "config_resolved.yaml")  # soft-wrapped, never cut: a path to copy
    line = Text.assemble(("config".ljust(10), "bold cyan"), f"{config} (print_config=full prints it here)")
    console.print(line, soft_wrap=True)


def print_config(cfg: DictConfig) -> None:
    """The run's config as `print_config` asks: `short` (groups, overrides), `full` (the tree) or `none`."""
    printers = {"short": lambda: print_config_choices(Path(cfg.paths.output_dir)),
                "full": lambda: print_config_tree(cfg), "none": lambda: None}
    if cfg.print_config not in printers:
        raise ConfigError(f"print_config={cfg.print_config}: choose one of {', '.join(printers)}.")
    printers[cfg.print_config]()


def print_error(error: VisionlabError, title: str | None = None) -> None:
    """The project's own errors as one short block on stderr: what is wrong and the fix (`title`: the
    error's class name unless given)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    hint = "" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "HYDRA_FULL_ERROR=1 shows the traceback"
    # Text: messages quote paths and values ("[/data/a.jpg]", "[bold]") that rich must not read as markup
    Console(stderr=True).print(Panel(Text(str(error)), title=Text(title or type(error).__name__),
                                     title_align="left", subtitle=hint, subtitle_align="right",
                                     border_style="red", expand=False))


def not_a_tip(record: logging.LogRecord) -> bool:
    """Drop Lightning's advertisements for its cloud products ("💡 Tip: ...")."""
    return not record.getMessage().startswith("💡 Tip")


def quiet_known_noise() -> None:
    """Silence the console messages that ask nothing of the user; each is explained here, once."""
    import warnings

    # Lightning 2.6 itself calls torch's deprecated `isinstance(treespec, LeafSpec)`: no user can act on it.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Lightning suggests `srun python ...` wherever srun is installed (login nodes, workstations with
    # SLURM's client); the hint helps only inside an allocation (salloc, an sbatch script), which could
    # have started the ranks with srun.
    if not os.environ.get("SLURM_JOB_ID"):
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not_a_tip not in lightning_log.filters:
        lightning_log.addFilter(not_a_tip)


def display_path(path: str | Path) -> str:
    """`path` relative to the working directory when it is inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def stopped_summary(output_dir: Path, stopped_by: str) -> str:
    """Where a run stopped by a signal left its files: directory, the stop point, checkpoints, TensorBoard."""
    lines = [f"Run stopped by {stopped_by}. Directory: {display_path(output_dir)}"]
    checkpoints = output_dir / "checkpoints"
    if (checkpoints / "stopped.ckpt").is_file():
        stop_point = display_path(checkpoints / "stopped.ckpt")
        lines.append(f"  stop point: {stop_point} (the resume command is above)")
    if checkpoints.is_dir():
        lines.append(f"  checkpoints: {display_path(checkpoints)}/")
    lines.append(f"  why it stopped: {display_path(output_dir / 'error.txt')}")
    if (output_dir / "tensorboard").is_dir():
        lines.append(f"  tensorboard --logdir {display_path(output_dir / 'tensorboard')}")
    return "\n".join(lines)


def run_summary(cfg: DictConfig, trainer: Any, metrics: dict[str, float]) -> str:
    """Where a finished run's results are: directory, metrics, checkpoints, images, TensorBoard."""
    from pytorch_lightning.loggers import TensorBoardLogger

    output_dir = Path(cfg.paths.output_dir)
    lines = [f"Run finished. Directory: {display_path(output_dir)}"]
    monitored = f"best/{cfg.monitor.metric}"
    if monitored in metrics:
        lines.append(f"  {monitored}: {metrics[monitored]:.4g} ({cfg.monitor.mode}imised)")
    tested = [f"{key} {value:.4g}" for key, value in sorted(metrics.items()) if key.startswith("test/")]
    if tested:
        lines.append("  " + ", ".join(tested))
    from app.costs import cost_lines, readable

    unpruned = [f"{key.removeprefix('unpruned/')} {value:.4g}" for key, value in sorted(metrics.items())
                if key.startswith("unpruned/test/")]
    if unpruned:
        lines.append(f"  before pruning {metrics['prune/ratio']:.0%} of the channels: " + ", ".join(unpruned)
                     + f", {readable(metrics['unpruned/cost/parameters'])} parameters")

    costs = cost_lines(metrics)
    if costs:
        lines.append("  cost: " + ", ".join(costs))
    lines.append(f"  all final metrics: {display_path(output_dir / 'metrics.json')}")
    checkpoint = trainer.checkpoint_callback
    if not cfg.train:  # the callback's state is the training run's, restored from the checkpoint
        from app.checks import checkpoint_to_read

        lines.append(f"  evaluated checkpoint: {display_path(checkpoint_to_read(cfg) or cfg.ckpt_path)}")
    elif checkpoint is not None and checkpoint.best_model_path:
        lines.append(f"  best checkpoint: {display_path(checkpoint.best_model_path)}")
    if (output_dir / "checkpoints").is_dir():
        lines.append(f"  checkpoints: {display_path(output_dir / 'checkpoints')}/")
    written = getattr(trainer.lightning_module, "written_folders", dict)()  # e.g. style's stylized images
    for what, folder in written.items():
        if Path(folder).is_dir():
            lines.append(f"  {what}: {display_path(folder)}/")
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            lines.append(f"  tensorboard --logdir {display_path(logger.log_dir)}")
    return "\n".join(lines)

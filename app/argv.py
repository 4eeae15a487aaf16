"""The command line rewritten before Hydra reads it: renamed keys given their new names, numeric group
options and non-ASCII values quoted, a trained model's own task and stored keys for predict and export,
`ckpt_path=latest` resolved to a run directory, a resumed run's Hydra files kept apart from the original's."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from app.renamed_keys import renamed_override
from core.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def rewritten(argv: list[str]) -> list[str]:
    """`sys.argv` as Hydra should see it."""
    renamed = [argv[0], *map(renamed_override, argv[1:])]
    quoted = quote_non_ascii_values(quote_numeric_choices(renamed))
    return keep_original_run_files(continue_latest_run(trained_model_keys(quoted)))


def quote_numeric_choices(argv: list[str], groups: tuple[str, ...] = ("precision",)) -> list[str]:
    """Quote numeric options of config groups: Hydra reads `precision=32` as an int, not a choice."""
    pattern = re.compile(rf"^((?:{'|'.join(groups)})=)(.+)$")

    def quote(match: re.Match[str]) -> str:
        values = [f"'{v}'" if v.isdigit() else v for v in match.group(2).split(",")]
        return match.group(1) + ",".join(values)

    return [pattern.sub(quote, arg) for arg in argv]


def quote_non_ascii_values(argv: list[str]) -> list[str]:
    """Quote a plain value with non-ASCII characters (`predict.input=写真/`): Hydra's grammar refuses them
    unquoted. Values holding quotes, brackets or commas (lists, sweeps) are left as written."""
    def quoted(arg: str) -> str:
        key, equals, value = arg.partition("=")
        if not equals or value.isascii() or set(value) & set("'\"[]{},"):
            return arg
        return f"{key}='{value}'"

    return [argv[0], *map(quoted, argv[1:])]


STORED_GROUPS = ("data", "model", "task")  # what a trained model's stored config decides


def trained_model_keys(argv: list[str]) -> list[str]:
    """Predict and export (`predict.input=`, `export.format=`) with `ckpt_path=` or `predict.model=`:
    the command line that composes the trained model's task (unless it names one), drops a `data=`
    option naming the checkpoint's own datamodule, and writes each `data.*`, `model.*` or `task.*` key
    of the stored config as `++key=value`, so that it overrides the stored value whether or not the
    composed config has the key (`data.root`, `data.resize_size`, `task.inference`, ...)."""
    options = {key: value for key, _, value in (arg.partition("=") for arg in argv[1:])}
    if not any(unquoted(options.get(key)) for key in ("predict.input", "export.format")):
        return argv
    stored = stored_config(unquoted(options.get("ckpt_path")), unquoted(options.get("predict.model")))
    if stored is None:
        return argv
    rewritten_argv = [argv[0]]
    for arg in argv[1:]:
        key, equals, value = arg.partition("=")
        if key == "data" and equals and same_datamodule(unquoted(value), stored):
            continue  # the checkpoint's data config is used: composing the group adds nothing
        if equals and key.split(".")[0] in STORED_GROUPS and "." in key and has_key(stored, key):
            arg = f"++{key}={value}"
        rewritten_argv.append(arg)
    task = stored.get("task_name")
    if "task" not in options and task and (CONF_DIR / "task" / f"{task}.yaml").is_file():
        rewritten_argv.append(f"task={task}")
    return rewritten_argv


def unquoted(value: str | None) -> str | None:
    """A command-line value without its quotes; None for a missing or null one."""
    value = None if value is None else value.strip("'\"")
    return None if value in (None, "", "null") else value


def stored_config(ckpt_path: str | None, model_path: str | None) -> dict | None:
    """The run config stored in checkpoint `ckpt_path`, or what an export's model.json holds of it
    (task name and options); None when there is none to read (the mode then says why)."""
    from core.errors import VisionlabError

    try:
        if model_path:
            from app.runtime import read_model_info

            info = read_model_info(model_path)
            return {"task_name": info.task, "task": info.task_options}
        path = Path(ckpt_path).expanduser() if ckpt_path else None
        if path is not None and ckpt_path not in ("last", "latest", "best", "hpc") and path.is_file():
            from core.contracts import CHECKPOINT_KEY
            from lightning_modules.checkpoint_io import read_checkpoint

            stored = read_checkpoint(path, mmap=True)
            return stored.get(CHECKPOINT_KEY) if isinstance(stored, dict) else None
    except VisionlabError:
        return None
    return None


def has_key(config: dict, dotted: str) -> bool:
    """Whether the nested dict `config` has the dotted key."""
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def same_datamodule(option: str | None, stored: dict) -> bool:
    """Whether `data=option` builds the datamodule class of the stored config; a ConfigError when it
    builds another (predict and export use the checkpoint's data config, never another dataset's)."""
    path = CONF_DIR / "data" / f"{option}.yaml"
    stored_target = (stored.get("data") or {}).get("_target_")
    if option is None or not path.is_file() or stored_target is None:
        return False
    if OmegaConf.load(path).get("_target_") == stored_target:
        return True
    raise ConfigError(
        f"data={option} builds {OmegaConf.load(path).get('_target_')}, but the checkpoint was trained on "
        f"{stored_target}. Predict and export read images as the checkpoint's data config says: drop "
        f"data={option} (give data.* keys, e.g. data.root=..., to change its values)."
    )


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

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
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
    given = " ".join(overrides) or "(none)"
    found = (f"{len(matching)} run(s) with these overrides, none with checkpoints/last.ckpt"
             if matching else "no run with exactly these overrides")
    raise ConfigError(
        f"ckpt_path=latest: {found} in {runs_dir} (overrides: {given}). Give the same overrides as the "
        "run to continue, or name it: hydra.run.dir=<its directory> ckpt_path=last."
    )


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

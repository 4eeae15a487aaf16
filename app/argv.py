"""The command line rewritten before Hydra reads it: renamed keys given their new names, numeric group
options quoted, `ckpt_path=latest` resolved to a run directory, a resumed run's Hydra files kept apart
from the original's."""

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
    return keep_original_run_files(continue_latest_run(quote_numeric_choices(renamed)))


def quote_numeric_choices(argv: list[str], groups: tuple[str, ...] = ("precision",)) -> list[str]:
    """Quote numeric options of config groups: Hydra reads `precision=32` as an int, not a choice."""
    pattern = re.compile(rf"^((?:{'|'.join(groups)})=)(.+)$")

    def quote(match: re.Match[str]) -> str:
        values = [f"'{v}'" if v.isdigit() else v for v in match.group(2).split(",")]
        return match.group(1) + ",".join(values)

    return [pattern.sub(quote, arg) for arg in argv]


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

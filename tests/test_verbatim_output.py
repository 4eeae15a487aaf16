"""What a run prints shows user and library strings as they are: rich never reads them as markup.

Overrides holding lists of absolute paths (`data.style=[/abs/a.jpg]`), error messages quoting them
(gloo's `[/__w/pytorch/...]`), class folders named `[bold]`: each printed verbatim, and a sweep's exit
code says whether a job failed even when its summary cannot be printed.
"""

from __future__ import annotations

import random

import pytest
from omegaconf import OmegaConf
from PIL import Image

from app import console, multirun_summary
from core.errors import ConfigError
from tests.run_py import run_py

# Pieces that rich's markup parser reads as tags, closing tags, links or emoji codes.
PIECES = ["[", "]", "[/", "[/abs/a.jpg,/abs/b.jpg]", "[bold]", "[/bold]", "[/__w/pytorch/pair.cc:561]",
          "[red on blue]", "[link=file:///x]", "[@click]", ":smile:", "]]", "[[", "/", "a", "0.5", " ", "é"]


def markup_like_strings(count: int, seed: int, pieces: list[str] = PIECES) -> list[str]:
    """`count` strings of one to six pieces that look like rich markup, drawn with `seed`."""
    rng = random.Random(seed)
    drawn = ("".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))).strip() for _ in range(count))
    return [string or "[" for string in drawn]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """A console wide enough that nothing is wrapped (rich and shutil read COLUMNS)."""
    monkeypatch.setenv("COLUMNS", "2000")


@pytest.mark.parametrize("seed", range(4))
def test_config_print_shows_markup_like_overrides_verbatim(make_config, capsys, seed):
    values = [s for s in markup_like_strings(6, seed) if "'" not in s]
    overrides = [f"+note{i}='{value}'" for i, value in enumerate(values)]
    cfg = make_config(*overrides, "print_config=short")

    console.print_config(cfg)

    assert "  ".join(overrides) in capsys.readouterr().out


def test_full_config_print_shows_markup_like_values_verbatim(make_config, capsys):
    values = markup_like_strings(8, seed=10)
    cfg = make_config(*(f"+note{i}='{value}'" for i, value in enumerate(values)))

    console.print_config_tree(cfg)

    printed = capsys.readouterr().out
    assert all(value in printed for value in values), printed


@pytest.mark.parametrize("seed", range(4))
def test_summary_table_shows_markup_like_cells_verbatim(capsys, seed):
    strings = markup_like_strings(12, seed)
    rows = [{"job": str(i), "status": "failed", "data.style": strings[2 * i], "error": strings[2 * i + 1]}
            for i in range(6)]

    multirun_summary.print_summary("3 jobs [bold]ranked[/bold] in [/abs/sweep]", rows,
                                   ["job", "status", "data.style", "error"])

    printed = capsys.readouterr().out
    assert "3 jobs [bold]ranked[/bold] in [/abs/sweep]" in printed
    assert all(value in printed for value in strings), printed


@pytest.mark.parametrize("seed", range(4))
def test_error_panel_shows_markup_like_messages_verbatim(capsys, seed):
    for message in markup_like_strings(10, seed):
        console.print_error(ConfigError(message))
        assert message in capsys.readouterr().err


def test_a_sweep_whose_summary_cannot_be_printed_still_exits_1_when_a_job_failed(tmp_path, monkeypatch):
    for job, finished in (("0", True), ("1", False)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        if finished:
            (tmp_path / job / "metrics.json").write_text('{"best/val/acc": 0.5}')
        else:
            (tmp_path / job / "error.txt").write_text("RuntimeError: [/__w/pytorch/pair.cc:561] closed\n")

    def broken(*args, **kwargs):
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr(multirun_summary, "print_summary", broken)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},
                               "monitor": {"metric": "val/acc", "mode": "max"}})

    with pytest.raises(SystemExit, match=r"1 of 2 jobs failed: job\(s\) 1 "):
        multirun_summary.MultirunSummary().on_multirun_end(config)
    assert (tmp_path / "summary.csv").is_file()


def test_style_with_a_list_of_absolute_style_paths_gets_past_the_config_print(tmp_path):
    styles = []
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        Image.new("RGB", (48, 40), colour).save(tmp_path / f"{name}.jpg")
        styles.append(str(tmp_path / f"{name}.jpg"))
    style_list = f"data.style=[{','.join(styles)}]"

    done = run_py(tmp_path / "project", "task=style", style_list, "data.style_weights=[3,1]",
                  "model.weights=null", "data.image_size=48", "task.num_scales=1", check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "MarkupError" not in done.stderr
    assert style_list in done.stdout, "the override is printed as typed"
    stylized = list((tmp_path / "project" / "outputs" / "style").glob("runs/*/stylized/*.png"))
    assert stylized, "the run went on to style the content images"


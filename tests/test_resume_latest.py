"""ckpt_path=latest: continue the newest run of the task with the same overrides, in its own directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import argv as app_argv
from core.errors import ConfigError
from tests.run_py import run_dirs, run_py


def fake_run(project_root: Path, name: str, overrides: list[str], checkpoint: bool = True) -> Path:
    """A run directory as run.py leaves it, reduced to what ckpt_path=latest reads."""
    run_dir = project_root / "outputs" / "classify" / "runs" / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run_dir


def test_latest_picks_the_newest_run_with_the_same_overrides_and_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    fake_run(tmp_path, "2025-01-01_00-00-00", ["optimizer.lr=0.01", "debug=smoke"])
    wanted = fake_run(tmp_path, "2025-01-02_00-00-00", ["debug=smoke", "optimizer.lr=0.01", "ckpt_path=last"])
    fake_run(tmp_path, "2025-01-03_00-00-00", ["optimizer.lr=0.01", "debug=smoke"], checkpoint=False)
    fake_run(tmp_path, "2025-01-04_00-00-00", ["optimizer.lr=0.02", "debug=smoke"])

    assert app_argv.latest_matching_run(["optimizer.lr=0.01", "debug=smoke"]) == wanted
    argv = app_argv.continue_latest_run(["run.py", "optimizer.lr=0.01", "ckpt_path=latest", "debug=smoke"])
    assert argv[1:] == ["optimizer.lr=0.01", "debug=smoke", f"hydra.run.dir='{wanted}'", "ckpt_path=last"]
    with pytest.raises(ConfigError, match="no run with exactly these overrides"):
        app_argv.latest_matching_run(["optimizer.lr=0.03", "debug=smoke"])


@pytest.mark.slow
def test_latest_continues_the_run_in_its_directory(tmp_path):
    run_py(tmp_path, "optimizer.lr=0.01")
    (first,) = run_dirs(tmp_path)
    fake_run(tmp_path, "9999-newer-run-with-other-overrides", ["optimizer.lr=0.02", "debug=smoke"])

    done = run_py(tmp_path, "optimizer.lr=0.01", "ckpt_path=latest")

    assert len(run_dirs(tmp_path)) == 2, "no new run directory"
    assert f"ckpt_path=latest: continuing {first}" in done.stderr
    restored = f"Restoring states from the checkpoint path at {first}/checkpoints/last.ckpt"
    assert restored in done.stdout + done.stderr
    assert "ckpt_path" not in (first / ".hydra" / "overrides.yaml").read_text(), "the original command kept"
    assert "- ckpt_path=last" in (first / ".hydra" / "resume-1" / "overrides.yaml").read_text()


def test_latest_without_a_matching_run_stops_with_a_config_error(tmp_path):
    done = run_py(tmp_path, "optimizer.lr=0.5", "ckpt_path=latest", check=False)

    assert done.returncode == 2
    assert "ConfigError" in done.stderr and "no run with exactly these overrides" in done.stderr

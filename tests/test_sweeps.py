"""Multiruns: each job in its own directory, a ranked summary, TensorBoard's hparams view, Optuna."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from callbacks.multirun_summary import rank_rows, read_job, varying_keys
from tests.conftest import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["classify", "segment", "style"]


def multirun(sweep_dir: Path, *overrides: str) -> None:
    """`python run.py -m ...` with the debug=smoke preset, writing into `sweep_dir`."""
    command = [sys.executable, "run.py", "-m", "debug=smoke", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """The rows of a sweep's summary.csv."""
    with (sweep_dir / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_rank_rows_puts_the_best_first_for_either_mode_and_unfinished_jobs_last():
    rows = [{"job": "0", "m": 0.5}, {"job": "1"}, {"job": "2", "m": 0.9}, {"job": "3", "m": float("nan")}]
    assert [r["job"] for r in rank_rows(rows, "m", "max")] == ["2", "0", "1", "3"]
    assert [r["job"] for r in rank_rows(rows, "m", "min")] == ["0", "2", "1", "3"]


def test_varying_keys_are_the_swept_overrides():
    jobs = [{"optimizer": "adam", "seed": "1", "lr": "0.1"}, {"optimizer": "sgd", "seed": "1"}]
    assert varying_keys(jobs) == ["optimizer", "lr"]


def test_read_job_returns_overrides_and_metrics_or_nothing_for_a_failed_job(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- optimizer=sgd\n- ~callbacks.lr_monitor\n")
    assert read_job(tmp_path) == ({"optimizer": "sgd", "callbacks.lr_monitor": ""}, {})
    (tmp_path / "metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    assert read_job(tmp_path)[1] == {"test/acc": 0.5}


@pytest.mark.slow
def test_sweep_writes_each_job_apart_and_a_ranked_summary_with_hparams_for_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    multirun(tmp_path, "optimizer=adam,sgd")

    rows = summary_rows(tmp_path)
    assert sorted(row["optimizer"] for row in rows) == ["adam", "sgd"]
    scores = [float(row["best/val/acc"]) for row in rows]
    assert scores == sorted(scores, reverse=True), "best job first"
    for row in rows:
        job_dir = tmp_path / row["job"]
        assert float(row["test/acc"]) == json.loads((job_dir / "metrics.json").read_text())["test/acc"]
        events = EventAccumulator(str(job_dir / "tensorboard"))
        events.Reload()
        assert "hp/test/acc" in events.Tags()["scalars"]
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


@pytest.mark.parametrize("task", TASKS)
def test_optuna_search_space_names_keys_of_its_task_config(task):
    if not (CONF_DIR / "task" / f"{task}.yaml").exists():
        pytest.skip(f"task={task} is not in this checkout")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"hparams_search={task}_optuna"],
                      return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == f"{cfg.monitor.mode}imize"
    missing = [key for key in sweeper.params if OmegaConf.select(cfg, key, default=KeyError) is KeyError]
    assert not missing, f"the search space names keys that task={task} does not have: {missing}"


@pytest.mark.slow
def test_optuna_search_maximises_the_metric_run_py_returns(tmp_path):
    multirun(tmp_path, "hparams_search=classify_optuna", "hydra.sweeper.n_trials=2")

    result = OmegaConf.load(tmp_path / "optimization_results.yaml")
    scores = [float(row["best/val/acc"]) for row in summary_rows(tmp_path)]
    assert len(scores) == 2
    assert result.best_value == pytest.approx(max(scores))

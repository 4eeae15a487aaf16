"""Multiruns: each job in its own directory, a ranked summary, TensorBoard's hparams view, Optuna."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from app.multirun_summary import fold_groups, job_status, rank_rows, read_job, varying_keys
from tests.conftest import CONF_DIR
from tests.run_py import python, run_py, sweep_dirs

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["classify", "segment", "style"]


def multirun(project_root: Path, *overrides: str, check: bool = True, **options) -> Path:
    """`python run.py -m ... debug=smoke` with outputs under `project_root`; the sweep's directory."""
    run_py(project_root, "-m", *overrides, check=check, **options)
    return sweep_dirs(project_root)[-1]


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

    sweep_dir = multirun(tmp_path, "optimizer=adam,sgd")

    rows = summary_rows(sweep_dir)
    assert sorted(row["optimizer"] for row in rows) == ["adam", "sgd"]
    scores = [float(row["best/val/acc"]) for row in rows]
    assert scores == sorted(scores, reverse=True), "best job first"
    for row in rows:
        job_dir = sweep_dir / row["job"]
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
    sweep_dir = multirun(tmp_path, "hparams_search=classify_optuna", "hydra.sweeper.n_trials=2")

    result = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    scores = [float(row["best/val/acc"]) for row in summary_rows(sweep_dir)]
    assert len(scores) == 2
    assert result.best_value == pytest.approx(max(scores))


def test_a_sweep_with_failed_jobs_runs_them_all_writes_its_summary_and_exits_non_zero(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_py(tmp_path / "project", "-m", "train=true,false", "data.val_fraction=0.1,2.0",
                  cwd=elsewhere, check=False, env={"COLUMNS": "300"})  # each error on one line of the table

    assert done.returncode == 1, done.stderr[-3000:]
    assert "3 of 4 jobs failed" in done.stderr
    (sweep_dir,) = sweep_dirs(tmp_path / "project")
    assert not list(elsewhere.iterdir()), "nothing is written in the working directory"
    rows = {(row["train"], row["data.val_fraction"]): row for row in summary_rows(sweep_dir)}
    assert rows["True", "0.1"]["status"] == "done" and float(rows["True", "0.1"]["test/acc"]) >= 0
    assert rows["True", "2.0"]["status"] == "failed"
    assert rows["True", "2.0"]["error"].startswith("DataError: data.val_fraction=2.0 holds out")
    for key in (("False", "0.1"), ("False", "2.0")):
        assert rows[key]["status"] == "failed"
        assert rows[key]["error"] == ("ConfigError: train=false evaluates a checkpoint: "
                                      "give it with ckpt_path=PATH.")
    assert "failed" in done.stdout and "ckpt_path=PATH" in done.stdout


def test_job_status_reads_error_txt_for_failed_and_pruned_jobs(tmp_path):
    assert job_status(tmp_path, {"test/acc": 0.5}) == ("done", "")
    assert job_status(tmp_path, {})[0] == "failed"
    (tmp_path / "error.txt").write_text("DataError: no dataset under /data\nSet data.root.\n")
    assert job_status(tmp_path, {}) == ("failed", "Set data.root.")
    (tmp_path / "error.txt").write_text("TrialPruned: Trial was pruned at epoch 1.\n")
    assert job_status(tmp_path, {}) == ("pruned", "TrialPruned: Trial was pruned at epoch 1.")


def test_fold_groups_give_mean_and_sample_standard_deviation_per_setting():
    rows = [{"lr": "0.1", "data.fold": str(i), "status": "done", "m": value}
            for i, value in enumerate([0.5, 0.7, 0.9])]
    rows.append({"lr": "0.1", "data.fold": "3", "status": "failed"})
    rows.append({"lr": "0.2", "data.fold": "0", "status": "done", "m": 0.4})
    (first, second) = fold_groups(rows, ["lr"], ["m"])
    assert first == {"lr": "0.1", "folds": "3/4", "m": pytest.approx(0.7), "m_std": pytest.approx(0.2)}
    assert second == {"lr": "0.2", "folds": "1/1", "m": 0.4, "m_std": 0.0}


TOY_SPACE = ("hydra.sweeper.params={optimizer.lr:'choice(0.003,1e-9)',optimizer.weight_decay:0.0,"
             "data.batch_size:64,task.label_smoothing:0.0}")


@pytest.mark.slow
def test_optuna_study_in_sqlite_resumes_prunes_hopeless_trials_and_reads_back_through_optunas_api(tmp_path):
    import optuna

    from core.contracts import SweepJob

    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = ["hparams_search=classify_optuna", TOY_SPACE, f"hydra.sweeper.storage={storage}",
               "hydra.sweeper.n_trials=2", "hparams_search.pruning=true",
               "hparams_search.pruner.n_startup_trials=1", "hparams_search.pruner.n_warmup_steps=0"]
    run_py(tmp_path, *command)
    run_py(tmp_path, *command)  # the same command again: the same study goes on

    study = optuna.load_study(study_name="classify", storage=storage)
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3]
    pruned = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "a trial with a learning rate of 1e-9 trails the others and is pruned"
    for trial in pruned:
        assert trial.params["optimizer.lr"] == 1e-9 and trial.user_attrs["pruned_at_epoch"] == 0
        assert trial.value == trial.intermediate_values[0], "told PRUNED with the value it reported"
    rows = {(str(sweep_dir), row["job"]): row for sweep_dir in sweep_dirs(tmp_path)
            for row in summary_rows(sweep_dir)}
    for trial in study.trials:  # each trial is the job it records, with that job's status and metric
        job = SweepJob.of_trial(trial.user_attrs)
        row = rows[job.sweep_dir, str(job.job_num)]
        if trial in pruned:
            assert row["status"] == "pruned"
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE and row["status"] == "done"
            assert trial.value == pytest.approx(float(row["best/val/acc"]))


def test_pruning_without_a_study_database_is_a_config_error():
    from callbacks.optuna_pruning import OptunaPruning
    from core.errors import ConfigError

    callback = OptunaPruning(enabled=True, monitor="val/acc", storage=None, study_name="classify",
                             pruner=None)
    with pytest.raises(ConfigError, match="hydra.sweeper.storage=sqlite:///optuna.db"):
        callback.setup(None, None, "fit")


def test_a_multirun_from_another_directory_without_project_root_writes_beside_run_py(tmp_path):
    import os
    import shutil

    copy = tmp_path / "copy"
    def unneeded(folder: str, names: list[str]) -> list[str]:  # outputs, data and caches of the checkout
        top = Path(folder) == ROOT
        return [name for name in names
                if name == "__pycache__" or top and (name.startswith(".") or name in ("outputs", "data"))]

    shutil.copytree(ROOT, copy, ignore=unneeded)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PROJECT_ROOT"}
    done = python(str(copy / "run.py"), "-m", "optimizer=sgd", "debug=smoke", cwd=elsewhere, env=environment)

    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(copy)
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["done"]
    assert not list(elsewhere.iterdir())


def test_an_optuna_search_whose_every_trial_failed_says_so_and_where_their_errors_are(tmp_path):
    done = run_py(tmp_path, "hparams_search=classify_optuna", "hydra.sweeper.n_trials=2", "train=false",
                  check=False)

    assert done.returncode == 1
    (sweep_dir,) = sweep_dirs(tmp_path)
    output = done.stdout + done.stderr
    assert "All 2 trial(s) of this search failed. Each trial's error is in its job folder, " in output
    assert f"{sweep_dir}/<job>/error.txt" in output
    assert "Traceback" not in output and "No trials are completed yet" not in output
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["failed", "failed"]
    assert all(row["error"].startswith("ConfigError: train=false") for row in summary_rows(sweep_dir))
    assert not (sweep_dir / "optimization_results.yaml").exists()


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_the_pruning_callback_of_each_optuna_search_config_instantiates(task):
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from callbacks.optuna_pruning import OptunaPruning

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"hparams_search={task}_optuna",
                                           "hparams_search.pruning=true", "hydra.sweeper.storage=sqlite:///x.db"],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    callback = instantiate(cfg.callbacks.optuna_pruning)
    assert isinstance(callback, OptunaPruning) and callback.enabled and callback.storage == "sqlite:///x.db"
    assert callback.study_name == task and callback.monitor == cfg.monitor.metric

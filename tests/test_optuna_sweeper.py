"""Our Hydra sweeper on Optuna's ask-and-tell interface: the search space read from Hydra's sweep grammar,
the overrides it writes, and what it tells the study for each way a job can end."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from core.contracts import PRUNED_AT_EPOCH, SweepJob
from core.errors import ConfigError
from hydra_plugins.visionlab_optuna_sweeper._search_space import SearchSpace, objective_values
from hydra_plugins.visionlab_optuna_sweeper.optuna_sweeper import OptunaSweeper


@pytest.mark.parametrize(("sweep", "distribution"), [
    ("choice(32, 64, 128)", CategoricalDistribution([32, 64, 128])),
    ("choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("interval(0.0, 0.2)", FloatDistribution(0.0, 0.2)),
    ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 0.1, log=True)),
    ("interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra's interval is of floats ...
    ("int(interval(1, 10))", IntDistribution(1, 10)),  # ... unless cast
    ("tag(log, int(interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
    ("range(2, 11, 3)", IntDistribution(2, 8, step=3)),  # 2, 5, 8: Hydra's range stops before 11
    ("range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
])
def test_each_sweep_of_hydras_grammar_is_the_optuna_distribution_it_means(sweep, distribution):
    assert SearchSpace([f"key={sweep}"]).distributions == {"key": distribution}


def test_a_shuffled_range_is_unordered_and_choices_of_lists_are_written_back_verbatim():
    space = SearchSpace(["a=shuffle(range(3))", "b=choice([1,2],[3])"])

    assert isinstance(space.distributions["a"], CategoricalDistribution)
    assert sorted(space.distributions["a"].choices) == [0, 1, 2]
    assert space.distributions["b"].choices == ("[1,2]", "[3]")
    assert space.overrides({"a": 2, "b": "[1,2]"}) == ["a=2", "b=[1,2]"]


def test_other_overrides_are_kept_as_typed_and_the_last_word_on_a_key_wins():
    space = SearchSpace(["optimizer.lr=tag(log, interval(1e-4, 1e-1))", "data.batch_size=choice(32, 64)",
                         "++trainer.devices=2", "~callbacks.lr_monitor", "optimizer.lr=0.01", "debug=smoke"])

    assert list(space.distributions) == ["data.batch_size"]
    fixed = ["++trainer.devices=2", "~callbacks.lr_monitor", "optimizer.lr=0.01", "debug=smoke"]
    assert space.overrides({"data.batch_size": 64}) == ["data.batch_size=64", *fixed]


@pytest.mark.parametrize("bad", ["key=tag(log, interval(0, 1))", "key=interval(2.0, 1.0)", "key=choice("])
def test_a_search_space_optuna_or_hydra_cannot_read_is_a_config_error_naming_it(bad):
    with pytest.raises(ConfigError, match="(?i)search space"):
        SearchSpace([bad])


def test_sampled_values_written_as_overrides_parse_back_to_the_same_values():
    rng = random.Random(0)
    values = [rng.uniform(-1e3, 1e3) for _ in range(50)] + [10 ** rng.uniform(-12, 12) for _ in range(50)]
    values += [rng.randint(-10**9, 10**9) for _ in range(50)] + [True, False, None, "adam", "a b,c=d"]
    space = SearchSpace([])
    for value in values:
        (text,) = space.overrides({"key": value})
        (parsed,) = OverridesParser.create().parse_overrides([text])
        assert parsed.value() == value and type(parsed.value()) is type(value), text


def test_what_a_job_returns_is_one_finite_float_per_objective_or_nothing():
    assert objective_values(0.5, 1) == [0.5] and objective_values((1, 2.5), 2) == [1.0, 2.5]
    for unusable in (None, "0.5x", float("nan"), math.inf, (0.5,)):
        assert objective_values(unusable, 2 if unusable == (0.5,) else 1) is None


class FakeLauncher:
    """Runs each job's overrides through `job(number, overrides)` and records what it launched."""

    def __init__(self, job) -> None:
        self.job = job
        self.launched: list[tuple[int, list[list[str]]]] = []

    def launch(self, job_overrides, initial_job_idx):
        self.launched.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for offset, overrides in enumerate(job_overrides):
            job = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            try:
                given = dict(override.split("=", 1) for override in overrides)
                job.return_value = self.job(initial_job_idx + offset, given)
            except Exception as error:  # noqa: BLE001 - as Hydra's run_job records a job's exception
                job.return_value, job.status = error, JobStatus.FAILED
            returns.append(job)
        return returns


def sweeper(tmp_path, job, n_trials: int, n_jobs: int) -> tuple[OptunaSweeper, FakeLauncher, str]:
    """An OptunaSweeper over x in [0, 1] with a SQLite study, launching through a FakeLauncher."""
    storage = f"sqlite:///{tmp_path}/study.db"
    sampler = optuna.samplers.RandomSampler(seed=0)
    sweeper = OptunaSweeper(sampler, "maximize", storage, "toy", n_trials, n_jobs,
                            OmegaConf.create({"x": "interval(0.0, 1.0)"}))
    sweeper.launcher, sweeper.sweep_dir = FakeLauncher(job), str(tmp_path)
    return sweeper, sweeper.launcher, storage


def test_the_sweeper_tells_completed_failed_and_pruned_trials_and_keeps_the_best(tmp_path):
    def job(number: int, overrides: dict[str, str]) -> float | None:
        x = float(overrides["x"])
        if number == 1:
            raise RuntimeError("a job that raised")
        if number == 2:
            return None  # the error boundary reported a failure
        if number == 3:  # what the pruning callback does in the job
            study = optuna.load_study(study_name="toy", storage=storage)
            running = next(t for t in study.get_trials(states=(TrialState.RUNNING,))
                           if SweepJob.of_trial(t.user_attrs) == SweepJob(str(tmp_path), number))
            trial = optuna.trial.Trial(study, running._trial_id)
            trial.report(x / 2, step=0)
            trial.set_user_attr(PRUNED_AT_EPOCH, 0)
            return None
        return x

    search, launcher, storage = sweeper(tmp_path, job, n_trials=5, n_jobs=2)
    search.sweep(["debug=smoke"])

    assert [(first, len(batch)) for first, batch in launcher.launched] == [(0, 2), (2, 2), (4, 1)]
    assert all(overrides[-1] == "debug=smoke" for _, batch in launcher.launched for overrides in batch)
    study = optuna.load_study(study_name="toy", storage=storage)
    states = [trial.state for trial in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.PRUNED,
                      TrialState.COMPLETE]
    assert [SweepJob.of_trial(t.user_attrs).job_num for t in study.trials] == [0, 1, 2, 3, 4]
    assert study.trials[3].value == study.trials[3].params["x"] / 2
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert results.best_value == best.value and results.best_params == {"x": best.params["x"]}


def test_a_second_sweep_of_a_stored_study_goes_on_from_its_trials(tmp_path):
    search, _, storage = sweeper(tmp_path, lambda number, overrides: float(overrides["x"]), 3, 1)
    search.sweep([])
    again, launcher, _ = sweeper(tmp_path, lambda number, overrides: float(overrides["x"]), 2, 1)
    again.sweep([])

    study = optuna.load_study(study_name="toy", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert [first for first, _ in launcher.launched] == [0, 1], "job folders are numbered per sweep"


def test_a_search_whose_every_trial_failed_says_so_and_writes_no_best(tmp_path, caplog):
    search, _, _ = sweeper(tmp_path, lambda number, overrides: None, 3, 1)
    search.sweep([])

    assert "All 3 trial(s) of this search failed. Each trial's error is in its job folder" in caplog.text
    assert f"{tmp_path}/<job>/error.txt" in caplog.text
    assert not (tmp_path / "optimization_results.yaml").exists()

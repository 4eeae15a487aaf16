"""Optuna's ask-and-tell loop as a Hydra sweeper: ask the study for `n_jobs` trials, launch one job per
trial with the trial's parameters as overrides, tell the study what each job returned.

A job that returns a value completes its trial; one that returns nothing failed, unless its pruning
callback pruned it (the user attribute `pruned_at_epoch`): the trial is then told PRUNED, with the last
value it reported. Each trial records its job (`core.contracts.SweepJob`), by which the job finds its
trial. The study is created or, with `storage`, loaded and continued (`load_if_exists`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from core.contracts import PRUNED_AT_EPOCH, SweepJob
from core.errors import ConfigError

if TYPE_CHECKING:  # optuna is imported when a sweep starts, not when Hydra scans its plugins
    import optuna
    from optuna.trial import Trial, TrialState

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Optuna's ask-and-tell interface as a Hydra sweeper (see the module docstring)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, direction: Any, storage: str | None,
                 study_name: str | None, n_trials: int, n_jobs: int, params: DictConfig | None) -> None:
        self.sampler = sampler
        self.directions = [str(d) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.params = dict(params or {})
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = str(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from ._search_space import SearchSpace

        try:
            space = SearchSpace([*(f"{key}={value}" for key, value in self.params.items()), *arguments])
            study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                        sampler=self.sampler, directions=self.directions, load_if_exists=True)
        except (ConfigError, ValueError) as error:
            self.refuse(error)
        log.info(f"Optuna study {study.study_name!r} ({', '.join(self.directions)}, "
                 f"{type(self.sampler).__name__}, storage {self.storage or 'in memory'}): "
                 f"{len(study.trials)} earlier trial(s), {self.n_trials} more; searching "
                 f"{', '.join(space.distributions) or 'nothing'}")
        told: list[TrialState] = []
        while len(told) < self.n_trials:
            size = min(self.n_jobs, self.n_trials - len(told))
            batch = [study.ask(space.distributions) for _ in range(size)]
            for offset, trial in enumerate(batch):
                for name, value in SweepJob(self.sweep_dir, self.job_idx + offset).user_attrs().items():
                    trial.set_user_attr(name, value)
            returns = self.launcher.launch([space.overrides(trial.params) for trial in batch],
                                           initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            told += [self.tell(study, trial, job) for trial, job in zip(batch, returns, strict=True)]
        self.report(study, told)

    def refuse(self, error: Exception) -> None:
        """A search that cannot start (a bad search space, direction or storage): one block, exit code 2."""
        from app.console import print_error

        print_error(error if isinstance(error, ConfigError) else ConfigError(
            f"The Optuna study cannot be created: {error} (hydra.sweeper.direction, storage, study_name)."))
        raise SystemExit(2) from None

    def tell(self, study: optuna.Study, trial: Trial, job: JobReturn) -> TrialState:
        """Tell the study how the trial's job ended; the state it was told."""
        from optuna.trial import TrialState

        from ._search_space import objective_values

        try:
            returned = job.return_value  # re-raises what the job raised, if it raised
        except Exception as error:  # noqa: BLE001 - a failed job fails its trial, the search goes on
            log.warning(f"Trial {trial.number} failed: {type(error).__name__}: {error}")
            returned = None
        values = objective_values(returned, len(self.directions))
        if values is not None:
            study.tell(trial, values)
            return TrialState.COMPLETE
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        state = TrialState.PRUNED if PRUNED_AT_EPOCH in stored.user_attrs else TrialState.FAIL
        if returned is not None:
            log.warning(f"Trial {trial.number} returned {returned!r}, not {len(self.directions)} finite "
                        "value(s): it failed.")
        study.tell(trial, state=state)
        return state

    def report(self, study: optuna.Study, told: list[TrialState]) -> None:
        """The best trial(s) of the study in `optimization_results.yaml`; or, when none of this sweep's trials
        completed, which failed and where their errors are (the sweep summary then exits non-zero)."""
        from optuna.trial import TrialState

        failed, pruned = told.count(TrialState.FAIL), told.count(TrialState.PRUNED)
        if failed and TrialState.COMPLETE not in told:
            what = (f"All {failed} trial(s) of this search failed" if failed == len(told) else
                    f"No trial of this search completed: {failed} failed, {pruned} were pruned")
            log.error(f"{what}. Each trial's error is in its job folder, {self.sweep_dir}/<job>/error.txt "
                      "(the whole traceback in its run.log); the table below lists them.")
        elif failed:
            log.warning(f"{failed} of {len(told)} trial(s) failed: see their error.txt in "
                        f"{self.sweep_dir}/<job>/.")
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return
        if len(self.directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "study_name": study.study_name, "best_trial": best.number,
                       "best_params": best.params, "best_value": best.value}
            log.info(f"Best trial {best.number}: value {best.value}, parameters {best.params}")
        else:
            results = {"name": "optuna", "study_name": study.study_name,
                       "solutions": [{"trial": t.number, "params": t.params, "values": t.values}
                                     for t in study.best_trials]}
            log.info(f"{len(study.best_trials)} Pareto-optimal trial(s)")
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")

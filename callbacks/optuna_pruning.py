"""Optuna pruning inside a sweep job: report the monitored metric to the job's trial after each validation,
and stop the job when the study's pruner finds the trial hopeless.

The Optuna sweeper (hydra_plugins/visionlab_optuna_sweeper) records on each trial which job runs it
(`core.contracts.SweepJob`: its sweep folder and job number); the job finds its trial by it in the
study's storage (`hydra.sweeper.storage`). Global rank 0 reports (every process holds the same synced
metric) and every rank follows its decision. A pruned job sets the trial's user attribute
`pruned_at_epoch` and raises `optuna.TrialPruned`: `error.txt` records it, the sweep summary marks the
job `pruned`, and the sweeper tells the study the trial was PRUNED.
"""

from __future__ import annotations

import math

import optuna
import pytorch_lightning as pl

from core.contracts import PRUNED_AT_EPOCH, SweepJob
from core.errors import ConfigError


def find_trial(study: optuna.Study, job: SweepJob) -> optuna.trial.Trial:
    """The running trial of `study` that the sweeper launched as `job`."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if SweepJob.of_trial(trial.user_attrs) == job:
            return optuna.trial.Trial(study, trial._trial_id)
    raise ConfigError(
        f"hparams_search.pruning=true: no running trial of study {study.study_name!r} was launched as job "
        f"{job.job_num} of {job.sweep_dir}. Pruning works inside an Optuna search "
        "(hparams_search=..._optuna), whose sweeper records each trial's job in the study's database "
        "(hydra.sweeper.storage)."
    )


def this_job() -> SweepJob:
    """This Hydra job as the sweeper recorded it on its trial; a ConfigError outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        raise ConfigError("hparams_search.pruning=true prunes the trials of an Optuna search (a multirun), "
                          "and this is a single run: use it with hparams_search=..._optuna.")
    return SweepJob(str(hydra.sweep.dir), int(hydra.job.num))


class OptunaPruning(pl.Callback):
    """With `enabled`, reports `monitor` after each validation to this job's trial and prunes it."""

    def __init__(self, enabled: bool, monitor: str, storage: str | None, study_name: str,
                 pruner: optuna.pruners.BasePruner) -> None:
        self.enabled = enabled
        self.monitor = monitor
        self.storage = storage
        self.study_name = study_name
        self.pruner = pruner
        self.trial: optuna.trial.Trial | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit" or self.trial is not None:
            return
        if not self.storage:
            raise ConfigError(
                "hparams_search.pruning=true needs the study in a database that the jobs can read: "
                "add hydra.sweeper.storage=sqlite:///optuna.db (any SQLAlchemy URL)."
            )
        if trainer.is_global_zero:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
            self.trial = find_trial(study, this_job())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        epoch, value = trainer.current_epoch, trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics))
            raise ConfigError(f"hparams_search.pruning=true reports monitor.metric={self.monitor}, which "
                              f"this run does not log: choose one of {logged}.")
        prune = False
        if self.trial is not None:
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune() or not math.isfinite(float(value))
        if trainer.strategy.broadcast(prune):
            if self.trial is not None:
                self.trial.set_user_attr(PRUNED_AT_EPOCH, epoch)
            raise optuna.TrialPruned(f"Trial pruned at epoch {epoch}: {self.monitor}={float(value):.4g} "
                                     "trails the other trials' at this epoch.")

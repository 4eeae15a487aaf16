"""Optuna pruning inside a sweep job: report the monitored metric to the job's trial, stop hopeless ones.

hydra-optuna-sweeper does not hand the trial to the job, so the job finds it in the study's
storage (the database of `hydra.sweeper.storage`): the running trial whose parameters are this
job's overrides, written as the sweeper writes them (`key=value`). Each validation reports the
monitored metric to it as an intermediate value; the pruner (compared with the other trials'
values in the same storage) decides. optuna's own `PyTorchLightningPruningCallback` does the
reporting and raises `optuna.TrialPruned`, which ends the job; `error.txt` records it and the
sweep summary marks the job `pruned`. The sweeper (which can only tell a job complete or failed)
records the trial as failed, with the user attribute `pruned_at_epoch` saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import pytorch_lightning as pl
from optuna.integration import PyTorchLightningPruningCallback

from core.errors import ConfigError


def find_trial(study: optuna.Study, overrides: Sequence[str]) -> optuna.trial.Trial:
    """The running trial of `study` whose parameters, written `name=value`, are all in `overrides`."""
    given = set(overrides)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if all(f"{name}={value}" in given for name, value in trial.params.items()):
            return optuna.trial.Trial(study, trial._trial_id)
    raise ConfigError(
        f"hparams_search.pruning=true: no running trial of study {study.study_name!r} has this job's "
        f"parameters ({' '.join(overrides)}). Pruning works inside an Optuna sweep "
        "(hparams_search=..._optuna) whose study the jobs can read (hydra.sweeper.storage)."
    )


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
        self.reporter: PyTorchLightningPruningCallback | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit" or self.reporter is not None:
            return
        if not self.storage:
            raise ConfigError(
                "hparams_search.pruning=true needs the study in a database that the jobs can read: "
                "add hydra.sweeper.storage=sqlite:///optuna.db (any SQLAlchemy URL)."
            )
        from hydra.core.hydra_config import HydraConfig

        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
        self.trial = find_trial(study, HydraConfig.get().overrides.task)
        self.reporter = PyTorchLightningPruningCallback(self.trial, monitor=self.monitor)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reporter is None or trainer.sanity_checking:  # every DDP rank reports the same synced value
            return
        try:
            self.reporter.on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self.trial.set_user_attr("pruned_at_epoch", trainer.current_epoch)
            raise

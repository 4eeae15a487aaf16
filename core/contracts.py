"""What crosses a boundary between layers or processes: the keys of checkpoints (training and the modes
that use a trained model), and how an Optuna trial and its sweep job find each other."""

from __future__ import annotations

from dataclasses import dataclass

CHECKPOINT_KEY = "visionlab_config"  # the resolved run config (a plain dict) inside every checkpoint
CLASSES_KEY = "visionlab_classes"  # the datamodule's class names, read from the data at training


@dataclass(frozen=True)
class SweepJob:
    """Which Hydra job of which sweep runs an Optuna trial. The sweeper records it on the trial (as user
    attributes, in the study's storage) before launching the job; the job's pruning callback finds its
    trial by it. Together they are unique, also across resumed studies (each sweep has its own folder)."""

    sweep_dir: str
    job_num: int

    def user_attrs(self) -> dict[str, str | int]:
        """The trial's user attributes that record this job."""
        return {"hydra_sweep_dir": self.sweep_dir, "hydra_job_num": self.job_num}

    @classmethod
    def of_trial(cls, user_attrs: dict[str, object]) -> SweepJob | None:
        """The job a trial's user attributes record, if any."""
        if "hydra_sweep_dir" not in user_attrs or "hydra_job_num" not in user_attrs:
            return None
        return cls(str(user_attrs["hydra_sweep_dir"]), int(user_attrs["hydra_job_num"]))


PRUNED_AT_EPOCH = "pruned_at_epoch"  # the user attribute a job sets on its trial when it prunes it

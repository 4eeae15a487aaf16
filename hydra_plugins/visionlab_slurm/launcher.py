"""submitit's SLURM launcher with visionlab's submission errors and resource resolvers.

Hydra imports every module under `hydra_plugins` before it composes a config, so the resolvers that
conf/hydra/launcher/submitit_slurm.yaml uses are registered here, in every process that runs Hydra
(the submitting one and each SLURM task). The logic lives in app/slurm.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from app.slurm import register_resolvers, sbatch_refusals_reported

register_resolvers()


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """Submits each job of a multirun with sbatch; a job that sbatch refuses stops the sweep with one
    clean message (sbatch's own words and the launcher keys to change) and exit code 2."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with sbatch_refusals_reported(self.params):
            return super().launch(job_overrides, initial_job_idx)

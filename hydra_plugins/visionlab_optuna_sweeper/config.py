"""The sweeper's config (`hydra/sweeper=optuna`) and its samplers (`hydra/sweeper/sampler=tpe|random|...`),
registered in Hydra's ConfigStore when Hydra imports the plugins.

No `from __future__ import annotations` here: Hydra's plugin scanner runs this module before it is in
sys.modules, where dataclasses look up string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    """optuna.samplers.TPESampler: Bayesian optimisation with tree-structured Parzen estimators."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10  # random trials before TPE takes over
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    group: bool = False
    constant_liar: bool = True  # parallel trials (n_jobs > 1) do not all sample the same region


@dataclass
class RandomSamplerConf:
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    """optuna.samplers.CmaEsSampler (needs the `cmaes` package)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1
    sigma0: float | None = None
    restart_strategy: str | None = None
    consider_pruned_trials: bool = False


@dataclass
class NSGAIISamplerConf:
    """optuna.samplers.NSGAIISampler: a genetic algorithm for several objectives."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class QMCSamplerConf:
    """optuna.samplers.QMCSampler: quasi-Monte Carlo (low-discrepancy) sampling."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GPSamplerConf:
    """optuna.samplers.GPSampler: Bayesian optimisation with a Gaussian process."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


SAMPLERS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "cmaes": CmaEsSamplerConf,
            "nsgaii": NSGAIISamplerConf, "qmc": QMCSamplerConf, "gp": GPSamplerConf}


@dataclass
class OptunaSweeperConf:
    """An Optuna study as a Hydra sweep: `params` (or sweeps on the command line) is the search space."""

    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    _target_: str = "hydra_plugins.visionlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: Any = MISSING
    direction: Any = "minimize"  # minimize | maximize, or a list: one per value the task returns
    storage: str | None = None  # an SQLAlchemy URL (sqlite:///optuna.db): a shared, resumable study
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 1  # trials asked, launched and told together (the launcher may run them in parallel)
    params: dict[str, Any] | None = None  # key: choice | interval | tag(log, interval) | range


def register() -> None:
    """Register the sweeper and its samplers with Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="visionlab")
    for name, sampler in SAMPLERS.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=sampler, provider="visionlab")


register()

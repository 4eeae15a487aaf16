"""Running on SLURM (hydra/launcher=submitit_slurm): what a job asks the cluster for, a refused
submission as one clean error, and where a requeued job continues.

The launcher config (conf/hydra/launcher/submitit_slurm.yaml) derives its requests from the run's
own config through the resolvers registered here: GPUs from `trainer.accelerator` and
`trainer.devices`, CPUs from `data.num_workers`. The launcher itself is
hydra_plugins/visionlab_slurm/launcher.py (Hydra takes launchers only from `hydra_plugins`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from core.errors import ConfigError

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")
LAUNCHER_FILE = "conf/hydra/launcher/submitit_slurm.yaml"
# What the launcher asks SLURM for, in the order the refusal message lists it.
RESOURCE_KEYS = ("partition", "nodes", "tasks_per_node", "gpus_per_node", "gres", "gpus_per_task",
                 "cpus_per_task", "cpus_per_gpu", "mem_gb", "mem_per_cpu", "mem_per_gpu", "timeout_min",
                 "account", "qos", "constraint", "exclude")
# Launcher keys whose defaults follow the run's config.
DERIVED = (
    ("nodes", "nodes is trainer.num_nodes"),
    ("tasks_per_node", "tasks_per_node is trainer.devices (one task per device)"),
    ("gpus_per_node", "gpus_per_node follows trainer.accelerator and trainer.devices "
                      "(trainer.accelerator=cpu asks for no GPU)"),
    ("cpus_per_task", "cpus_per_task is data.num_workers + 1"),
)
# Words of sbatch's refusals -> the launcher keys that decide them.
# The first entry whose words the message holds names the keys; names of things (partition, account,
# qos) come first, as their messages may quote a value such as a partition called "gpu".
REFUSAL_KEYS = (
    (("account",), ("account",)),
    (("partition",), ("partition",)),
    (("qos", "quality of service"), ("qos",)),
    (("gres", "generic resource", "gpu"), ("gpus_per_node", "gres", "gpus_per_task")),
    (("time limit",), ("timeout_min",)),
    (("memory", "mem"), ("mem_gb", "mem_per_cpu", "mem_per_gpu")),
    (("feature", "constraint"), ("constraint",)),
    (("node count",), ("nodes",)),
    (("node configuration", "cpu count", "cpus", "processors", "nodes"),
     ("cpus_per_task", "tasks_per_node", "nodes", "mem_gb")),
)


@functools.lru_cache(maxsize=8)
def cluster_nodes(partition: str | None) -> list[tuple[int, str]]:
    """(CPUs, generic resources) of each node kind of `partition` (the default one when None), from
    `sinfo`; empty when there is no sinfo or no answer."""
    if shutil.which("sinfo") is None:
        return []
    command = ["sinfo", "-h", "-o", "%c|%G", *(["-p", partition] if partition else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:  # no slurm.conf: sinfo would retry for a minute
        return []
    nodes = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        cpus, _, gres = line.partition("|")
        if re.match(r"\d+", cpus):
            nodes.append((int(re.match(r"\d+", cpus).group()), gres))
    return nodes


def device_count(devices: Any) -> Any:
    """`trainer.devices` as a count where it is one (a list of indices counts its entries)."""
    if isinstance(devices, list | ListConfig):
        return len(devices)
    return devices


def slurm_gpus(accelerator: Any, devices: Any, partition: str | None = None) -> Any:
    """GPUs per node for `trainer.accelerator`: `trainer.devices` on gpu/cuda, none on cpu (or mps, tpu);
    on `auto`, GPUs when the partition's nodes have some (sinfo's GRES), as Lightning would use them."""
    accelerator = str(accelerator).lower()
    if accelerator == "auto":
        nodes = cluster_nodes(partition)
        accelerator = "gpu" if any("gpu" in gres for _, gres in nodes) else "cpu"
    return device_count(devices) if accelerator in GPU_ACCELERATORS else None


def slurm_cpus(num_workers: Any, tasks_per_node: Any = 1, partition: str | None = None) -> int:
    """CPUs per task: the data loader's workers + 1 (the training process), at most a node's CPUs shared
    among its tasks; `data.num_workers=auto` takes that whole share (8 CPUs when sinfo cannot say)."""
    tasks = device_count(tasks_per_node)
    tasks = tasks if isinstance(tasks, int) and tasks > 0 else 1
    node_cpus = [cpus for cpus, _ in cluster_nodes(partition)]
    share = max(1, min(node_cpus) // tasks) if node_cpus else None
    if not isinstance(num_workers, int):  # auto: the workers follow the CPUs the job gets
        return share or 8
    wanted = max(num_workers, 0) + 1
    return min(wanted, share) if share else wanted


def register_resolvers() -> None:
    """`${slurm_gpus:accelerator,devices,partition}` and `${slurm_cpus:num_workers,tasks,partition}`."""
    for name, resolver in (("slurm_gpus", slurm_gpus), ("slurm_cpus", slurm_cpus)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def refused_by_sbatch(error: BaseException) -> str | None:
    """sbatch's message when `error` is submitit's report of an sbatch that refused a job, else None."""
    cause = error.__cause__
    if isinstance(cause, subprocess.CalledProcessError) and Path(str(cause.cmd[0])).name == "sbatch":
        return str(cause.stderr or error).strip()
    return None


def refusal_error(message: str, params: dict[str, Any]) -> ConfigError:
    """The clean error for an sbatch refusal: sbatch's words, what was asked, and the keys to change."""
    lowered = message.lower()
    keys = next((keys for words, keys in REFUSAL_KEYS if any(word in lowered for word in words)), None)
    asked = ", ".join(f"{key}={params[key]}" for key in RESOURCE_KEYS if params.get(key) is not None)
    keys = keys or tuple(key for key in RESOURCE_KEYS if params.get(key) is not None)
    lines = [f"SLURM refused the job: {message}",
             f"The launcher asked for {asked or 'nothing beyond the cluster defaults'}.",
             f"Change {', '.join(f'hydra.launcher.{key}' for key in keys)} to what this cluster offers, on "
             f"the command line (hydra.launcher.{keys[0]}=...) or once in {LAUNCHER_FILE}."]
    derived = [text for key, text in DERIVED if key in keys]
    if derived:
        lines.append("By default " + "; ".join(derived) + ".")
    lines.append('`sinfo -o "%P %D %c %m %G"` lists each partition\'s nodes, CPUs, memory (MB) and GPUs.')
    return ConfigError("\n".join(lines))


@contextmanager
def sbatch_refusals_reported(params: dict[str, Any]) -> Iterator[None]:
    """Within the block, a job that sbatch refuses prints one clean error and exits with code 2.

    The submission happens in Hydra's launcher, outside run.py's error boundary (which covers the
    jobs), and Hydra would print the exception with its traceback and exit 1.
    """
    from submitit.core.utils import FailedJobError

    try:
        yield
    except FailedJobError as error:
        message = refused_by_sbatch(error)
        if message is None:
            raise
        from app.console import print_error

        print_error(refusal_error(message, params))
        raise SystemExit(2) from None


def restart_count() -> int:
    """How many times SLURM has restarted (requeued) this job; 0 outside SLURM or on a first start."""
    count = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(count) if count.isdigit() else 0


def requeued_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint a requeued job left in its run directory: Lightning's `hpc_ckpt_<n>.ckpt`
    (saved on the requeue signal) or `checkpoints/last.ckpt` (the end of the last complete epoch).

    A mid-epoch `checkpoints/stopped.ckpt` (SIGTERM) is left for a resume by hand: continuing from
    the end of an epoch repeats the uninterrupted run exactly, continuing mid-epoch does not.
    """
    candidates = [*output_dir.glob("hpc_ckpt_*.ckpt"), output_dir / "checkpoints" / "last.ckpt"]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def continue_requeued_job(cfg: DictConfig) -> None:
    """A training job that SLURM requeued (preemption, `scontrol requeue`, a node failure) continues
    from its own newest checkpoint instead of starting again: sets `cfg.ckpt_path` to it."""
    checkpoint = requeued_checkpoint(Path(cfg.paths.output_dir)) if restart_count() and cfg.train else None
    if checkpoint is None:
        return
    if os.environ.get("SLURM_PROCID", "0") == "0":
        given = "" if cfg.ckpt_path is None else f" (instead of ckpt_path={cfg.ckpt_path}, where it started)"
        log.info(f"SLURM restarted this job ({restart_count()}x): continuing from {checkpoint}{given}")
    cfg.ckpt_path = str(checkpoint)

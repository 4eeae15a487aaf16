"""Whether a SLURM cluster can take the tests' jobs here (asked once per session), and its node count."""

from __future__ import annotations

import functools
import shutil
import subprocess

START = ".ci/start_slurm.sh --nodes 2 (as root) starts a local cluster"


@functools.cache
def node_names() -> tuple[str, ...] | str:
    """The cluster's node names, or why there is no cluster to use (sinfo may wait a minute for a
    missing config file, so it is given a few seconds)."""
    if shutil.which("sbatch") is None:
        return f"no sbatch here: {START}"
    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer in 10 s (no slurm.conf, or no controller): {START}"
    if done.returncode != 0:
        return f"sinfo cannot reach a SLURM controller: {START}"
    return tuple(sorted(set(done.stdout.split())))


def unavailable() -> str | None:
    """Why SLURM jobs cannot run here, or None when a cluster answers."""
    names = node_names()
    return names if isinstance(names, str) else None


def node_count() -> int:
    """How many nodes the cluster has (0 without one)."""
    names = node_names()
    return 0 if isinstance(names, str) else len(names)

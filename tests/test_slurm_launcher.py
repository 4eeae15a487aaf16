"""What hydra/launcher=submitit_slurm asks SLURM for, how a refused sbatch is reported, and where a
requeued job continues: without a cluster (a stand-in `sbatch` where one is needed)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError

from app import slurm
from tests.conftest import CONF_DIR
from tests.run_py import python

ROOT = Path(__file__).resolve().parents[1]
# sbatch's own refusals, as Slurm 22.05 words them, and the launcher keys each one names first.
REFUSALS = {
    "sbatch: error: Invalid generic resource (gres) specification": "gpus_per_node",
    "sbatch: error: Batch job submission failed: More processors requested than permitted": "cpus_per_task",
    "sbatch: error: Batch job submission failed: Node count specification invalid": "nodes",
    "sbatch: error: invalid partition specified: gpu\n"
    "sbatch: error: Batch job submission failed: Invalid partition name specified": "partition",
    "sbatch: error: Memory specification can not be satisfied\n"
    "sbatch: error: Batch job submission failed: Requested node configuration is not available": "mem_gb",
    "sbatch: error: Batch job submission failed: Invalid feature specification": "constraint",
    "sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
    "specified": "account",
    "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds "
    "some limit)": "timeout_min",
}


def unboxed(text: str) -> str:
    """The words of a printed error block, its border and line breaks dropped."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch):
    """A stand-in for sinfo's answer: set `cluster.nodes` to [(cpus, gres), ...]."""
    class Cluster:
        nodes: list[tuple[int, str]] = []

    monkeypatch.setattr(slurm, "cluster_nodes", lambda partition: Cluster.nodes)
    return Cluster


def launcher_params(*overrides: str) -> dict:
    """The launcher's resolved parameters for `python run.py -m hydra/launcher=submitit_slurm OVERRIDES`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=submitit_slurm", *overrides],
                      return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.parametrize(("accelerator", "devices", "gres", "gpus"), [
    ("cpu", 4, "gpu:8", None), ("gpu", 4, "(null)", 4), ("cuda", [0, 1], "(null)", 2),
    ("mps", 1, "gpu:1", None), ("auto", 2, "gpu:a100:8(S:0-1)", 2), ("auto", 2, "(null)", None),
])
def test_gpus_follow_the_accelerator_and_auto_asks_the_cluster(cluster, accelerator, devices, gres, gpus):
    cluster.nodes = [(64, gres)]
    assert slurm.slurm_gpus(accelerator, devices) == gpus


@pytest.mark.parametrize(("workers", "tasks", "node_cpus", "cpus"), [
    (0, 1, [2], 1), (3, 1, [64], 4), (15, 8, [64], 8), (7, 2, [32, 16], 8), ("auto", 4, [64], 16),
    (5, 1, [], 6), ("auto", 1, [], 8), (3, "auto", [4], 4),
])
def test_cpus_are_the_workers_plus_one_within_a_nodes_share(cluster, workers, tasks, node_cpus, cpus):
    cluster.nodes = [(count, "(null)") for count in node_cpus]
    assert slurm.slurm_cpus(workers, tasks) == cpus


def test_launcher_config_asks_no_gpu_on_the_cpu_and_the_workers_cpus(cluster):
    cluster.nodes = [(32, "(null)")]
    params = launcher_params("trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2",
                             "data=mnist", "data.num_workers=3")
    assert params["_target_"] == "hydra_plugins.visionlab_slurm.launcher.SlurmLauncher"
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"], params["cpus_per_task"]) == (
        2, 2, None, 4)
    gpu = launcher_params("trainer.accelerator=gpu", "trainer.devices=4", "hydra.launcher.cpus_per_task=12")
    assert (gpu["gpus_per_node"], gpu["cpus_per_task"]) == (4, 12)


def test_hydra_finds_the_launcher_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Launcher)]
    assert "hydra_plugins.visionlab_slurm.launcher.SlurmLauncher" in names


@pytest.mark.parametrize("message", REFUSALS)
def test_a_refusal_names_sbatchs_words_what_was_asked_and_the_keys_to_change(message):
    params = {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 1, "cpus_per_task": 3, "partition": None}
    text = str(slurm.refusal_error(message, params))
    assert text.startswith(f"SLURM refused the job: {message}")
    assert "\nThe launcher asked for nodes=2, tasks_per_node=1, gpus_per_node=1, cpus_per_task=3.\n" in text
    assert f"Change hydra.launcher.{REFUSALS[message]}" in text
    assert "conf/hydra/launcher/submitit_slurm.yaml" in text


def failed_sbatch(stderr: str) -> FailedJobError:
    """submitit's error for an sbatch that exited 1 with `stderr`, as its CommandFunction raises it."""
    try:
        try:
            raise subprocess.CalledProcessError(1, ["sbatch", "/tmp/job.sh"], output="", stderr=stderr)
        except subprocess.CalledProcessError as error:
            raise FailedJobError(stderr) from error
    except FailedJobError as error:
        return error


def test_refused_sbatch_prints_one_block_and_exits_2_other_failures_keep_theirs(capsys):
    message = "sbatch: error: Invalid generic resource (gres) specification"
    with pytest.raises(SystemExit) as exit_, slurm.sbatch_refusals_reported({"gpus_per_node": 1}):
        raise failed_sbatch(message)
    assert exit_.value.code == 2
    printed = unboxed(capsys.readouterr().err)
    assert "ConfigError" in printed and "Invalid generic resource (gres) specification" in printed
    assert "Traceback" not in printed

    job_failure = FailedJobError("Job (task=0) failed during processing with trace: ...")
    with pytest.raises(FailedJobError), slurm.sbatch_refusals_reported({}):
        raise job_failure


def test_run_py_reports_a_refused_submission_cleanly(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    refusal = "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2; exit 1"
    for name, script in (("sbatch", refusal), ("sinfo", "exit 1")):
        (fake_bin / name).write_text(f"#!/bin/sh\n{script}\n")
        (fake_bin / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PROJECT_ROOT": str(tmp_path)}
    done = python("run.py", "-m", "hydra/launcher=submitit_slurm", "trainer.accelerator=gpu", "debug=smoke",
                  env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    block = unboxed(done.stderr)
    assert "SLURM refused the job: sbatch: error: Invalid generic resource (gres) specification" in block
    assert "Change hydra.launcher.gpus_per_node" in block
    assert "trainer.accelerator=cpu asks for no GPU" in block


def write_checkpoint(path: Path, age: float) -> Path:
    """An (empty) checkpoint file at `path`, last modified `age` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (time.time() - age,) * 2)
    return path


@pytest.mark.parametrize(("restarts", "train", "given", "continued"), [
    ("1", True, None, "last"), ("2", True, "/pretrained.ckpt", "last"), ("0", True, None, None),
    (None, True, None, None), ("1", False, "/evaluated.ckpt", "/evaluated.ckpt"),
])
def test_requeued_training_job_continues_from_its_newest_own_checkpoint(
        make_config, tmp_path, monkeypatch, restarts, train, given, continued):
    cfg = make_config(f"train={train}", f"ckpt_path={given or 'null'}")
    output_dir = Path(cfg.paths.output_dir)
    last = write_checkpoint(output_dir / "checkpoints" / "last.ckpt", age=10)
    write_checkpoint(output_dir / "checkpoints" / "stopped.ckpt", age=0)  # mid-epoch: never picked
    if restarts is None:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)

    slurm.continue_requeued_job(cfg)

    assert cfg.ckpt_path == (str(last) if continued == "last" else continued)


def test_requeued_job_prefers_lightnings_newer_hpc_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "checkpoints" / "last.ckpt", age=30)
    write_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", age=20)
    newest = write_checkpoint(tmp_path / "hpc_ckpt_2.ckpt", age=10)
    assert slurm.requeued_checkpoint(tmp_path) == newest
    write_checkpoint(tmp_path / "checkpoints" / "last.ckpt", age=0)
    assert slurm.requeued_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert slurm.requeued_checkpoint(tmp_path / "elsewhere") is None


def test_a_refusal_without_known_words_lists_every_key_asked():
    text = str(slurm.refusal_error("sbatch: error: Batch job submission failed: Unspecified error",
                                   {"nodes": 1, "tasks_per_node": 2, "cpus_per_task": 3, "gres": None}))
    assert "Change hydra.launcher.nodes, hydra.launcher.tasks_per_node, hydra.launcher.cpus_per_task " in text

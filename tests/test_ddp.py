"""Two CPU processes (DDP over gloo) through run.py: one run directory, rank-0 outputs, synced metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import training
from tests.conftest import compose_config
from tests.run_py import python

ROOT = Path(__file__).resolve().parents[1]
# Full test set (360 images, split evenly over 2 processes) so that both runs see the same images.
DDP_RUN = ["debug=smoke", "trainer.limit_train_batches=4", "trainer.limit_test_batches=null"]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_run_writes_one_directory_from_rank_zero_and_tests_like_one_process(tmp_path):
    done = python("run.py", "trainer=ddp", *DDP_RUN, f"paths.log_dir={tmp_path}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dirs = list((tmp_path / "classify" / "runs").iterdir())
    assert len(run_dirs) == 1, "every rank writes into the same run directory"
    run_dir = run_dirs[0]
    assert (run_dir / "config_resolved.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    event_writers = {f.name.split(".")[-2] for f in (run_dir / "tensorboard").glob("events.out.tfevents.*")}
    assert len(event_writers) == 1, "only rank 0's process writes TensorBoard events"
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())

    checkpoint = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    evaluate = [*DDP_RUN, "train=false", f"ckpt_path={checkpoint}"]
    single = training.train(compose_config(evaluate, tmp_path / "single"))

    assert single["test/acc"] == ddp_metrics["test/acc"]
    assert single["test/loss"] == pytest.approx(ddp_metrics["test/loss"], rel=1e-5)

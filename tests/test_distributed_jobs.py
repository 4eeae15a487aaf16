"""Runs over several processes (DDP over gloo on 2 CPU processes): each multirun job starts from a clean
distributed state whatever happened to the job before it, and a failure is reported from the rank
that failed."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import pytest

from tests.classification_fakes import write_image_folder
from tests.run_py import run_dirs, run_py, sweep_dirs

DDP = ["++trainer.accelerator=cpu", "++trainer.devices=2", "strategy=ddp", "logger=none"]
# Epoch 0 trains at lr 1e-3; StepLR then multiplies it by gamma: 1e13 diverges in epoch 1, mid-training.
DIVERGES_IN_JOB_0 = ["optimizer=sgd", "optimizer.lr=1e-3", "scheduler=step",
                     "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=1e13,0.5,0.1",
                     "trainer.max_epochs=2", "trainer.limit_train_batches=4"]


def processes_mentioning(text: str) -> list[str]:
    """The command lines of running processes that contain `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if text in command and "pytest" not in command:
            found.append(command)
    return found


@pytest.mark.slow
@pytest.mark.ddp
def test_a_ddp_sweep_whose_first_job_fails_runs_the_others_to_the_end_and_exits_1(tmp_path):
    done = run_py(tmp_path, "-m", *DDP, *DIVERGES_IN_JOB_0, check=False)

    assert done.returncode == 1, done.stderr[-5000:]
    assert "1 of 3 jobs failed: job(s) 0 " in done.stderr
    (sweep_dir,) = sweep_dirs(tmp_path)
    with (sweep_dir / "summary.csv").open() as handle:
        rows = {row["job"]: row for row in csv.DictReader(handle)}
    assert rows["0"]["status"] == "failed" and "Training diverged" in rows["0"]["error"]
    for job in ("1", "2"):
        assert rows[job]["status"] == "done", rows[job]["error"]
        assert (sweep_dir / job / "metrics.json").is_file() and float(rows[job]["test/acc"]) >= 0
        assert (sweep_dir / job / "train_ddp_process_1.log").is_file(), "each job launched its own rank 1"
    table = done.stdout[done.stdout.index("3 jobs ranked"):]
    assert "│ 0   │ failed" in table and "│ 1   │ done" in table and "│ 2   │ done" in table
    assert "Connection closed by peer" not in done.stderr + done.stdout
    assert not processes_mentioning(str(sweep_dir)), "no rank outlives its job"


def corrupt_png(path: Path, width: int = 40, height: int = 40) -> None:
    """A PNG whose header is valid (it passes the scan before training) but that holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


@pytest.mark.slow
@pytest.mark.ddp
def test_an_image_only_rank_1_reads_is_reported_by_rank_0_as_rank_1s_error(tmp_path):
    root = write_image_folder(tmp_path / "folder", splits=("train", "val"), per_class=4)
    # validation is not shuffled: rank r scores samples r, r+2, ...; sample 1 (cat/1.*) is rank 1's alone
    (root / "val" / "cat" / "1.jpg").unlink()
    corrupt_png(root / "val" / "cat" / "1.png")

    done = run_py(tmp_path, *DDP, "data=image_folder", f"data.root={root}", "data.num_classes=2",
                  "model=simple_cnn", "data.image_size=32", "data.resize_size=36", "data.batch_size=4",
                  check=False, env={"HYDRA_FULL_ERROR": "0", "COLUMNS": "300"})

    assert done.returncode == 2, done.stderr[-5000:]
    assert "UnreadableImageError on rank 1" in done.stderr and "1.png" in done.stderr
    run_dir = run_dirs(tmp_path)[0]
    error = (run_dir / "error.txt").read_text()
    assert error.startswith("UnreadableImageError on rank 1: Cannot read image") and "1.png" in error
    assert (run_dir / "error_rank1.txt").read_text().startswith("UnreadableImageError: Cannot read image")
    assert not processes_mentioning(str(run_dir)), "rank 1 does not outlive the run"

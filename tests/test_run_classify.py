"""End-to-end classification runs through run.py's composed config."""

from __future__ import annotations

import json

import run


def test_default_run_trains_and_tests_on_digits_and_writes_metrics(make_config, tmp_path):
    cfg = make_config()
    metrics = run.train(cfg)
    assert {"test/acc", "test/loss", "val/acc"} <= metrics.keys()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/acc"] == metrics["test/acc"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()

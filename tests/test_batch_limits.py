"""Fractional `trainer.limit_*_batches` that select no batch are refused before the run, per process,
with the value that works."""

from __future__ import annotations

import math
import re

import pytest
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.base import batches_per_process, smallest_working_fraction
from tests.run_py import run_py


def test_the_suggested_fraction_is_the_smallest_in_thousandths_that_selects_a_batch():
    for batches in range(1, 1000):
        fraction = smallest_working_fraction(batches)
        assert int(batches * fraction) >= 1 and 0 < fraction <= 1
        assert int(batches * (fraction - 0.001)) < 1 or fraction == 0.001


SAMPLER_CASES = [(n, w, b, d) for n in (1, 2, 7, 64, 143, 144, 145) for w in (1, 2, 3, 8) for b in (1, 4, 64)
                 for d in (False, True) if not (d and math.ceil(n / w) < b)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_batches_per_process_are_the_fewest_the_samplers_give_a_process(world_size):
    for samples, _, batch_size, drop_last in (case for case in SAMPLER_CASES if case[1] == world_size):
        check_batches_per_process(samples, world_size, batch_size, drop_last)


def check_batches_per_process(samples: int, world_size: int, batch_size: int, drop_last: bool) -> None:
    """`batches_per_process` against the lengths of the loaders each rank builds."""
    data = list(range(samples))
    train = [len(DataLoader(data, batch_size, drop_last=drop_last,
                            sampler=DistributedSampler(data, world_size, rank, shuffle=True)))
             for rank in range(world_size)]
    assert batches_per_process(samples, batch_size, world_size, "train", drop_last) == min(train)
    if samples >= world_size:  # fewer evaluation samples than processes are refused (check_splits)
        evaluation = [len(DataLoader(data, batch_size, sampler=UnrepeatedDistributedSampler(
            data, num_replicas=world_size, rank=rank, shuffle=False))) for rank in range(world_size)]
        assert batches_per_process(samples, batch_size, world_size, "val", False) == min(evaluation)


def test_a_fraction_of_validation_batches_that_selects_none_is_refused_with_the_value_that_works(tmp_path):
    # the digits' 144 validation images in batches of 64: 3 batches, and 0.1 x 3 < 1
    done = run_py(tmp_path, "data.batch_size=64", "trainer.limit_val_batches=0.1", "logger=none",
                  check=False, env={"HYDRA_FULL_ERROR": "0"})

    message = " ".join(done.stderr.replace("│", " ").split())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "trainer.limit_val_batches=0.1 selects no validation batch" in message
    assert "3 validation batch(es)" in message and "Traceback" not in done.stderr
    suggested = re.search(r"Set trainer\.limit_val_batches=([0-9.]+) or more", message).group(1)
    assert float(suggested) == pytest.approx(0.334)

    works = run_py(tmp_path, "data.batch_size=64", f"trainer.limit_val_batches={suggested}", "logger=none")
    assert works.returncode == 0


def test_a_fraction_of_training_images_for_style_that_selects_none_is_refused(tmp_path):
    done = run_py(tmp_path, "task=style", "model.weights=null", "trainer.limit_train_batches=0.4",
                  check=False)

    message = " ".join(done.stderr.replace("│", " ").split())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "trainer.limit_train_batches=0.4 selects no training batch" in message
    assert "trainer.limit_train_batches=0.5 or more" in message

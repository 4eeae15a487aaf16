"""Lightning's "use srun" hint appears only inside a SLURM allocation, which could have used srun; not on
every machine that merely has SLURM's client installed (login nodes, workstations)."""

from __future__ import annotations

import os

import pytest

from tests.run_py import run_py

HINT = "The `srun` command is available on your system but is not used"


@pytest.mark.parametrize("in_allocation", [False, True], ids=["login node", "inside salloc"])
def test_the_srun_hint_is_printed_only_inside_an_allocation(tmp_path, in_allocation):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    environment = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if in_allocation:
        environment["SLURM_JOB_ID"] = "4242"
    else:
        environment["SLURM_JOB_ID"] = ""  # run_py adds to this environment: an empty id is no allocation

    done = run_py(tmp_path / "project", "logger=none", "test=false", env=environment)

    assert (HINT in done.stderr) == in_allocation, done.stderr[-2000:]

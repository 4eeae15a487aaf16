"""Values that torch, the DataLoader, omegaconf or the file system would refuse with a traceback are one
clean message instead: the key (or folder), where it was set, the fix, exit code 2."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app import checks
from core.errors import ConfigError
from tests.classification_fakes import write_image_folder
from tests.run_py import run_py

QUIET = ["logger=none"]
FOLDER = ["data=image_folder", "model=simple_cnn", "data.image_size=32", "data.resize_size=36",
          "data.num_workers=0", "data.batch_size=4"]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines wide enough for any tmp path: clean_error joins wrapped lines with spaces, inside paths too."""
    monkeypatch.setenv("COLUMNS", "400")


def clean_error(done: subprocess.CompletedProcess) -> str:
    """The one-block message of a run that stopped with exit code 2 and no traceback, unwrapped."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    return " ".join(done.stderr.replace("│", " ").split())


@pytest.mark.parametrize(("override", "expected"), [
    ("optimizer.lr=-1", "optimizer.lr=-1 is below 0"),
    ("data.batch_size=0", "data.batch_size=0 is below 1"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is neither a fraction"),
])
def test_out_of_range_values_are_named_with_where_they_were_set(tmp_path, override, expected):
    message = clean_error(run_py(tmp_path, *QUIET, override, check=False))

    assert expected in message and f"command line as `{override}`" in message
    assert (next((tmp_path / "outputs" / "classify" / "runs").iterdir()) / "error.txt").is_file()


@pytest.mark.parametrize(("key", "_kind", "nullable", "example", "minimum"),
                         [row for row in checks.TYPED_KEYS if row[4] is not None], ids=lambda v: str(v))
def test_every_bounded_key_refuses_a_value_below_its_minimum_and_takes_the_minimum(
        make_config, key, _kind, nullable, example, minimum):
    with pytest.raises(ConfigError, match=rf"^{key}={minimum - 1}.* is below {minimum}.*command line"):
        checks.check_value_types(make_config(f"++{key}={minimum - 1}"))
    checks.check_value_types(make_config(f"++{key}={minimum}"))


def test_image_folder_without_num_classes_is_told_how_many_class_folders_its_root_holds(tmp_path):
    root = write_image_folder(tmp_path / "folder", per_class=2)

    message = clean_error(run_py(tmp_path, *QUIET, *FOLDER, f"data.root={root}", check=False))

    assert "data.num_classes (??? in conf/data/image_folder.yaml)" in message
    assert f"add data.num_classes=2 (the class folders of {root / 'train'})" in message
    assert "MissingMandatoryValue" not in message and "Interpolation" not in message


def test_image_folder_without_root_or_num_classes_names_both(tmp_path):
    message = clean_error(run_py(tmp_path, *QUIET, *FOLDER, check=False))

    assert "2 value(s) the run needs have no value" in message
    assert "data.root (??? in conf/data/image_folder.yaml): add data.root=/path/to/the/dataset" in message
    assert "data.num_classes (??? in conf/data/image_folder.yaml)" in message


def test_image_folder_without_root_names_it(tmp_path):
    message = clean_error(run_py(tmp_path, *QUIET, *FOLDER, "data.num_classes=2", check=False))

    assert "1 value(s) the run needs have no value: data.root (??? in conf/data/image_folder.yaml)" in message


def test_an_interpolation_to_a_key_that_does_not_exist_is_named(tmp_path):
    message = clean_error(run_py(tmp_path, *QUIET, "+model.width=${data.no_such_key}", check=False))

    assert "model.width cannot be resolved" in message and "data.no_such_key" in message


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a file system mounted read-only (a tmpfs): writing there fails with EROFS even for root,
    whom file permissions do not stop."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a read-only file system")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "multirun"])
def test_an_output_folder_on_a_read_only_file_system_is_named_with_the_fix(read_only_folder, sweep):
    done = run_py(read_only_folder, *(["-m"] if sweep else []), *QUIET, check=False)

    message = clean_error(done)
    assert f"The output folder {read_only_folder}/outputs/classify/" in message
    assert "cannot be written: Read-only file system" in message
    assert "paths.log_dir=" in message and ("hydra.sweep.dir" if sweep else "hydra.run.dir") in message
    assert not any(Path(read_only_folder).iterdir())

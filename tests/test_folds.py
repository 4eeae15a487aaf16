"""k-fold cross-validation: stratified, seeded, disjoint validation folds covering the training set,
for every classification datamodule, and a sweep over the folds summarised as mean and standard deviation."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from hydra.utils import instantiate

from core.errors import ConfigError, DataError
from datamodules.base import stratified_fold
from tests.classification_fakes import write_cifar10, write_image_folder, write_mit67, write_mnist
from tests.run_py import run_py, sweep_dirs


def test_stratified_folds_are_disjoint_cover_every_index_keep_class_proportions_and_follow_the_seed():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    folds = [stratified_fold(labels, 5, fold, seed=3) for fold in range(5)]
    vals = [val for _, val in folds]
    assert sorted(np.concatenate(vals).tolist()) == list(range(60))
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == 60
        assert np.bincount(labels[val]).tolist() == [2, 4, 6]
    assert all((a == b).all() for a, b in zip(vals, [stratified_fold(labels, 5, f, 3)[1] for f in range(5)],
                                              strict=True))
    assert not (stratified_fold(labels, 5, 0, seed=4)[1] == vals[0]).all()


def test_a_class_smaller_than_the_number_of_folds_is_a_data_error():
    with pytest.raises(DataError, match="num_folds=5.*only 3"):
        stratified_fold([0, 0, 0, 1, 1, 1, 1, 1], 5, 0, seed=0)


@pytest.mark.parametrize(("num_folds", "fold"), [(1, 0), (5, 5), (5, -1)])
def test_fold_outside_the_folds_is_a_config_error(make_config, num_folds, fold):
    cfg = make_config(f"data.num_folds={num_folds}", f"data.fold={fold}")
    datamodule = instantiate(cfg.data)
    with pytest.raises(ConfigError, match="0 <= data.fold < data.num_folds"):
        datamodule.setup("fit")


DATASETS = {
    "digits": lambda root: [],
    "mnist": lambda root: [f"data.root={write_mnist(root)}"],
    "cifar10": lambda root: [f"data.root={write_cifar10(root)}", "data.verify_checksums=false"],
    "mit67": lambda root: [f"data.root={write_mit67(root)}", "data.num_classes=3"],
    "image_folder": lambda root: [f"data.root={write_image_folder(root, splits=('train', 'val', 'test'))}",
                                  "data.num_classes=2"],
}


def samples(dataset) -> list[str]:
    """What names each sample of a split: its index into the official training set, its file, or
    its pixels; empty for an official test set (files apart from the training set's)."""
    if hasattr(dataset, "indices"):
        return [str(index) for index in dataset.indices]
    if hasattr(dataset, "samples"):
        return [str(path) for path, _ in dataset.samples]
    if hasattr(dataset, "tensors"):
        return [image.numpy().tobytes().hex() for image in dataset.tensors[0]]
    if hasattr(dataset, "images"):  # transformed as it is read: with augment=none, as evaluation does
        return [dataset.transform(image).numpy().tobytes().hex() for image in dataset.images]
    return []


@pytest.mark.parametrize("data", list(DATASETS))
def test_the_validation_folds_of_each_classification_datamodule_partition_its_training_set(
        make_config, tmp_path, data):
    options = DATASETS[data](tmp_path / data)
    splits = []
    for fold in range(3):
        cfg = make_config(f"data={data}", *options, "augment=none", "data.num_folds=3", f"data.fold={fold}")
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        splits.append({split: samples(dataset) for split, dataset in datamodule.datasets.items()})
    pool = sorted(splits[0]["train"] + splits[0]["val"])
    assert sorted(sum((split["val"] for split in splits), [])) == pool, "the folds cover the training set"
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        assert sorted(split["train"] + split["val"]) == pool
        assert not set(split["test"]) & set(pool)


@pytest.mark.slow
def test_a_five_fold_sweep_reports_mean_and_standard_deviation_over_the_folds(tmp_path):
    done = run_py(tmp_path, "-m", "data.fold=range(5)", "data.num_folds=5")

    (sweep_dir,) = sweep_dirs(tmp_path)
    with (sweep_dir / "summary.csv").open() as handle:
        jobs = list(csv.DictReader(handle))
    with (sweep_dir / "summary_folds.csv").open() as handle:
        (grouped,) = list(csv.DictReader(handle))
    accuracies = [float(job["test/acc"]) for job in jobs]
    assert sorted(job["data.fold"] for job in jobs) == ["0", "1", "2", "3", "4"]
    assert grouped["folds"] == "5/5"
    assert float(grouped["test/acc"]) == pytest.approx(np.mean(accuracies))
    assert float(grouped["test/acc_std"]) == pytest.approx(np.std(accuracies, ddof=1))
    assert re.search(r"Cross-validation over data\.fold", done.stdout)

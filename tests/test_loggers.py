"""Every logger records the composed hyperparameters, the final metrics and the figures, read back
with its own client: TensorBoard's EventAccumulator, the CSV files, MlflowClient, W&B's offline run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from tests.conftest import CONF_DIR
from tests.run_py import run_dirs, run_py
from tests.wandb_records import offline_run

FIGURES = {"val/confusion_matrix", "val/predictions", "test/confusion_matrix", "test/pr_curves",
           "test/roc_curves", "feature_maps/features.0", "val/grad_cam"}
# The opt-in figures too; the loggers without histograms get them as a figure.
OPT_IN_FIGURES = ("callbacks.feature_maps.layers=[features.0]", "callbacks.cam.enabled=true")
HISTOGRAMS_FIGURE = "feature_maps/histograms"


def check_tensorboard(run_dir: Path, metrics: dict[str, float]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert events.Scalars("hp/test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert FIGURES <= set(events.Tags()["images"])
    assert "feature_maps/features.0" in events.Tags()["histograms"]


def check_csv(run_dir: Path, metrics: dict[str, float]) -> None:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    final = [row for row in rows if row.get("hp/test/acc")]
    assert float(final[-1]["hp/test/acc"]) == pytest.approx(metrics["test/acc"])
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["optimizer"]["lr"] == 0.005 and hparams["data"]["_target_"].endswith("DigitsDataModule")


def check_mlflow(project_root: Path, run_dir: Path, metrics: dict[str, float]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project_root}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name("classify")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.output_dir = '{run_dir}'")
    assert run.data.params["optimizer/lr"] == "0.005"
    assert run.data.params["data/_target_"] == "datamodules.digits.DigitsDataModule"
    assert run.data.metrics["hp/test/acc"] == pytest.approx(metrics["test/acc"])
    assert run.data.metrics["hp/best/val/acc"] == pytest.approx(metrics["best/val/acc"])
    images = {Path(a.path).name.split("+")[0] for a in client.list_artifacts(run.info.run_id, "images")}
    assert {tag.replace("/", "~") for tag in (*FIGURES, HISTOGRAMS_FIGURE)} <= images


def check_wandb(run_dir: Path, metrics: dict[str, float]) -> None:
    config, last = offline_run(run_dir)
    assert config["optimizer"]["lr"] == 0.005 and config["task_name"] == "classify"
    assert last["hp/test/acc"] == pytest.approx(metrics["test/acc"])
    for tag in (*FIGURES, HISTOGRAMS_FIGURE):
        (image,) = last[f"{tag}/filenames"]
        assert (next(run_dir.glob("wandb/offline-run-*")) / "files" / image).is_file()


def test_logger_many_records_hparams_metrics_and_figures_in_each_logger(tmp_path):
    run_py(tmp_path, "logger=many", *OPT_IN_FIGURES)

    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    check_tensorboard(run_dir, metrics)
    check_csv(run_dir, metrics)
    check_mlflow(tmp_path, run_dir, metrics)
    check_wandb(run_dir, metrics)


def test_logger_csv_alone_finishes_and_writes_metrics(tmp_path):
    run_py(tmp_path, "logger=csv")

    (run_dir,) = run_dirs(tmp_path)
    check_csv(run_dir, json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_logger_alone_records_the_run(tmp_path, logger):
    run_py(tmp_path, f"logger={logger}", *OPT_IN_FIGURES)

    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if logger == "mlflow":
        check_mlflow(tmp_path, run_dir, metrics)
    else:
        check_wandb(run_dir, metrics)
        assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_mlflow_takes_a_server_uri_and_keeps_no_local_artifact_folder(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["logger=mlflow", "logger.mlflow.tracking_uri=http://mlflow:5000"],
                      return_hydra_config=True)
    cfg.logger.mlflow.output_dir = str(tmp_path / "run")
    logger = instantiate(cfg.logger.mlflow)
    assert logger._tracking_uri == "http://mlflow:5000" and logger._artifact_location is None
    assert logger._run_name == f"{tmp_path.name}/run"


FIGURES_OF_TASK = {
    "segment": ("val/overlays", ["task=segment", "model.base_width=8", "model.depth=2"]),
    "style": ("astronaut/progress", ["task=style", "model.weights=null", "data.image_size=32",
                                     "task.num_scales=1", "task.evaluations=4", "task.progress_every=2"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(FIGURES_OF_TASK))
def test_segmentation_overlays_and_style_strips_reach_every_logger_that_takes_images(tmp_path, task):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tag, options = FIGURES_OF_TASK[task]
    run_py(tmp_path, *options, "logger=many")

    (run_dir,) = run_dirs(tmp_path, task)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert tag in events.Tags()["images"]
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name(task).experiment_id])
    images = {Path(a.path).name.split("+")[0] for a in client.list_artifacts(run.info.run_id, "images")}
    assert tag.replace("/", "~") in images
    _, last = offline_run(run_dir)
    (image,) = last[f"{tag}/filenames"]
    assert (next(run_dir.glob("wandb/offline-run-*")) / "files" / image).is_file()

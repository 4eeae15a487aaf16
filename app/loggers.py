"""Logger construction that needs more than a config: MLflow's local store and its artifacts."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.loggers import MLFlowLogger

LOCAL_STORE_SCHEMES = ("sqlite:", "file:")


def mlflow_logger(
    experiment_name: str, tracking_uri: str, artifact_dir: str, output_dir: str, run_name: str | None = None
) -> MLFlowLogger:
    """An MLFlowLogger whose run is named after its run directory (also in the `output_dir` tag).

    A local store (`sqlite:` or `file:` URI) gets its artifacts in `artifact_dir`: MLflow would
    otherwise put them in `./mlartifacts` of whatever the working directory is. A server keeps its own.
    """
    local = tracking_uri.startswith(LOCAL_STORE_SCHEMES)
    if local:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name or "/".join(Path(output_dir).parts[-2:]),
        tracking_uri=tracking_uri,
        tags={"output_dir": output_dir},
        artifact_location=Path(artifact_dir).resolve().as_uri() if local else None,
    )

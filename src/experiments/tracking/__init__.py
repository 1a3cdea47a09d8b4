"""Tracking: `Run`, the one interface every task writes its run through (run.py), what a run is named and
tagged with (tags.py), and the store it writes to and reads from (store.py: the only place an MLflow client
is constructed). Imports nothing of the data or model packages: `make report` and `make ui` read the store
without starting the data stack."""

from src.experiments.tracking.run import Run, uses_mlflow
from src.experiments.tracking.store import (
    DESCRIPTIONS,
    EVALUATE_EXPERIMENT,
    TRAIN_EXPERIMENT,
    TrackingStoreError,
    check_tracking_store,
    client,
    default_tracking_uri,
    download_artifact,
    experiment_id,
    experiment_url,
    run_url,
    sqlite_file,
    tracking_uri,
    ui_base,
)
from src.experiments.tracking.tags import (
    data_fingerprint,
    data_report_metrics,
    flat_params,
    run_name,
    run_tags,
    selected_options,
    sweep_id,
    unique_name,
)

__all__ = [
    "DESCRIPTIONS",
    "EVALUATE_EXPERIMENT",
    "TRAIN_EXPERIMENT",
    "Run",
    "TrackingStoreError",
    "check_tracking_store",
    "client",
    "data_fingerprint",
    "data_report_metrics",
    "default_tracking_uri",
    "download_artifact",
    "experiment_id",
    "experiment_url",
    "flat_params",
    "run_name",
    "run_tags",
    "run_url",
    "selected_options",
    "sqlite_file",
    "sweep_id",
    "tracking_uri",
    "ui_base",
    "unique_name",
    "uses_mlflow",
]

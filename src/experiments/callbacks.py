"""Hydra callbacks for sweeps."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class PrepareSweep(Callback):
    """Before a sweep's jobs start: create the MLflow store and experiment, generate the dataset
    and build the face-crop cache, once.

    Parallel jobs then never race to create the SQLite schema or the same cache entries, and a
    sweep decodes each video once whatever the number of jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        import mlflow

        from src.experiments.tracking import (
            TrackingStoreError,
            check_tracking_store,
            experiment_id,
            tracking_uri,
        )

        if config.logger.name == "mlflow":
            uri = tracking_uri(config)
            try:  # one line and no job started, rather than every job retrying an unusable store
                check_tracking_store(uri)
            except TrackingStoreError as error:
                print(f"Error: {error}", file=sys.stderr)
                raise SystemExit(1) from None
            experiment_id(mlflow.MlflowClient(uri), uri, config.logger.experiment_name)
        if config.get("video"):
            return
        try:
            hydra.utils.instantiate(config.data).prepare_data()
        except Exception as error:  # each job prepares its own data too, and reports the error there
            log.warning("could not prepare the data before the sweep: %s", error)


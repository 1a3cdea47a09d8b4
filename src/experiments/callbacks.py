"""Hydra callbacks for sweeps."""

from __future__ import annotations

import logging
import sys

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

        from src.data.datamodule import build_datamodule
        from src.experiments.tracking import (
            TrackingStoreError,
            check_tracking_store,
            experiment_id,
            tracking_uri,
            uses_mlflow,
        )

        if uses_mlflow(config):
            uri = tracking_uri(config)
            try:  # one line and no job started, rather than every job retrying an unusable store
                check_tracking_store(uri)
            except TrackingStoreError as error:
                print(f"Error: {error}", file=sys.stderr)
                raise SystemExit(1) from None
            experiment_id(mlflow.MlflowClient(uri), uri, config.logger.experiment_name)
        if config.get("video") or config.get("videos"):
            return
        try:
            build_datamodule(config.data).prepare_data()
        except Exception as error:  # each job prepares its own data too, and reports the error there
            log.warning("could not prepare the data before the sweep: %s", error)


    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """The sweep's id, a table of its jobs (cell, test video AUC, status) and how to report it."""
        from pathlib import Path

        from src.experiments.tracking import uses_mlflow

        if not uses_mlflow(config):
            return
        sweep = Path(str(config.hydra.sweep.dir)).name  # the config Hydra passes here carries its hydra node
        try:
            print(sweep_summary(config, sweep))
        except Exception as error:  # the summary is a courtesy: never fail a finished sweep over it
            log.warning("could not summarise sweep %s: %s", sweep, error)


def sweep_summary(config: DictConfig, sweep: str) -> str:
    import mlflow

    from src.experiments.tracking import experiment_url, tracking_uri

    uri = tracking_uri(config)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.logger.experiment_name)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.sweep_id = '{sweep}'", order_by=["attributes.start_time ASC"])
    lines = [f"Sweep {sweep}: {len(runs)} runs in experiment '{config.logger.experiment_name}' of {uri}"]
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        cell = "/".join(tags.get(k, "?") for k in ("model", "weights", "data", "augment")) + f" fold {tags.get('fold')}"
        auc = metrics.get("test/video_auc")
        value = "–" if auc is None else f"{auc:.4g}"
        if "test/video_auc_ci_low" in metrics:
            value += f" [{metrics['test/video_auc_ci_low']:.3g}, {metrics['test/video_auc_ci_high']:.3g}]"
        lines.append(f"  {cell:<48} test video AUC {value:<22} {run.info.status}")
    if experiment is not None:
        link = experiment_url(uri, experiment.experiment_id)
        lines.append(f"MLflow: {link}  (make ui), search: tags.sweep_id = '{sweep}'")
    if config.logger.experiment_name == "evaluate":
        lines.append(f"Report: make report SWEEP={sweep}")
    return "\n".join(lines)

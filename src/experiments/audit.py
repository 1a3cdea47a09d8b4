"""The shortcut audit as a run: `make audit`, `python -m src.data.audit [data=...]` (same thing).

The measurements, statistics and report files live in `src.data.audit`; this module prepares the data
module of `cfg.data`, prints the table and logs the run to MLflow (experiment `audit`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from src.data.audit import (
    AUDIT_EXPERIMENT,
    AucRow,
    audit_table,
    console_table,
    flagged_features,
    measure_videos,
    write_reports,
)
from src.data.datamodule import build_datamodule


def log_to_mlflow(cfg, rows: list[AucRow], files: dict[str, Path], summary: dict) -> str:
    """One run in experiment ``audit``: the AUCs as metrics, the flags, the files as artifacts."""
    import mlflow

    from src.experiments.tracking import experiment_id, log_config, tracking_uri, unique_name

    uri = tracking_uri(cfg)
    client = mlflow.MlflowClient(uri)
    experiment = experiment_id(client, uri, cfg.audit.experiment_name or AUDIT_EXPERIMENT)
    name = unique_name(f"audit-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = client.create_run(experiment, run_name=name, tags={"data": str(cfg.data.name)})
    run_id, status = run.info.run_id, "FAILED"
    try:
        log_config(client, run_id, cfg)
        client.log_param(run_id, "data.root", str(cfg.data.root))
        for key, value in summary.items():
            client.log_metric(run_id, key, float(value))
        for r in rows:
            if not math.isnan(r.auc):
                key = f"auc/{r.split.replace('+', '_')}/{r.feature}"
                client.log_metric(run_id, key, r.auc)
                client.log_metric(run_id, key + "_ci_low", r.low)
                client.log_metric(run_id, key + "_ci_high", r.high)
        flagged = flagged_features(rows)
        client.set_tag(run_id, "shortcut_risks", ",".join(flagged) or "none")
        client.log_metric(run_id, "shortcut_risk_features", len(flagged))
        for file in files.values():
            client.log_artifact(run_id, str(file), "audit")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id


def run_audit(cfg) -> list[AucRow]:
    """Prepare the data module of ``cfg.data`` (generation and face-crop cache), measure, report."""

    datamodule = build_datamodule(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    videos = measure_videos(datamodule, cfg.audit.frames_per_video, progress=True)
    if not videos:
        raise ValueError(f"no video of {datamodule.root} could be measured")
    band = (float(cfg.audit.band[0]), float(cfg.audit.band[1]))
    rows = audit_table(videos, band, cfg.audit.bootstrap_resamples, cfg.audit.seed)
    title = f"{cfg.data.name} ({datamodule.root}), {len(videos)} videos"
    files = write_reports(videos, rows, Path(cfg.audit.output_dir), band, title)
    print(f"\nShortcut audit of {title}")
    print(console_table(rows))
    flagged = flagged_features(rows)
    print(f"\nShortcut risks: {', '.join(flagged) if flagged else 'none'}  (files in {cfg.audit.output_dir})")
    summary = dict(datamodule.build_report.summary())
    summary = {f"data/{k}": v for k, v in summary.items() if isinstance(v, int | float)}
    summary["videos_measured"] = len(videos)
    if cfg.audit.mlflow:
        from src.experiments.tracking import run_link, tracking_uri

        run_id = log_to_mlflow(cfg, rows, files, summary)
        print(f"MLflow run {run_id} in experiment {cfg.audit.experiment_name or AUDIT_EXPERIMENT}\n"
              f"MLflow: {run_link(tracking_uri(cfg), run_id)}  (make ui)")
    return rows


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from src.experiments.config import CONFIG_DIR, check_config, clean_user_errors, run_cleanly

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
    def entry(cfg: DictConfig) -> None:
        with clean_user_errors():
            check_config(cfg)
            run_audit(cfg)

    run_cleanly(entry)


if __name__ == "__main__":
    main()

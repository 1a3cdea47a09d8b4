"""The shortcut audit as a run: `make audit`, `python -m src.data.audit [data=...]` (same thing).

The measurements, statistics and report files live in `src.data.audit`; this module prepares the data
module of `cfg.data`, prints the table and records the run (experiment `audit`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from src.data.audit import (
    AucRow,
    audit_table,
    console_table,
    flagged_features,
    measure_videos,
    write_reports,
)
from src.experiments.tracking import Run, unique_name
from src.experiments.wiring import build_datamodule


def log_run(cfg, rows: list[AucRow], files: dict[str, Path], summary: dict) -> Run:
    """One run (experiment `audit`): the AUCs with their intervals as metrics, the flags, the files."""
    name = unique_name(f"audit-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = Run.start(cfg.logger, name=name, tags={"data": str(cfg.data.name)})
    with run.state():
        run.log_config(cfg)
        run.log_params({"data.root": str(cfg.data.root)})
        metrics = {key: float(value) for key, value in summary.items()}
        for r in rows:
            if not math.isnan(r.auc):
                key = f"auc/{r.split.replace('+', '_')}/{r.feature}"
                metrics.update({key: r.auc, key + "_ci_low": r.low, key + "_ci_high": r.high})
        flagged = flagged_features(rows)
        metrics["shortcut_risk_features"] = len(flagged)
        run.log_metrics(metrics)
        run.set_tags({"shortcut_risks": ",".join(flagged) or "none"})
        for file in files.values():
            run.log_file(file, "audit")
    return run


def run_audit(cfg) -> list[AucRow]:
    """Prepare the data module of ``cfg.data`` (generation and face-crop cache), measure, report."""

    datamodule = build_datamodule(cfg)
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
        run = log_run(cfg, rows, files, summary)
        print(f"{run.name() or 'audit run'} ({run.id})\n{run.link()}" if run.is_mlflow else run.link())
    return rows


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    from src.experiments import cli
    from src.experiments.config import CONFIG_DIR, check_config
    from src.experiments.runtime import tidy_output

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
    def entry(cfg: DictConfig) -> None:
        with cli.clean_user_errors():
            check_config(cfg)
            tidy_output()
            run_audit(cfg)

    cli.run(entry, task="audit")


if __name__ == "__main__":
    main()

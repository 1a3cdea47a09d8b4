"""The shortcut audit as a run: `make audit`, `python -m src.data.audit [data=...]` (same thing), and with
`run=<evaluate run id>` the audit of that run's model (`src.experiments.studies.model_audit`).

The measurements, statistics and report files live in `src.data.audit`; this module prepares the data
module of `cfg.data`, prints the table and records the run (experiment `audit`, tag audit_kind=data).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from omegaconf import DictConfig, open_dict

from src.data.audit import (
    AucRow,
    audit_table,
    console_table,
    flagged_features,
    measure_videos,
    write_reports,
)
from src.experiments.studies import model_audit
from src.experiments.studies.model_audit import AuditedRun, ModelAuditError, ModelAuditRow
from src.experiments.tracking import (
    Run,
    check_tracking_store,
    data_fingerprint,
    tracking_uri,
    unique_name,
)
from src.experiments.wiring import build_datamodule


def log_run(cfg, rows: list[AucRow], files: dict[str, Path], summary: dict) -> Run:
    """One run (experiment `audit`): the AUCs with their intervals as metrics, the flags, the files."""
    name = unique_name(f"audit-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = Run.start(cfg.logger, name=name, tags={"audit_kind": "data", "data": str(cfg.data.name)})
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


def run_audit(cfg) -> list[AucRow] | list[ModelAuditRow]:
    """Prepare the data module of ``cfg.data`` (generation and face-crop cache), measure, report; with
    ``cfg.run`` audit that evaluate run's model instead."""
    if cfg.get("run"):
        return run_model_audit(cfg)

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
    print(console_table(rows, band))
    flagged = flagged_features(rows)
    print(f"\nShortcut risks: {', '.join(flagged) if flagged else 'none'}  (files in {cfg.audit.output_dir})")
    summary = dict(datamodule.build_report.summary())
    summary = {f"data/{k}": v for k, v in summary.items() if isinstance(v, int | float)}
    summary["videos_measured"] = len(videos)
    if cfg.audit.mlflow:
        run = log_run(cfg, rows, files, summary)
        print(f"{run.name() or 'audit run'} ({run.id})\n{run.link()}" if run.is_mlflow else run.link())
    return rows


def run_model_audit(cfg: DictConfig, data_keys: list[str] | None = None) -> list[ModelAuditRow]:
    """Audit the evaluate run `cfg.run`: its scores against the features of its videos; print, write, log.
    `data_keys`: `data.<key>` paths whose values in `cfg` replace the run's (default: those typed)."""
    uri = tracking_uri(cfg)
    check_tracking_store(uri)
    audited = model_audit.load_run(uri, str(cfg.run))
    if data_keys is None:
        data_keys = model_audit.command_line_data_keys(str(audited.config.data.get("name")))
    with open_dict(cfg):
        cfg.data = model_audit.data_config(cfg, audited.config, data_keys)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    measured = measure_videos(datamodule, cfg.audit.frames_per_video, progress=True, only=set(audited.logits))
    videos = [v for v in measured if audited.labels.get(v.path) == v.label]
    if not videos:
        raise ModelAuditError(
            f"run={audited.id}: none of its {len(audited.logits)} scored videos is a video of {datamodule.root} "
            "with the same label; point data.root (data.<key>=) at the data it was evaluated on"
        )
    notes = []
    if len(videos) < len(audited.labels):
        notes.append(
            f"{len(audited.labels) - len(videos)} of the run's {len(audited.labels)} videos not audited "
            "(not in the data with the same label, not measurable, or without a finite logit)"
        )
    fingerprint = data_fingerprint(datamodule)
    if audited.tags.get("data_fingerprint") not in (None, fingerprint):
        notes.append(
            "the data's index fingerprint differs from the run's: the data changed since it was evaluated"
        )
    rows = model_audit.model_audit_table(
        videos, audited.logits, cfg.audit.bootstrap_resamples, cfg.audit.seed
    )
    tags = audited.tags
    title = (
        f"run {audited.name} ({audited.id}): {tags.get('model_title', tags.get('model', '?'))}, "
        f"{tags.get('weights', '?')} weights, {cfg.data.name} test, perturbation {tags.get('augment', '?')}; "
        f"{len(videos)} videos"
    )
    out_dir = Path(cfg.audit.output_dir) / f"model-{audited.id}"
    files = model_audit.write_reports(videos, audited.logits, rows, out_dir, title)
    risky = model_audit.risky_features(rows)
    print(f"\nShortcut audit of the model of {title}")
    print(model_audit.console_table(rows))
    for note in notes:
        print(f"Note: {note}")
    print(
        f"\nThe model follows: {', '.join(risky) if risky else 'none of these features'}  (files in {out_dir})"
    )
    if cfg.audit.mlflow:
        run = log_model_run(cfg, audited, rows, files, len(videos))
        print(f"{run.name() or 'audit run'} ({run.id})\n{run.link()}" if run.is_mlflow else run.link())
    return rows


def log_model_run(
    cfg: DictConfig, audited: AuditedRun, rows: list[ModelAuditRow], files: dict[str, Path], videos: int
):
    """A run of experiment `audit` tagged with the audited run: rho, half AUC and label AUC per feature
    (with `_ci_low`/`_ci_high`), the flags, the files."""
    name = unique_name(f"audit-model-{audited.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    keep = ("model", "weights", "augment", "fold", "seed")
    tags = {
        "audit_kind": "model",
        "audited_run": audited.id,
        "audited_run_name": audited.name,
        "data": str(cfg.data.name),
        **{k: audited.tags[k] for k in keep if k in audited.tags},
    }
    run = Run.start(cfg.logger, name=name, tags=tags)
    with run.state():
        run.log_config(cfg)
        metrics: dict[str, float] = {}
        for r in rows:
            estimates = {f"rho/{c}": r.rho[c] for c in model_audit.CLASSES.values()}
            estimates.update(
                {f"half_auc/{c}": r.half_auc[c] for c in model_audit.CLASSES.values()}, label_auc=r.label_auc
            )
            for prefix, e in estimates.items():
                if not math.isnan(e.value):
                    key = f"{prefix}/{r.feature}"
                    metrics.update({key: e.value, key + "_ci_low": e.low, key + "_ci_high": e.high})
        risky = model_audit.risky_features(rows)
        metrics["shortcut_risk_features"] = len(risky)
        metrics["videos_audited"] = videos
        run.log_metrics(metrics)
        run.set_tags({"shortcut_risks": ",".join(risky) or "none"})
        for file in files.values():
            run.log_file(file, "audit")
    return run


def main() -> None:
    import hydra

    from src.experiments import cli
    from src.experiments.config import CONFIG_DIR

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
    def entry(cfg: DictConfig) -> None:
        cli.task_wrapper(lambda cfg, runs: run_audit(cfg))(cfg)  # its runs: log_run, log_model_run

    cli.run(entry, task="audit")


if __name__ == "__main__":
    main()

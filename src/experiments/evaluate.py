"""What `python evaluate.py` runs: a model with its weights on the test list under a test-time
perturbation, logged as one MLflow run; or, with `video=<file>`, the score of a single video.

Scores are computed in fp32 and kept in float64 from the logits on, so the metrics recomputed from the
`video_scores.csv` artifact are exactly the logged ones.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from src.data.datamodule import build_datamodule
from src.experiments import plots
from src.experiments.config import ConfigError, check_config, tidy_output
from src.experiments.tracking import (
    build_logger,
    check_tracking_store,
    data_fingerprint,
    data_report_metrics,
    experiment_id,
    flat_params,
    log_dataset,
    run_name,
    run_state,
    run_tags,
    run_url,
    tracking_uri,
    unique_name,
    uses_mlflow,
    write_data_report,
)
from src.models.metrics import detection_metrics
from src.models.weights import Finetuned, Lineage, Provenance, WeightsNotFound, input_contract, weight_source

log = logging.getLogger(__name__)
METRICS = ("auc", "ap", "acc", "loss", "eer")
GALLERY_VIDEOS = 4  # worst false positives and false negatives each
GALLERY_FRAMES = 6


def evaluate(cfg: DictConfig) -> dict[str, float] | dict:
    check_config(cfg)
    tidy_output()
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("video") and cfg.get("videos"):
        raise ConfigError(f"video={cfg.video} and videos={cfg.videos}: give one (video= scores a single file, "
                          "videos= a folder, glob or list file)")
    if cfg.get("video"):
        return predict_video(cfg, Path(cfg.video))
    if cfg.get("videos"):
        return predict_videos(cfg)
    if uses_mlflow(cfg):
        check_tracking_store(tracking_uri(cfg))
    datamodule = build_datamodule(cfg.data)  # checks every data value before the run starts
    module, provenance = _model_with_weights(cfg)  # missing or unusable weights: no run is started
    logger = build_logger(cfg, tags=run_tags(cfg), run_name=run_name(cfg))
    if isinstance(logger, MLFlowLogger):
        record: _Record = _MlflowRecord(logger.experiment, logger.run_id)
        with run_state(record.client, record.run_id), _files_folder(cfg, temporary=True) as folder:
            metrics = _evaluate_into(record, cfg, datamodule, folder, module, provenance)
    else:  # another Lightning logger (its folder holds the files), or none (the output folder does)
        record = _LoggerRecord(logger)
        record.tags(run_tags(cfg))
        with _files_folder(cfg, temporary=False, logger=logger) as folder:
            metrics = _evaluate_into(record, cfg, datamodule, folder, module, provenance)
        record.finish()
    _print_summary(cfg, logger, metrics, folder)
    return metrics


@contextmanager
def _files_folder(cfg: DictConfig, temporary: bool, logger=None):
    """Where an evaluation's files go: the logger's own folder when it has one (CSVLogger), else
    `evaluation/` in the job's Hydra output folder (a subfolder: MLflow logs it whole, without Hydra's own
    files); outside Hydra a temporary folder, removed afterwards when `temporary` (MLflow keeps the files)."""
    from hydra.core.hydra_config import HydraConfig

    if logger is not None and getattr(logger, "log_dir", None):
        yield Path(logger.log_dir)
    elif HydraConfig.initialized():
        yield Path(HydraConfig.get().runtime.output_dir) / "evaluation"
    elif temporary:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
    else:
        yield Path(tempfile.mkdtemp(prefix=f"evaluate-{cfg.model.name}-"))


class _Record:
    """Where one evaluation goes: tags, params, metrics and a folder of files."""

    def tags(self, tags: dict[str, str]) -> None: ...
    def params(self, params: dict[str, str]) -> None: ...
    def metrics(self, metrics: dict[str, float]) -> None: ...
    def files(self, folder: Path) -> None: ...
    def dataset(self, cfg: DictConfig, datamodule) -> None: ...


class _MlflowRecord(_Record):
    """An MLflow run, written in batches through the client (one call per kind, not per value)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def tags(self, tags):
        self.client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])

    def params(self, params):
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])

    def metrics(self, metrics):
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()])

    def files(self, folder):
        self.client.log_artifacts(self.run_id, str(folder))

    def dataset(self, cfg, datamodule):
        log_dataset(self.client, self.run_id, cfg, datamodule, "test")


class _LoggerRecord(_Record):
    """Any other Lightning logger (e.g. CSVLogger: hparams.yaml, metrics.csv; files next to them), or none."""

    def __init__(self, logger):
        self.logger, self.hparams = logger, {}
        if logger is not None:
            logger.experiment  # noqa: B018 - creates its folder before our files go there (else it warns)

    def tags(self, tags):
        self.hparams.update({f"tags.{k}": v for k, v in tags.items()})

    def params(self, params):
        self.hparams.update(params)

    def metrics(self, metrics):
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=0)

    def finish(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams(self.hparams)
            self.logger.finalize("success")


def _evaluate_into(record: _Record, cfg: DictConfig, datamodule, folder: Path, module,
                   provenance: Provenance | None) -> dict[str, float]:
    """Score the test list into `record`; the files (scores, pictures, config, data report) go to `folder`.
    `provenance` is None for finetuned weights, which are chosen here, by the data's lineage."""
    record.params(flat_params(cfg))
    datamodule.prepare_data()
    datamodule.setup("test")
    fingerprint = data_fingerprint(datamodule)
    record.dataset(cfg, datamodule)
    if provenance is None:
        provenance = weight_source(cfg)(module, cfg, _lineage(cfg, fingerprint))
    record.tags({**({"data_fingerprint": fingerprint} if fingerprint else {}), **provenance.tags()})
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    outputs = trainer.predict(module, datamodule=datamodule)
    videos = torch.cat([o["video"] for o in outputs]).tolist()
    labels = torch.cat([o["label"] for o in outputs]).long().numpy()
    frame_logits = torch.cat([o["frame_logits"] for o in outputs]).double()
    video_logits = torch.cat([o["video_logit"] for o in outputs]).double()
    if module.input_kind == "frame":  # float64 from here on: p_fake in the CSV is exactly what was scored
        video_logits = module.video_logit_from_frames(frame_logits)
    p_fake = torch.sigmoid(video_logits).numpy()
    frame_probs = torch.sigmoid(frame_logits).numpy() if module.input_kind == "frame" else None

    records = [datamodule.splits["test"][v] for v in videos]
    groups = [r.identity for r in records]
    metrics = score(p_fake, labels, frame_probs, groups, seed=cfg.seed)
    metrics["data/scored_videos"] = float(len(records))
    folder.mkdir(parents=True, exist_ok=True)
    report = write_data_report(datamodule, folder)
    metrics.update(data_report_metrics(report))
    record.metrics(metrics)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_scores_csv(folder / "video_scores.csv", records, labels, video_logits.numpy(), p_fake, frame_probs)
    _draw_pictures(cfg, folder, metrics, p_fake, labels, records, videos, datamodule.predict_dataloader().dataset)
    record.files(folder)
    return metrics


def _draw_pictures(cfg: DictConfig, folder: Path, metrics: dict, p_fake, labels, records, videos, dataset) -> None:
    """ROC, precision-recall, confusion matrix and the worst-scored videos (crops as the model saw them)."""
    title = (f"{cfg.model.get('title') or cfg.model.name} ({cfg.weights.source} weights)\n"
             f"{cfg.data.name} test, perturbation: {cfg.augment.get('title') or cfg.augment.level}")
    interval = (metrics["test/video_auc_ci_low"], metrics["test/video_auc_ci_high"])
    plots.plot_roc(p_fake, labels, folder / "roc_curve.png", title, metrics["test/video_auc"], interval)
    plots.plot_precision_recall(p_fake, labels, folder / "precision_recall.png", title, metrics["test/video_ap"])
    plots.plot_confusion(p_fake, labels, folder / "confusion_matrix.png", title)
    strips = []
    for i, kind in plots.worst_videos(p_fake, labels, GALLERY_VIDEOS):
        pixels = np.asarray(dataset[videos[i]][0])
        picks = np.linspace(0, len(pixels) - 1, min(GALLERY_FRAMES, len(pixels))).round().astype(int)
        strips.append((pixels[picks], f"{kind}: P(fake) = {p_fake[i]:.3f}  {records[i].path}"))
    plots.plot_gallery(strips, folder / "worst_videos.png", f"Most confident mistakes of {title}".replace("\n", ", "))


def _model_with_weights(cfg: DictConfig):
    """The model, before the run and any data work, with its weights when they do not depend on the data
    (scratch, pretrained: a missing file fails here); finetuned weights are matched to the data's lineage
    later, but with no training run of this model at all there is nothing to score with, said here."""
    module = hydra.utils.instantiate(cfg.model)
    source = weight_source(cfg)
    if not isinstance(source, Finetuned):
        return module, source(module, cfg, _lineage(cfg, None))
    if not (source.path or source.run_id) and not source.candidates(cfg.model.name):
        raise WeightsNotFound(source.explain_missing([], source.requirements(_lineage(cfg, None))))
    return module, None


def _lineage(cfg: DictConfig, fingerprint: str | None) -> Lineage:
    return Lineage(str(cfg.model.name), str(cfg.data.name), int(cfg.data.fold), input_contract(cfg.model.input),
                   fingerprint)


def score(p_fake: np.ndarray, labels: np.ndarray, frame_probs: np.ndarray | None = None,
          groups: list[str] | None = None, seed: int = 0) -> dict[str, float]:
    """test/video_* metrics with their 95 % bootstrap intervals (test/video_<m>_ci_low/_ci_high), and
    test/frame_* for frame models."""
    from src.experiments.stats import bootstrap_intervals

    video = detection_metrics("test/video_")(torch.as_tensor(p_fake), torch.as_tensor(labels).long())
    metrics = {k: float(v) for k, v in video.items()}
    for name, (low, high) in bootstrap_intervals(p_fake, labels, groups, seed=seed).items():
        metrics[f"test/video_{name}_ci_low"], metrics[f"test/video_{name}_ci_high"] = float(low), float(high)
    if frame_probs is not None:
        frame_labels = np.repeat(labels[:, None], frame_probs.shape[1], axis=1)
        frame = detection_metrics("test/frame_")(torch.as_tensor(frame_probs.ravel()),
                                                 torch.as_tensor(frame_labels.ravel()).long())
        metrics.update({k: float(v) for k, v in frame.items()})
    return metrics


def write_scores_csv(path: Path, records, labels, logits, p_fake, frame_probs) -> None:
    """One row per scored video: path (relative to the dataset root), label (1 = fake), logit, p_fake,
    identity group, and the frames' P(fake); floats at full precision (repr round-trips exactly)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "logit", "p_fake", "group", "frame_p_fake"])
        for i, record in enumerate(records):
            frames = "" if frame_probs is None else " ".join(repr(float(p)) for p in frame_probs[i])
            writer.writerow([record.path, int(labels[i]), repr(float(logits[i])), repr(float(p_fake[i])),
                             record.identity, frames])


def _print_summary(cfg: DictConfig, logger, metrics: dict[str, float], folder: Path) -> None:
    def interval(m: str) -> str:
        return (f"{metrics[f'test/video_{m}']:#.4g} [{metrics[f'test/video_{m}_ci_low']:.3g}, "
                f"{metrics[f'test/video_{m}_ci_high']:.3g}]")

    if isinstance(logger, MLFlowLogger):
        run = logger.experiment.get_run(logger.run_id)
        head = f"evaluate run {run.info.run_name} ({run.info.run_id}) finished"
        where = f"  MLflow: {run_url(tracking_uri(cfg), run.info.experiment_id, run.info.run_id)}  (make ui)"
    else:
        head = "evaluation finished"
        where = f"  logged by {type(logger).__name__}" if logger is not None else "  not logged (logger=none)"
    print("\n".join([
        head,
        f"  test video AUC {interval('auc')}, AP {interval('ap')}, EER {interval('eer')} "
        f"on {int(metrics['data/scored_videos'])} videos",
        where,
        f"  output: {folder if folder.exists() else '(the files are in MLflow only)'}",
    ]))


# -- scoring video files ------------------------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
PREDICT_EXPERIMENT = "predict"


def resolve_videos(spec: str) -> list[Path]:
    """`videos=`: a folder (its video files, recursively), a glob pattern, or a list file (one path per
    line, relative to the list's folder; blank lines and # comments skipped), or a single video file."""
    import glob

    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        where = f"folder {path} (looked for {', '.join(VIDEO_SUFFIXES)})"
    elif any(c in spec for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        where = f"pattern {spec}"
    elif path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        found = [(path.parent / line).expanduser() for line in lines if line and not line.startswith("#")]
        where = f"list file {path}"
    elif path.exists():
        found, where = [path], str(path)
    else:
        raise FileNotFoundError(f"videos={spec}: no such folder, file or matching pattern")
    if not found:
        raise ValueError(f"videos={spec}: no video files in {where}")
    return found


def predict_files(cfg: DictConfig, videos: list[Path]) -> list[dict]:
    """Score video files with one start-up: through the same cache, dataset, transform and batch transfer
    as test evaluation. One row per input, failed ones included (with the reason)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg.data, "root"):  # prediction needs no dataset
        OmegaConf.update(cfg, "data.root", None)
    datamodule = build_datamodule(cfg.data)
    reports = datamodule.setup_predict(videos)
    module = hydra.utils.instantiate(cfg.model)
    provenance = weight_source(cfg)(module, cfg, _lineage(cfg, None))
    rows = [{"path": str(video), "p_fake": "", "logit": "", "frames": report.num_frames,
             "frames_with_face": report.num_detected, "fallback": _fallback(report), "error": report.reason if not report.ok else "",
             "frame_p_fake": []} for video, report in zip(videos, reports, strict=True)]
    if any(report.ok for report in reports):
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False,
                                          callbacks=[L.pytorch.callbacks.TQDMProgressBar()])
        for output in trainer.predict(module, datamodule=datamodule):
            frame_logits = output["frame_logits"].double()
            logits = (module.video_logit_from_frames(frame_logits) if module.input_kind == "frame"
                      else output["video_logit"].double())
            for position, logit, frames in zip(output["video"].tolist(), logits, frame_logits, strict=True):
                row = rows[position]
                row["logit"], row["p_fake"] = float(logit), float(torch.sigmoid(logit))
                row["frame_p_fake"] = torch.sigmoid(frames).tolist() if module.input_kind == "frame" else []
    for row in rows:
        row["weights"] = provenance.initial_weights
    return rows


def _fallback(report) -> str:
    if not report.ok:
        return ""
    if report.centre_fallback:
        return "centre crop (no face found)"
    return f"nearest box for {report.num_filled} frames" if report.num_filled else ""


PREDICTION_COLUMNS = ("path", "p_fake", "logit", "frames", "frames_with_face", "fallback", "error")


def predict_videos(cfg: DictConfig) -> list[dict]:
    """`evaluate.py videos=<folder|glob|list> [output=<csv>]`: a CSV row per video and a summary; logged
    to MLflow (experiment `predict`) unless logger=none."""
    from hydra.core.hydra_config import HydraConfig

    videos = resolve_videos(str(cfg.videos))
    output = Path(cfg.get("output") or (Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized()
                                         else Path.cwd()) / "predictions.csv").expanduser()
    _check_output(output)
    logged = uses_mlflow(cfg)
    if logged:
        check_tracking_store(tracking_uri(cfg))
    rows = predict_files(cfg, videos)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for row in rows:
            writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in PREDICTION_COLUMNS])
    scored = [r for r in rows if r["p_fake"] != ""]
    fake = sum(r["p_fake"] >= 0.5 for r in scored)
    nothing = None if scored else ValueError(
        f"none of the {len(rows)} videos of videos={cfg.videos} could be scored; the reasons are in {output} "
        f"(first: {rows[0]['error']})")
    scored_line = (f"Scored {len(scored)} of {len(rows)} videos with {cfg.model.name} ({rows[0]['weights']}): "
                   f"{fake} look fake (P(fake) >= 0.5), {len(scored) - fake} real"
                   + (f"; {len(rows) - len(scored)} could not be scored (see the error column)"
                      if len(scored) < len(rows) else ""))
    lines = [scored_line, f"Wrote {output}"]
    if logged:
        uri = tracking_uri(cfg)
        client = mlflow.MlflowClient(uri)
        experiment = experiment_id(client, uri, PREDICT_EXPERIMENT)
        name = unique_name(f"predict-{cfg.model.name}-{cfg.weights.source}-{len(rows)}-videos")
        run = client.create_run(experiment, tags={**run_tags(cfg), "videos": str(cfg.videos)[:5000]}, run_name=name)
        with run_state(client, run.info.run_id):
            client.log_artifact(run.info.run_id, str(output))
            client.log_metric(run.info.run_id, "predict/videos", len(rows))
            client.log_metric(run.info.run_id, "predict/scored_videos", len(scored))
            client.log_metric(run.info.run_id, "predict/fake_videos", fake)
            if nothing:
                print("\n".join(lines))
                raise nothing  # the run ends FAILED with the reason; the CSV stays
        lines = [f"prediction run {name} ({run.info.run_id}) finished", f"  {scored_line}",
                 f"  MLflow: {run_url(uri, run.info.experiment_id, run.info.run_id)}  (make ui)",
                 f"  output: {output}"]
    print("\n".join(lines))
    if nothing:
        raise nothing
    return rows


def _check_output(output: Path) -> None:
    """Before any scoring: `output=` must name a CSV file that can be written."""
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder: give a file name, e.g. output={output / 'predictions.csv'}")
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"output={output}: {blocker} is a file, not a folder")
    existing = next(p for p in (output.parent, *output.parents) if p.exists())
    import os

    if not os.access(existing, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ConfigError(f"output={output} is not writable: choose another path")


def predict_video(cfg: DictConfig, video: Path) -> dict:
    """`evaluate.py video=<file>`: the score of one video, printed with its per-frame scores."""
    (row,) = predict_files(cfg, [video])
    if row["error"]:
        raise ValueError(f"cannot score {row['error']}")  # the reason starts with the path
    print(f"{video}: P(fake) = {row['p_fake']:.4f}  ({cfg.model.name}, {row['weights']})")
    print(f"faces detected in {row['frames_with_face']} of {row['frames']} frames"
          + (f"; {row['fallback']}" if row["fallback"] else ""))
    if row["frame_p_fake"]:
        print("per-frame P(fake):", " ".join(f"{p:.3f}" for p in row["frame_p_fake"]))
    return row

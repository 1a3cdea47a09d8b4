"""What `python evaluate.py` runs: a model with its weights on the test list under a test-time
perturbation, recorded as one run.

Scores are computed in fp32 and kept in float64 from the logits on, so the metrics recomputed from the
`video_scores.csv` artifact are exactly the logged ones.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from src.experiments import plots
from src.experiments.config import check_config
from src.experiments.finetuned import Finetuned
from src.experiments.runtime import tidy_output
from src.experiments.tracking import (
    Run,
    check_tracking_store,
    data_fingerprint,
    data_report_metrics,
    flat_params,
    run_name,
    run_tags,
    tracking_uri,
    uses_mlflow,
)
from src.experiments.wiring import build_datamodule, build_model, build_weights, lineage
from src.models.metrics import detection_metrics
from src.models.weights import WeightsNotFound
from src.utils.stats import bootstrap_intervals

log = logging.getLogger(__name__)
GALLERY_VIDEOS = 4  # worst false positives and false negatives each
GALLERY_FRAMES = 6


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score the test list of `cfg.data` with `cfg.model` and `cfg.weights` under `cfg.augment`."""
    check_config(cfg)
    tidy_output()
    L.seed_everything(cfg.seed, workers=True)
    if uses_mlflow(cfg.get("logger")):
        check_tracking_store(tracking_uri(cfg))
    datamodule = build_datamodule(cfg)  # checks every data value before the run starts
    module, provenance = _model_with_weights(cfg)  # missing or unusable weights: no run is started
    run = Run.start(cfg.get("logger"), name=run_name(cfg), tags=run_tags(cfg))
    with run.state(), run.files("evaluation") as folder:
        metrics = _evaluate_into(run, cfg, datamodule, folder, module, provenance)
    output = folder if folder.exists() else "(the files are in MLflow only)"

    def interval(m: str) -> str:
        return (
            f"{metrics[f'test/video_{m}']:#.4g} [{metrics[f'test/video_{m}_ci_low']:.3g}, "
            f"{metrics[f'test/video_{m}_ci_high']:.3g}]"
        )

    run.print_summary(
        "evaluate",
        [
            f"test video AUC {interval('auc')}, AP {interval('ap')}, EER {interval('eer')} "
            f"on {int(metrics['data/scored_videos'])} videos"
        ],
        {"output": output},
    )
    return metrics


def _evaluate_into(
    run: Run, cfg: DictConfig, datamodule, folder: Path, module, provenance
) -> dict[str, float]:
    """Score the test list into `run`; the files (scores, pictures, config, data report) go to `folder`.
    `provenance` is None for finetuned weights, which are chosen here, by the data's lineage."""
    run.log_params(flat_params(cfg))
    datamodule.prepare_data()
    datamodule.setup("test")
    fingerprint = data_fingerprint(datamodule)
    root = getattr(datamodule.index, "root", None) or cfg.data.get("root") or "-"
    run.log_dataset(f"{cfg.data.name}-fold{cfg.data.fold}", fingerprint or "unknown", str(root), "test")
    if provenance is None:
        provenance = build_weights(cfg)(module, lineage(cfg, fingerprint))
    run.set_tags({**({"data_fingerprint": fingerprint} if fingerprint else {}), **provenance.tags()})
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
    report = datamodule.data_report()
    (folder / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    metrics.update(data_report_metrics(report))
    run.log_metrics(metrics)
    run.log_config(cfg)
    write_scores_csv(folder / "video_scores.csv", records, labels, video_logits.numpy(), p_fake, frame_probs)
    _draw_pictures(
        cfg, folder, metrics, p_fake, labels, records, videos, datamodule.predict_dataloader().dataset
    )
    return metrics


def _draw_pictures(
    cfg: DictConfig, folder: Path, metrics: dict, p_fake, labels, records, videos, dataset
) -> None:
    """ROC, precision-recall, confusion matrix and the worst-scored videos (crops as the model saw them)."""
    title = (
        f"{cfg.model.get('title') or cfg.model.name} ({cfg.weights.source} weights)\n"
        f"{cfg.data.name} test, perturbation: {cfg.augment.get('title') or cfg.augment.level}"
    )
    interval = (metrics["test/video_auc_ci_low"], metrics["test/video_auc_ci_high"])
    plots.plot_roc(p_fake, labels, folder / "roc_curve.png", title, metrics["test/video_auc"], interval)
    plots.plot_precision_recall(
        p_fake, labels, folder / "precision_recall.png", title, metrics["test/video_ap"]
    )
    plots.plot_confusion(p_fake, labels, folder / "confusion_matrix.png", title)
    strips = []
    for i, kind in plots.worst_videos(p_fake, labels, GALLERY_VIDEOS):
        pixels = np.asarray(dataset[videos[i]][0])
        picks = np.linspace(0, len(pixels) - 1, min(GALLERY_FRAMES, len(pixels))).round().astype(int)
        strips.append((pixels[picks], f"{kind}: P(fake) = {p_fake[i]:.3f}  {records[i].path}"))
    plots.plot_gallery(
        strips, folder / "worst_videos.png", f"Most confident mistakes of {title}".replace("\n", ", ")
    )


def _model_with_weights(cfg: DictConfig):
    """The model, before the run and any data work, with its weights when they do not depend on the data
    (scratch, pretrained: a missing file fails here); finetuned weights are matched to the data's lineage
    later, but with no training run of this model at all there is nothing to score with, said here."""
    module = build_model(cfg)
    source = build_weights(cfg)
    if not isinstance(source, Finetuned):
        return module, source(module)
    if not (source.path or source.run_id) and not source.candidates(cfg.model.name):
        raise WeightsNotFound(source.explain_missing([], source.requirements(lineage(cfg))))
    return module, None


def score(
    p_fake: np.ndarray,
    labels: np.ndarray,
    frame_probs: np.ndarray | None = None,
    groups: list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """test/video_* metrics with their 95 % bootstrap intervals (test/video_<m>_ci_low/_ci_high), and
    test/frame_* for frame models."""
    video = detection_metrics("test/video_")(torch.as_tensor(p_fake), torch.as_tensor(labels).long())
    metrics = {k: float(v) for k, v in video.items()}
    for name, (low, high) in bootstrap_intervals(p_fake, labels, groups, seed=seed).items():
        metrics[f"test/video_{name}_ci_low"], metrics[f"test/video_{name}_ci_high"] = float(low), float(high)
    if frame_probs is not None:
        frame_labels = np.repeat(labels[:, None], frame_probs.shape[1], axis=1)
        frame = detection_metrics("test/frame_")(
            torch.as_tensor(frame_probs.ravel()), torch.as_tensor(frame_labels.ravel()).long()
        )
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
            writer.writerow(
                [
                    record.path,
                    int(labels[i]),
                    repr(float(logits[i])),
                    repr(float(p_fake[i])),
                    record.identity,
                    frames,
                ]
            )

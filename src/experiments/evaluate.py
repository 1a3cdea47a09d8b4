"""What `python evaluate.py` runs: a model with its weights on the test list under a test-time
perturbation, recorded as one run.

Scores are computed in fp32 and kept in float64 from the logits on, so the metrics recomputed from the
`video_scores.csv` artifact are exactly the logged ones.

Besides the ranking metrics, what a deployment needs: calibration (`test/video_ece`, `reliability.png`),
detection at a low false-alarm rate (`test/video_tpr_fpr01`, `test/video_tpr_fpr05`), and a decision
threshold chosen where a deployment could choose it, on the validation split (`val/video_threshold`: the
EER point of the validation videos: for finetuned weights the one their training recorded in the checkpoint,
otherwise the fold's unperturbed validation videos scored here with the same weights; absent, and said so,
when there is no validation split with both classes), with the test accuracy at it
(`test/video_acc_val_threshold`) and each video's decision in `video_scores.csv`. Per-subset metrics
(`test/subset/...`) come from `src.experiments.evaluation.subsets`.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from src.experiments.cli import task_wrapper
from src.experiments.evaluation import explain, plots, subsets
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
from src.experiments.wiring import build_datamodule, build_model, load_weights
from src.models.metrics import ECE_BINS, detection_metrics, expected_calibration_error
from src.utils.stats import (
    FPR_TARGETS,
    accuracy_at_threshold,
    bootstrap_intervals,
    decisions,
    eer_threshold,
    video_metrics,
)

log = logging.getLogger(__name__)
GALLERY_VIDEOS = 4  # worst false positives and false negatives each
GALLERY_FRAMES = 6


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score the test list of `cfg.data` with `cfg.model` and `cfg.weights` under `cfg.augment`."""
    L.seed_everything(cfg.seed, workers=True)
    if uses_mlflow(cfg.get("logger")):
        check_tracking_store(tracking_uri(cfg))
    datamodule = build_datamodule(cfg)  # checks every data value before the run starts
    module = build_model(cfg)
    provenance = load_weights(cfg, module, datamodule)  # missing or unusable weights: no run is started
    run = Run.start(cfg.get("logger"), name=run_name(cfg), tags=run_tags(cfg))
    with run.state(), run.files("evaluation") as folder:
        metrics, threshold_source = _evaluate_into(run, cfg, datamodule, folder, module, provenance)
    output = folder if folder.exists() else "(the files are in MLflow only)"

    def interval(m: str) -> str:
        return (
            f"{metrics[f'test/video_{m}']:#.4g} [{metrics[f'test/video_{m}_ci_low']:.3g}, "
            f"{metrics[f'test/video_{m}_ci_high']:.3g}]"
        )

    if "val/video_threshold" in metrics:
        decision = (
            f"decision threshold {metrics['val/video_threshold']:.4g} ({threshold_source}): test accuracy "
            f"{metrics['test/video_acc_val_threshold']:.3f}"
        )
    else:
        decision = f"no decision threshold, val/video_threshold not logged: {threshold_source}"
    run.print_summary(
        "evaluate",
        [
            f"test video AUC {interval('auc')}, AP {interval('ap')}, EER {interval('eer')} "
            f"on {int(metrics['data/scored_videos'])} videos",
            f"TPR at 1 % FPR {interval('tpr_fpr01')}, at 5 % FPR {interval('tpr_fpr05')}; "
            f"ECE {metrics['test/video_ece']:.3f}",
            decision,
        ],
        {"output": output},
    )
    return metrics


@dataclass
class SplitScores:
    """What trainer.predict returned for one split, in the order scored, in float64 from the logits on."""

    records: list
    videos: list[int]
    labels: np.ndarray
    video_logits: np.ndarray
    p_fake: np.ndarray
    frame_probs: np.ndarray | None


def split_scores(outputs, module, split_records) -> SplitScores:
    videos = torch.cat([o["video"] for o in outputs]).tolist()
    labels = torch.cat([o["label"] for o in outputs]).long().numpy()
    frame_logits = torch.cat([o["frame_logits"] for o in outputs]).double()
    video_logits = torch.cat([o["video_logit"] for o in outputs]).double()
    if module.input_kind == "frame":  # float64 from here on: p_fake in the CSV is exactly what was scored
        video_logits = module.video_logit_from_frames(frame_logits)
    frame_probs = torch.sigmoid(frame_logits).numpy() if module.input_kind == "frame" else None
    return SplitScores(
        [split_records[v] for v in videos],
        videos,
        labels,
        video_logits.numpy(),
        torch.sigmoid(video_logits).numpy(),
        frame_probs,
    )


class _ValidationSplit(L.LightningDataModule):
    """The validation split of a data module, unperturbed, as what trainer.predict scores (with the data
    module's own batch transfer, which normalizes the pixels)."""

    def __init__(self, datamodule):
        super().__init__()
        self.source = datamodule

    def predict_dataloader(self):
        return self.source.val_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.source.on_after_batch_transfer(batch, dataloader_idx)


def _validation_threshold(cfg: DictConfig, trainer, module, datamodule) -> tuple[float | None, str]:
    """(threshold, where it comes from): for finetuned weights, the threshold their training recorded in the
    checkpoint (the EER point of the selected epoch's validation videos: the training dataset's, also in a
    cross-dataset evaluation); otherwise the EER point of the fold's validation videos, scored without the
    test-time perturbation (a deployment calibrates on its clean held-out data; the perturbation stands for
    what it meets later); (None, why) when the data has no validation split with both classes."""
    recorded = getattr(module, "validation_metrics", {}).get("val/video_threshold")
    if cfg.weights.source == "finetuned" and recorded is not None:  # the training's own validation chose it
        return float(recorded), (
            "the EER point of the selected epoch's validation videos, recorded in the checkpoint by its "
            "training run (its dataset and fold)"
        )
    val = datamodule.splits.get("val") or []
    real = sum(r.label == 0 for r in val)
    fake = len(val) - real
    if not (real and fake):
        return None, (
            f"the {cfg.data.name} data has no validation split with both classes ({real} real, {fake} fake "
            "validation videos)"
        )
    scored = split_scores(trainer.predict(module, datamodule=_ValidationSplit(datamodule)), module, val)
    source = (
        f"the EER point of the {len(val)} unperturbed validation videos of {cfg.data.name} fold "
        f"{cfg.data.fold}: {real} real, {fake} fake"
    )
    return eer_threshold(scored.p_fake, scored.labels), source


def _evaluate_into(
    run: Run, cfg: DictConfig, datamodule, folder: Path, module, provenance
) -> tuple[dict[str, float], str]:
    """Score the test list into `run`; the files (scores, pictures, config, data report) go to `folder`.
    Returns the metrics and where the validation threshold comes from (or why there is none)."""
    run.log_params(flat_params(cfg))
    datamodule.prepare_data()
    datamodule.setup("test")
    fingerprint = data_fingerprint(datamodule)
    root = getattr(datamodule.index, "root", None) or cfg.data.get("root") or "-"
    run.log_dataset(f"{cfg.data.name}-fold{cfg.data.fold}", fingerprint or "unknown", str(root), "test")
    run.set_tags({**({"data_fingerprint": fingerprint} if fingerprint else {}), **provenance.tags()})
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    test = split_scores(trainer.predict(module, datamodule=datamodule), module, datamodule.splits["test"])
    threshold, threshold_source = _validation_threshold(cfg, trainer, module, datamodule)
    run.set_tags({"val_threshold_source": threshold_source})

    p_fake, labels, records = test.p_fake, test.labels, test.records
    groups = [r.identity for r in records]
    metrics = score(p_fake, labels, test.frame_probs, groups, seed=cfg.seed)
    if threshold is not None:
        metrics["val/video_threshold"] = threshold
        metrics["test/video_acc_val_threshold"] = accuracy_at_threshold(p_fake, labels, threshold)
    columns = subsets.groupings(records, datamodule)
    metrics.update(subsets.subset_scores(p_fake, labels, columns, groups, threshold, seed=cfg.seed))
    metrics["data/scored_videos"] = float(len(records))
    folder.mkdir(parents=True, exist_ok=True)
    report = datamodule.data_report()
    (folder / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    metrics.update(data_report_metrics(report))
    run.log_metrics(metrics)
    run.log_config(cfg)
    write_scores_csv(
        folder / "video_scores.csv", records, labels, test.video_logits, p_fake, test.frame_probs, threshold
    )
    dataset = datamodule.predict_dataloader().dataset
    _draw_pictures(cfg, folder, metrics, p_fake, labels, records, test.videos, dataset)
    # where the model looked: class-activation maps over the crops of its worst mistakes and a few hits
    explain.write_explanations(
        module,
        datamodule,
        p_fake,
        labels,
        [r.path for r in records],
        lambda i: np.asarray(dataset[test.videos[i]][0]),
        folder / "explanations.png",
        f"{cfg.model.get('title') or cfg.model.name} ({cfg.weights.source} weights)",
        device=trainer.strategy.root_device,
    )
    return metrics, threshold_source


def _draw_pictures(
    cfg: DictConfig, folder: Path, metrics: dict, p_fake, labels, records, videos, dataset
) -> None:
    """ROC, precision-recall, confusion matrix, reliability diagram and the worst-scored videos (crops as
    the model saw them)."""
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
    plots.plot_reliability(
        p_fake, labels, folder / "reliability.png", title, metrics["test/video_ece"], ECE_BINS
    )
    strips = []
    for i, kind in plots.worst_videos(p_fake, labels, GALLERY_VIDEOS):
        pixels = np.asarray(dataset[videos[i]][0])
        picks = np.linspace(0, len(pixels) - 1, min(GALLERY_FRAMES, len(pixels))).round().astype(int)
        strips.append((pixels[picks], f"{kind}: P(fake) = {p_fake[i]:.3f}  {records[i].path}"))
    plots.plot_gallery(
        strips, folder / "worst_videos.png", f"Most confident mistakes of {title}".replace("\n", ", ")
    )


def score(
    p_fake: np.ndarray,
    labels: np.ndarray,
    frame_probs: np.ndarray | None = None,
    groups: list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """test/video_* metrics with their 95 % bootstrap intervals (test/video_<m>_ci_low/_ci_high), the
    calibration error test/video_ece, and test/frame_* for frame models (the frame AUC's interval resamples
    whole videos). The TPRs at fixed FPRs are
    `stats.video_metrics`' (torchmetrics has no TPR at a fixed FPR), the others torchmetrics'."""
    video = detection_metrics("test/video_")(torch.as_tensor(p_fake), torch.as_tensor(labels).long())
    metrics = {k: float(v) for k, v in video.items()}
    operating = video_metrics(p_fake, labels)
    metrics.update({f"test/video_{name}": operating[name] for name in FPR_TARGETS})
    metrics["test/video_ece"] = expected_calibration_error(p_fake, labels)
    for name, (low, high) in bootstrap_intervals(p_fake, labels, groups, seed=seed).items():
        metrics[f"test/video_{name}_ci_low"], metrics[f"test/video_{name}_ci_high"] = float(low), float(high)
    if frame_probs is not None:
        frame_labels = np.repeat(labels[:, None], frame_probs.shape[1], axis=1)
        frame = detection_metrics("test/frame_")(
            torch.as_tensor(frame_probs.ravel()), torch.as_tensor(frame_labels.ravel()).long()
        )
        metrics.update({k: float(v) for k, v in frame.items()})
        # frames of one video are not independent: whole videos (or identity groups) are resampled
        units = [g or f"video {i}" for i, g in enumerate(groups or [""] * len(labels))]
        frame_groups = np.repeat(np.asarray(units, dtype=object), frame_probs.shape[1])
        low, high = bootstrap_intervals(frame_probs.ravel(), frame_labels.ravel(), frame_groups, seed=seed)[
            "auc"
        ]
        metrics["test/frame_auc_ci_low"], metrics["test/frame_auc_ci_high"] = float(low), float(high)
    return metrics


def write_scores_csv(path: Path, records, labels, logits, p_fake, frame_probs, threshold=None) -> None:
    """One row per scored video: path (relative to the dataset root), label (1 = fake), logit, p_fake,
    identity group, the frames' P(fake), and decision_val_threshold (1 = fake: p_fake >= val/video_threshold;
    empty without a threshold); floats at full precision (repr round-trips exactly)."""
    called = decisions(p_fake, threshold) if threshold is not None else None
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "label", "logit", "p_fake", "group", "frame_p_fake", "decision_val_threshold"]
        )
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
                    "" if called is None else int(called[i]),
                ]
            )

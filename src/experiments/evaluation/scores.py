"""An evaluation's numbers: the scores of a split, the test metrics with their intervals, the validation
threshold, and the per-video CSV.

Scores are computed in fp32 and kept in float64 from the logits on, so the metrics recomputed from the
`video_scores.csv` artifact are exactly the logged ones.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from src.models.metrics import detection_metrics, expected_calibration_error
from src.utils.stats import FPR_TARGETS, bootstrap_intervals, decisions, eer_threshold, video_metrics


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


class ValidationSplit(L.LightningDataModule):
    """The validation split of a data module, unperturbed, as what trainer.predict scores (with the data
    module's own batch transfer, which normalizes the pixels)."""

    def __init__(self, datamodule):
        super().__init__()
        self.source = datamodule

    def predict_dataloader(self):
        return self.source.val_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.source.on_after_batch_transfer(batch, dataloader_idx)


def validation_threshold(cfg, trainer, module, datamodule) -> tuple[float | None, str]:
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
    scored = split_scores(trainer.predict(module, datamodule=ValidationSplit(datamodule)), module, val)
    source = (
        f"the EER point of the {len(val)} unperturbed validation videos of {cfg.data.name} fold "
        f"{cfg.data.fold}: {real} real, {fake} fake"
    )
    return eer_threshold(scored.p_fake, scored.labels), source


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

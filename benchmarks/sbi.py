"""Self-Blended Images on the embedded set (issue 23.2): the test video AUC of detectors trained on real videos
only (`train_augment=sbi data.train_classes=real`, src/data/transforms/sbi.py) against the same detectors trained the
default way, on real and fake videos (`train_augment=weak`).

Every run goes through the framework as train.py and evaluate.py run it (`src.experiments.train.train`,
`src.experiments.evaluate.evaluate`, configs composed from conf/): the epoch is selected on the validation
videos only (ModelCheckpoint on val/video_auc_then_loss; validation keeps its fakes, which the SBI model
never trains on), then the selected checkpoint scores the official test list in fp32, with the 95 % identity
bootstrap interval evaluate.py logs. The paired bootstrap (`src.utils.stats.paired_difference`, the same
resampled test videos for both) says whether SBI and fake-trained differ beyond noise.

All runs crop with MTCNN (`data.face_detector=mtcnn`): it stores the five landmarks SBI's mask is built from
(the embedded set's default, Haar, has none, and SBI would fall back to an ellipse); the fake-trained runs
use the same crops, so only the training differs.
"""

from __future__ import annotations

import csv
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Measurement, Plan, compose, fresh_dir, release, rnd
from src.experiments.config import PROJECT_ROOT

SHARED_WEIGHTS = PROJECT_ROOT.parent / "shared" / "mesonet" / "weights"
GOAL = 0.75  # issue 23: test video AUC from real videos only
DETECTOR = "data.face_detector=mtcnn"
# fp32 training: on CPUs without AVX-512 BF16 (this machine's AMD EPYC) bf16 autocast was 4x slower than fp32
# (MesoInception4, batch 32: 7.3 vs 1.8 s per step, by hand); the same for every run, so only speed changes
PRECISION = "trainer.precision=32-true"
TORCH_THREADS = 1  # on two cores shared with other jobs one thread stepped 2-3x faster than two (by hand)
VARIANTS = {  # name: (title, overrides)
    "sbi": ("real videos only, train_augment=sbi", ("train_augment=sbi", "data.train_classes=real")),
    "fakes": ("real and fake videos, train_augment=weak (default)", ()),
}


@dataclass(frozen=True)
class ModelPlan:
    """One detector of the comparison and how long it trains (the same for both variants)."""

    title: str
    overrides: tuple[str, ...]
    epochs: int
    train_frames: int  # data.train_frames_per_video
    why: str  # why these sizes


def model_plans(weights_dir: Path | None) -> dict[str, ModelPlan]:
    """MesoInception4 from its original weights when they are at hand (else from scratch), Xception from
    scratch unless timm's cache holds its ImageNet weights (this machine is offline)."""
    from src.models.nets.timm_backbones import timm_weights_origin

    meso_weights = "weights=pretrained" if weights_dir is not None else "weights=scratch"
    xception_cached = timm_weights_origin("legacy_xception.tf_in1k").cached
    return {
        "mesonet": ModelPlan(
            "MesoInception4",
            ("model=mesonet", meso_weights),
            epochs=8,
            train_frames=8,
            why="8 epochs x 8 random cached frames per video (the set's default is 20 x 16: a fifth of the "
            "steps, to fit four runs in about 35 minutes on two shared cores)",
        ),
        "xception": ModelPlan(
            "Xception (timm legacy_xception)",
            (
                "model=xception",
                "weights=pretrained" if xception_cached else "weights=scratch",
                "model.input.size=128",  # fully convolutional with global pooling: any size >= 32 works
            ),
            epochs=5,
            train_frames=4,
            why="input 128 px instead of 299 (5.4x fewer pixels; the net pools globally, so the size is free), "
            "5 epochs x 4 random cached frames per video (default 20 x 16): at 299 px and 16 frames one epoch "
            "of the fake-trained run alone would take about half an hour in fp32 here"
            + (
                ""
                if xception_cached
                else "; no ImageNet weights: timm's cache has none and this machine is offline"
            ),
        ),
    }


def _per_epoch(log_dir: Path, metric: str) -> list[float]:
    """One logged metric per epoch from the CSVLogger's metrics.csv (logger=csv)."""
    files = sorted(log_dir.glob("train/version_*/metrics.csv"))
    if not files:
        return []
    with files[-1].open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(metric)]
    return [round(float(r[metric]), 4) for r in rows]


def _video_scores(log_dir: Path) -> dict[str, tuple[int, float, str]]:
    """path -> (label, p_fake, identity group) from evaluate.py's video_scores.csv."""
    files = sorted(log_dir.glob("evaluate/version_*/video_scores.csv"))
    if not files:
        raise FileNotFoundError(f"evaluate.py wrote no video_scores.csv under {log_dir}")
    with files[-1].open() as handle:
        return {r["path"]: (int(r["label"]), float(r["p_fake"]), r["group"]) for r in csv.DictReader(handle)}


def landmark_coverage(cfg) -> dict:
    """Share of the cached frames of the training split's real videos that carry the five landmarks (the
    others get SBI's ellipse fallback)."""
    from src.experiments.wiring import build_datamodule

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.train_dataset()
    found = total = 0
    for i, record in enumerate(dataset.records):
        if record.label == 0:
            marks = dataset.landmarks(i)
            found += int(np.isfinite(marks).all(axis=(1, 2)).sum())
            total += len(marks)
    counts = datamodule.class_counts()
    del datamodule, dataset
    release()
    return {"frames": total, "with_landmarks": found, "share": found / total if total else math.nan, **counts}


def train_and_test(common: list[str], model: ModelPlan, variant: str, folder: Path) -> dict:
    """train.py then evaluate.py (in this process) of one detector and variant; their numbers."""
    from src.experiments.evaluate import evaluate
    from src.experiments.train import train

    logs = folder / "logs"
    runs = [
        *common,
        *model.overrides,
        f"trainer.max_epochs={model.epochs}",
        f"logger.save_dir={logs}",
    ]
    train_cfg = compose(
        [
            *runs,
            *VARIANTS[variant][1],
            PRECISION,
            f"data.train_frames_per_video={model.train_frames}",
            f"paths.checkpoint_dir={folder / 'checkpoints'}",
            "test_after_fit=false",  # evaluate.py scores the test list, in fp32, with intervals
            "callbacks.progress_bar=null",
        ]
    )
    start = time.perf_counter()
    fitted = train(train_cfg)
    train_s = time.perf_counter() - start
    best = fitted.get("best_checkpoint")
    if not best:
        raise RuntimeError(f"{model.title} ({variant}): training selected no checkpoint")
    weights = [o for o in model.overrides if not o.startswith("weights=")]
    eval_cfg = compose(
        [*common, *weights, f"logger.save_dir={logs}", "weights=finetuned", f"weights.path={best}"],
        "evaluate",
    )
    start = time.perf_counter()
    metrics = evaluate(eval_cfg)
    evaluate_s = time.perf_counter() - start
    val_auc = _per_epoch(logs, "val/video_auc")
    release()
    return {
        "test_video_auc": metrics["test/video_auc"],
        "ci": (metrics["test/video_auc_ci_low"], metrics["test/video_auc_ci_high"]),
        "test_video_ap": metrics["test/video_ap"],
        "test_video_eer": metrics["test/video_eer"],
        "scored_videos": int(metrics["data/scored_videos"]),
        "best_val_video_auc": fitted.get("best_val_video_auc"),
        "selected_epoch": Path(best).stem,
        "val_video_auc_per_epoch": val_auc,
        "train_loss_per_epoch": _per_epoch(logs, "train/loss_epoch"),
        "train_s": round(train_s, 1),
        "evaluate_s": round(evaluate_s, 1),
        "scores": _video_scores(logs),
    }


def _paired(a: dict, b: dict, seed: int) -> dict:
    """AUC(a) - AUC(b) on the same test videos, paired identity bootstrap."""
    from src.utils.stats import paired_difference

    paths = sorted(a["scores"])
    if sorted(b["scores"]) != paths:
        raise RuntimeError("the two runs scored different test videos: no paired comparison")
    labels = [a["scores"][p][0] for p in paths]
    groups = [a["scores"][p][2] for p in paths]
    return paired_difference(
        [a["scores"][p][1] for p in paths], [b["scores"][p][1] for p in paths], labels, groups, seed=seed
    )


def bench_sbi(plan: Plan, work: Path, overrides: list[str]) -> list[Measurement]:
    if "DEEPFAKE_WEIGHTS_DIR" not in os.environ and SHARED_WEIGHTS.is_dir():
        os.environ["DEEPFAKE_WEIGHTS_DIR"] = str(SHARED_WEIGHTS)  # MesoNet's original weights, offline
    base = compose(overrides)
    weights_dir = Path(base.paths.weights_dir)
    meso_file = weights_dir / base.model.pretrained.file
    plans = model_plans(weights_dir if meso_file.is_file() else None)
    folder = fresh_dir(work / "scratch" / "sbi")
    common = [*overrides, DETECTOR, "logger=csv"]
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        return _bench(plans, folder, common, int(base.seed))
    finally:
        torch.set_num_threads(threads)


def _bench(plans: dict[str, ModelPlan], folder: Path, common: list[str], seed: int) -> list[Measurement]:
    from src.experiments.wiring import build_datamodule

    start = time.perf_counter()  # the MTCNN crops, built once for all runs (reused when already cached)
    cfg = compose(common)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    build_s = time.perf_counter() - start
    detection = datamodule.build_report.summary()
    del datamodule
    real_only = landmark_coverage(compose([*common, *VARIANTS["sbi"][1]]))
    counts = landmark_coverage(cfg)
    data_note = (
        f"data: the embedded set (data=synthetic, {detection['videos']} videos), fold {cfg.data.fold} of "
        f"{cfg.data.folds}: train "
        f"{counts['train_real']} real + {counts['train_fake']} fake videos (SBI trains on the "
        f"{real_only['train_real']} real ones, each crop paired with its self-blend), val {counts['val_real']} "
        f"real + {counts['val_fake']} fake (epoch selection), official test list {counts['test_real']} real + "
        f"{counts['test_fake']} fake; MTCNN crops for every run ({detection['frames']} frames, detection rate "
        f"{detection['frame_detection_rate']:.3f}, cache {'build' if detection['built'] else 'check'} "
        f"{build_s:.0f} s); landmarks on {real_only['with_landmarks']}/{real_only['frames']} cached frames of "
        f"the real training videos (the rest: SBI's ellipse fallback); {PRECISION} for training, "
        f"torch threads {TORCH_THREADS}"
    )
    rows: list[Measurement] = []
    for name, model in plans.items():
        results = {}
        for variant in VARIANTS:
            title = f"SBI: test video AUC, {model.title}, trained on {VARIANTS[variant][0]}"
            try:
                results[variant] = result = train_and_test(
                    common, model, variant, folder / f"{name}-{variant}"
                )
            except Exception as error:  # one failed run must not lose the others' numbers
                traceback.print_exc()
                message = f"{type(error).__name__}: {error}"[:500]
                rows.append(
                    Measurement(f"{title}: FAILED", None, "", None, None, "runs", False, message, "sbi")
                )
                continue
            noted = any(r.notes.endswith(data_note) for r in rows)  # the data, once: on the first result
            rows.append(_auc_row(title, model, variant, result, "" if noted else f"; {data_note}"))
        if len(results) == len(VARIANTS):
            rows.append(_paired_row(model, results["sbi"], results["fakes"], seed))
    return rows


def _auc_row(title: str, model: ModelPlan, variant: str, result: dict, data_note: str) -> Measurement:
    low, high = result["ci"]
    weights = next(o for o in model.overrides if o.startswith("weights="))
    sizes = " ".join(o for o in model.overrides if o.startswith("model.input")) or "default input size"
    return Measurement(
        title,
        rnd(result["test_video_auc"], 4),
        "AUC",
        None,
        None,
        f">= {GOAL}" if variant == "sbi" else "",
        result["test_video_auc"] >= GOAL if variant == "sbi" else None,
        f"95% identity bootstrap CI [{low:.3f}, {high:.3f}] on {result['scored_videos']} test videos "
        f"(evaluate.py, fp32); {weights}, {sizes}; {model.why}; epoch selected on val only: "
        f"{result['selected_epoch']} (val video AUC {result['best_val_video_auc']:.3f}; per epoch "
        f"{result['val_video_auc_per_epoch']}); test AP {result['test_video_ap']:.3f}, EER "
        f"{result['test_video_eer']:.3f}; train {result['train_s']:.0f} s, evaluate {result['evaluate_s']:.0f} s"
        f"{data_note}",
        "sbi",
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.items() if k != "scores"},
    )


def _paired_row(model: ModelPlan, sbi: dict, fakes: dict, seed: int) -> Measurement:
    paired = _paired(sbi, fakes, seed)
    return Measurement(
        f"SBI: test video AUC, SBI minus fake-trained, {model.title}",
        rnd(paired["diff"], 4),
        "AUC",
        rnd(fakes["test_video_auc"], 4),
        None,
        "",
        None,
        f"paired identity bootstrap on the same {sbi['scored_videos']} test videos "
        f"(src.utils.stats.paired_difference, 1000 resamples, seed {seed}): 95% CI "
        f"[{paired['low']:.3f}, {paired['high']:.3f}], "
        + ("beyond noise" if paired["excludes_zero"] else "within noise (the interval holds 0)")
        + f"; baseline = the fake-trained AUC, value = SBI {sbi['test_video_auc']:.4f} - it",
        "sbi",
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in paired.items()},
    )

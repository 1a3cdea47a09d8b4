"""Shortcut audit: can a cheap, manipulation-free feature of a video tell real from fake?

    python -m src.data.audit                                  # the embedded synthetic set
    python -m src.data.audit data=celebdf data.root=/data/Celeb-DF-v2
    make audit ARGS="data=celebdf data.root=..."

Per video it measures features that carry no manipulation evidence (container: file size, bitrate,
duration, frame count, fps, resolution, codec; pixels of a few evenly spaced frames: brightness,
contrast, sharpness, noise, frame-to-frame difference; the face-crop cache: face box size and position,
face-region sharpness, detection fallbacks). For every feature and split (train, val and test as the
data module makes them, train+val, all) it reports the real-vs-fake ROC AUC with a stratified
bootstrap 95 % interval. A feature is flagged as a shortcut risk on a split when its AUC lies outside
[0.35, 0.65] (``audit.band``) and a Mann-Whitney test rejects "no separation" at 0.05, Bonferroni-
corrected over all features and splits, so that a split of a dozen videos is not flagged for a chance
ordering; the verdict of a feature is its flag on any split.

Outputs (``src.experiments.studies.audit`` runs it): a table on the console, ``reports/audit/`` (``features.csv``
per video, ``auc.csv``, ``auc.md`` and ``auc.png``) and an MLflow run in experiment ``audit``. Sharpness is the variance of
the Laplacian of the luma; noise is Immerkaer's estimate (the deviation left by a Laplacian-difference
kernel that cancels smooth image content).
"""

from __future__ import annotations

import csv
import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from src.utils.stats import bootstrap_auc

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "audit"
SPLITS = ("train", "val", "test", "train+val", "all")
# feature name -> what it is (the table's legend); categorical features are scored by their fake rate
FEATURES: dict[str, str] = {
    "file_size": "file size (bytes)",
    "bitrate": "bits per second of video",
    "duration": "duration (s)",
    "frame_count": "number of frames",
    "fps": "frames per second",
    "width": "frame width (px)",
    "height": "frame height (px)",
    "codec": "codec (categorical)",
    "brightness": "mean luma",
    "contrast": "luma standard deviation",
    "sharpness": "Laplacian variance of the luma, whole frame",
    "face_sharpness": "Laplacian variance of the centre of the cached face crop",
    "noise": "noise deviation estimate (Immerkaer), whole frame",
    "frame_diff": "mean absolute luma difference of consecutive frames",
    "face_size": "face box side / frame height",
    "face_x": "face box centre x / frame width",
    "face_y": "face box centre y / frame height",
    "undetected_frames": "fraction of sampled frames without a face detection",
    "centre_fallback": "no face found in any frame (centre crops)",
}
CATEGORICAL = {"codec"}
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


# ---------------------------------------------------------------------------------------------------------
# Separation tests (the AUC and its bootstrap interval: src.utils.stats)


def separation_p_value(scores, labels) -> float:
    """Two-sided Mann-Whitney p-value of "the feature does not order fakes above or below reals"
    (exact for small tie-free samples); 1 when a class is missing or every value is the same."""
    from scipy.stats import mannwhitneyu

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if labels.all() or not labels.any() or np.ptp(scores) == 0:
        return 1.0
    p = float(mannwhitneyu(scores[labels], scores[~labels], alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def categorical_scores(values: list[str], labels) -> np.ndarray:
    """Each category scored by its fake fraction: the best ordering a classifier of the category alone
    can reach (optimistic when there are many rare categories)."""
    labels = np.asarray(labels, np.float64)
    rate = {v: labels[[x == v for x in values]].mean() for v in set(values)}
    return np.array([rate[v] for v in values])


# ---------------------------------------------------------------------------------------------------------
# Per-video features


def _luma(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


def laplacian_variance(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer (1996): sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |gray * N|."""
    h, w = gray.shape
    response = cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def container_features(path: Path) -> dict[str, float | str]:
    """File and stream properties: no pixel is decoded except by decord's index."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    frames = len(reader)
    fps = float(reader.get_avg_fps())
    height, width = reader[0].shape[:2] if frames else (0, 0)
    capture = cv2.VideoCapture(str(path))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    capture.release()
    codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ").lower() or "unknown"
    size = path.stat().st_size
    duration = frames / fps if fps > 0 else math.nan
    return {
        "file_size": float(size),
        "bitrate": size * 8 / duration if duration and duration > 0 else math.nan,
        "duration": duration,
        "frame_count": float(frames),
        "fps": fps,
        "width": float(width),
        "height": float(height),
        "codec": codec,
    }


def pixel_features(path: Path, num_frames: int) -> dict[str, float]:
    """Whole-frame statistics of ``num_frames`` evenly spaced frames and of the frame after each."""
    import decord

    from src.data.faces.video import evenly_spaced_indices

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    total = len(reader)
    starts = evenly_spaced_indices(max(total - 1, 1), num_frames)
    wanted = sorted({int(i) for s in starts for i in (s, min(s + 1, total - 1))})
    batch = reader.get_batch(wanted).asnumpy()
    gray = {index: _luma(frame) for index, frame in zip(wanted, batch, strict=True)}
    first = [gray[int(s)] for s in starts]
    return {
        "brightness": float(np.mean([g.mean() for g in first])),
        "contrast": float(np.mean([g.std() for g in first])),
        "sharpness": float(np.mean([laplacian_variance(g) for g in first])),
        "noise": float(np.mean([noise_sigma(g) for g in first])),
        "frame_diff": float(
            np.mean([np.abs(gray[int(s)] - gray[min(int(s) + 1, total - 1)]).mean() for s in starts])
        ),
    }


def face_features(crops: np.ndarray, meta: dict) -> dict[str, float]:
    """Face box size and position, face-region sharpness and detection fallbacks from a cache entry."""
    boxes = np.asarray(meta["boxes"], np.float64)
    height, width = meta["frame_shape"]
    report = meta["report"]
    size = crops.shape[1]
    lo, hi = size // 4, size - size // 4  # the face centre: no background, hair or margin
    return {
        "face_size": float(((boxes[:, 2] - boxes[:, 0]) / height).mean()),
        "face_x": float(((boxes[:, 0] + boxes[:, 2]) / 2 / width).mean()),
        "face_y": float(((boxes[:, 1] + boxes[:, 3]) / 2 / height).mean()),
        "face_sharpness": float(
            np.mean([laplacian_variance(_luma(np.asarray(c[lo:hi, lo:hi]))) for c in crops])
        ),
        "undetected_frames": 1 - report["num_detected"] / max(report["num_frames"], 1),
        "centre_fallback": float(report["centre_fallback"]),
    }


@dataclass
class VideoFeatures:
    path: str
    label: int
    split: str  # train | val | test
    values: dict[str, float | str]


def measure_videos(
    datamodule, num_frames: int = 8, progress: bool = True, only: set[str] | None = None
) -> list[VideoFeatures]:
    """Features of every usable video of a prepared and set-up data module, in split order (``only``:
    just the videos with these record paths)."""
    rows = []
    items = [
        (split, record)
        for split in ("train", "val", "test")
        for record in datamodule.splits[split]
        if only is None or record.path in only
    ]
    for split, record in tqdm(items, desc="audit", unit="video", disable=not progress):
        path = datamodule.root / record.path
        values: dict[str, float | str] = {}
        try:
            values.update(container_features(path))
            values.update(pixel_features(path, num_frames))
        except Exception as error:  # a video the cache could read but this cannot: reported, not fatal
            log.warning("audit: cannot measure %s: %s", path, error)
            continue
        try:
            crops, meta = datamodule.cache.load(path)
            values.update(face_features(crops, meta))
        except (OSError, ValueError, KeyError) as error:
            log.warning("audit: no face-crop cache entry for %s (%s): face features missing", path, error)
        rows.append(VideoFeatures(record.path, int(record.label), split, values))
    return rows


# ---------------------------------------------------------------------------------------------------------
# The table


@dataclass
class AucRow:
    feature: str
    split: str
    n_real: int
    n_fake: int
    auc: float
    low: float
    high: float
    flagged: bool


def split_members(split: str, video_split: str) -> bool:
    return (
        split == "all" or split == video_split or (split == "train+val" and video_split in ("train", "val"))
    )


def audit_table(
    videos: list[VideoFeatures],
    band: tuple[float, float] = (0.35, 0.65),
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[AucRow]:
    """One row per feature and split: the AUC, its bootstrap interval and the shortcut flag.

    The flag needs an AUC outside ``band`` that is also unlikely by chance: the Mann-Whitney test of
    no separation rejects at ``alpha``, Bonferroni-corrected over every feature and split. Without the
    test, ~100 AUCs on splits of a few dozen videos would flag some feature by chance alone."""
    rows = []
    for feature in FEATURES:
        for split in SPLITS:
            members = [v for v in videos if split_members(split, v.split) and feature in v.values]
            labels = np.array([v.label for v in members])
            raw = [v.values[feature] for v in members]
            if feature in CATEGORICAL:
                scores = categorical_scores([str(x) for x in raw], labels)
            else:
                scores = np.array(raw, np.float64)
                keep = np.isfinite(scores)
                scores, labels = scores[keep], labels[keep]
            auc, low, high = bootstrap_auc(scores, labels, n_boot=resamples, seed=seed)
            flagged = (
                not math.isnan(auc)
                and not band[0] <= auc <= band[1]
                and (separation_p_value(scores, labels) < alpha / (len(FEATURES) * len(SPLITS)))
            )
            n_fake = int(labels.sum())
            rows.append(AucRow(feature, split, len(labels) - n_fake, n_fake, auc, low, high, flagged))
    return rows


def flagged_features(rows: list[AucRow]) -> list[str]:
    return sorted({r.feature for r in rows if r.flagged}, key=list(FEATURES).index)


def _cell(row: AucRow) -> str:
    if math.isnan(row.auc):
        return "–"
    mark = " **!**" if row.flagged else ""
    return f"{row.auc:.2f} [{row.low:.2f}, {row.high:.2f}]{mark}"


def markdown_table(rows: list[AucRow]) -> str:
    by = {(r.feature, r.split): r for r in rows}
    lines = [
        "| feature | " + " | ".join(_split_heads(rows)) + " | shortcut risk |",
        "| :-- | " + " | ".join("--:" for _ in SPLITS) + " | :-: |",
    ]
    for feature in FEATURES:
        cells = [_cell(by[feature, s]) for s in SPLITS]
        risk = "**yes**" if any(by[feature, s].flagged for s in SPLITS) else "no"
        lines.append(f"| {feature} | " + " | ".join(cells) + f" | {risk} |")
    return "\n".join(lines) + "\n"


def caption(band: tuple[float, float]) -> str:
    """What the table's numbers are, and when a cell is flagged."""
    return (
        "Real-vs-fake ROC AUC of each feature alone, per split (r real / f fake videos), with its 95 % "
        f"stratified bootstrap interval; 0.5 = no separation. ! = shortcut risk: AUC outside [{band[0]}, "
        f"{band[1]}] and a Mann-Whitney p-value under 0.05 / {len(FEATURES) * len(SPLITS)} features x splits "
        "(Bonferroni)."
    )


def _split_heads(rows: list[AucRow]) -> list[str]:
    counts = {s: next(r for r in rows if r.split == s) for s in SPLITS}
    return [f"{s} ({counts[s].n_real}r/{counts[s].n_fake}f)" for s in SPLITS]


def console_table(rows: list[AucRow], band: tuple[float, float] = (0.35, 0.65)) -> str:
    by = {(r.feature, r.split): r for r in rows}
    width = max(map(len, FEATURES)) + 2
    heads = _split_heads(rows)
    column = max(20, *(len(h) + 2 for h in heads))
    out = textwrap.wrap(caption(band), width + column * len(SPLITS) + 10)
    out.append("feature".ljust(width) + "".join(h.rjust(column) for h in heads) + "  risk")
    for feature in FEATURES:
        cells = []
        for split in SPLITS:
            r = by[feature, split]
            text = (
                "-"
                if math.isnan(r.auc)
                else f"{r.auc:.2f} [{r.low:.2f},{r.high:.2f}]" + ("!" if r.flagged else " ")
            )
            cells.append(text.rjust(column))
        risk = "SHORTCUT" if any(by[feature, s].flagged for s in SPLITS) else ""
        out.append(feature.ljust(width) + "".join(cells) + "  " + risk)
    return "\n".join(out)


def plot(rows: list[AucRow], band: tuple[float, float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = list(FEATURES)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(features) + 1.5))
    ax.axvspan(*band, color="0.92", zorder=0, label=f"no shortcut [{band[0]}, {band[1]}]")
    ax.axvline(0.5, color="0.6", lw=0.8)
    offsets = np.linspace(-0.3, 0.3, len(SPLITS))
    for offset, split in zip(offsets, SPLITS, strict=True):
        sel = {r.feature: r for r in rows if r.split == split}
        ys = [len(features) - 1 - i + offset for i in range(len(features))]
        auc = np.array([sel[f].auc for f in features])
        err = np.array([[sel[f].auc - sel[f].low, sel[f].high - sel[f].auc] for f in features]).T
        ax.errorbar(auc, ys, xerr=err, fmt="o", ms=3.5, lw=1, capsize=2, label=split)
    for i, feature in enumerate(features):
        if any(r.flagged for r in rows if r.feature == feature):
            ax.text(1.01, len(features) - 1 - i, "shortcut", va="center", color="crimson", fontsize=8)
    ax.set_yticks(range(len(features)), features[::-1])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("real-vs-fake ROC AUC (95 % bootstrap interval)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(
    videos: list[VideoFeatures], rows: list[AucRow], out_dir: Path, band: tuple[float, float], title: str
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "features": out_dir / "features.csv",
        "auc_csv": out_dir / "auc.csv",
        "auc_md": out_dir / "auc.md",
        "plot": out_dir / "auc.png",
    }
    with files["features"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", *FEATURES])
        for v in videos:
            writer.writerow([v.path, v.label, v.split, *(v.values.get(k, "") for k in FEATURES)])
    with files["auc_csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["feature", "split", "n_real", "n_fake", "auc", "ci_low", "ci_high", "shortcut_risk"])
        for r in rows:
            writer.writerow([r.feature, r.split, r.n_real, r.n_fake, r.auc, r.low, r.high, int(r.flagged)])
    flagged = flagged_features(rows)
    legend = "\n".join(f"- `{name}`: {text}" for name, text in FEATURES.items())
    files["auc_md"].write_text(
        f"# Shortcut audit: {title}\n\n"
        + caption(band).replace("! =", "**!** =")
        + "\n\n"
        + markdown_table(rows)
        + f"\nShortcut risks: {', '.join(flagged) if flagged else 'none'}\n\nFeatures:\n{legend}\n"
    )
    plot(rows, band, files["plot"], title)
    return files


if __name__ == "__main__":
    # `python -m src.data.audit` is the documented command; the run itself (Hydra, MLflow) is
    # orchestration, so the command forwards to it by module name: nothing in src/data imports it
    import runpy

    runpy.run_module("src.experiments.studies.audit", run_name="__main__", alter_sys=True)

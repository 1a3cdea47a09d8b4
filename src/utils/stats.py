"""Uncertainty of real-vs-fake scores: video-level test metrics, stratified (group) bootstrap intervals,
paired differences on the same videos, mean ± sd over replicate runs, the bootstrap of one AUC, and what a
deployment reads off the scores: true-positive rates at fixed false-positive rates, the threshold at the
equal-error point, accuracy at a given threshold, metrics of a subset of the videos, reliability bins.

The metrics have the definitions of the torchmetrics collection that evaluate.py logs (`test/video_*`,
`src.models.metrics`), computed here in float64 numpy: the point values equal the logged (float32) ones
within rounding. Bootstrap resamples are represented as a count matrix (how often each video is drawn in
each resample) and every metric is computed for all resamples at once with cumulative sums over the videos
sorted by score, so 1000 resamples of ~500 videos take a fraction of a second.

Resampling is stratified by class: each resample keeps each class's size (or, with identity groups, draws
as many groups of each class as there are), so a resample never loses a class and never yields the
meaningless AUC of a one-class sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METRICS = ("auc", "ap", "acc", "loss", "eer")  # the torchmetrics collection (src.models.metrics)
# true-positive rate at a false-positive rate of at most num / den (exact fractions: no rounding at the edge)
FPR_TARGETS = {"tpr_fpr01": (1, 100), "tpr_fpr05": (5, 100)}
VIDEO_METRICS = METRICS + tuple(FPR_TARGETS)  # what video_metrics and bootstrap_intervals return
LOSS_CLAMP = 1e-7  # as MeanBCE in src/models/metrics.py


def _inputs(p_fake, labels) -> tuple[np.ndarray, np.ndarray]:
    """float64 probabilities (evaluate.py scores in float64 from the logits on), and 0/1 int labels."""
    probs = np.asarray(p_fake, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if probs.shape != labels.shape:
        raise ValueError(f"p_fake has {probs.size} values but labels has {labels.size}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake); got {sorted(set(labels.tolist()))}")
    labels = labels.astype(np.int64)
    real, fake = int((labels == 0).sum()), int((labels == 1).sum())
    if real == 0 or fake == 0:
        raise ValueError(f"video metrics need both classes; got {real} real and {fake} fake videos")
    if np.isnan(probs).any():
        raise ValueError("p_fake contains NaN")
    return probs, labels


def video_metrics(p_fake, labels) -> dict[str, float]:
    """auc, ap, acc, loss, eer, tpr_fpr01, tpr_fpr05 of fake probabilities, as evaluate.py logs them as
    `test/video_*`."""
    probs, labels = _inputs(p_fake, labels)
    values = _weighted_metrics(probs, labels, np.ones((1, probs.size), dtype=np.int64), VIDEO_METRICS)
    return {name: float(values[name][0]) for name in VIDEO_METRICS}


# -- metrics of many resamples at once ------------------------------------------------------------------
def _weighted_metrics(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray, names: Sequence[str]):
    """{metric: array (resamples,)} for count matrix `counts` (resamples, videos); the same definitions as
    torchmetrics (ties share half credit in AUC; AP and ROC step over distinct scores; acc at p > 0.5).
    tpr_fpr<x>: the highest TPR among the ROC points (called fake: p >= a distinct score, and (0, 0)) whose
    FPR is at most the target."""
    counts = counts.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    fake = labels == 1
    if "acc" in names:
        correct = ((probs > 0.5) == fake).astype(np.float64)
        out["acc"] = counts @ correct / counts.sum(1)
    if "loss" in names:
        clamped = np.clip(probs, LOSS_CLAMP, 1 - LOSS_CLAMP)
        bce = -np.where(fake, np.log(clamped), np.log1p(-clamped))
        out["loss"] = counts @ bce / counts.sum(1)
    if not {"auc", "ap", "eer", *FPR_TARGETS} & set(names):
        return out
    # distinct scores in ascending order; per resample the weight of fakes / reals at each distinct score
    order = np.argsort(probs, kind="stable")
    sorted_probs = probs[order]
    starts = np.flatnonzero(np.r_[True, sorted_probs[1:] != sorted_probs[:-1]])
    pos = np.add.reduceat(counts[:, order] * fake[order], starts, axis=1)
    neg = np.add.reduceat(counts[:, order] * ~fake[order], starts, axis=1)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    if "auc" in names:
        below = np.cumsum(neg, 1) - neg
        out["auc"] = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    # thresholds from the highest score down: true / false positives at "score >= threshold"
    tp = np.cumsum(pos[:, ::-1], 1)
    fp = np.cumsum(neg[:, ::-1], 1)
    if "ap" in names:
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        out["ap"] = (pos[:, ::-1] * precision).sum(1) / n_pos
    if "eer" in names:
        zeros = np.zeros((counts.shape[0], 1))
        fpr = np.hstack([zeros, fp / n_neg[:, None]])
        fnr = 1 - np.hstack([zeros, tp / n_pos[:, None]])
        out["eer"] = _interpolated_eer(fpr, fnr)
    for name, (num, den) in FPR_TARGETS.items():
        if name in names:  # tp, fp grow along each row: the last point within the target has the highest TPR
            within = fp * den <= num * n_neg[:, None]  # integer-valued floats: exact
            out[name] = np.where(within, tp, 0.0).max(1) / n_pos
    return out


def _interpolated_eer(fpr: np.ndarray, fnr: np.ndarray) -> np.ndarray:
    """Row-wise FNR = FPR on the ROC polyline (as InterpolatedEER): linear between the points around the crossing."""
    gap = fnr - fpr  # non-increasing along each row; 1 at (0, 0), -1 at (1, 1)
    after = np.argmax(gap <= 0, axis=1)
    before = np.maximum(after - 1, 0)
    rows = np.arange(gap.shape[0])
    g0, g1 = gap[rows, before], gap[rows, after]
    f0, f1 = fpr[rows, before], fpr[rows, after]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(g0 != g1, g0 / (g0 - g1), 0.0)
    return f0 + t * (f1 - f0)


# -- resampling ---------------------------------------------------------------------------------------
def _resample_counts(labels: np.ndarray, groups, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, videos) draw counts, stratified by class; with groups, whole groups are drawn within a class."""
    rng = np.random.default_rng(seed)
    n = labels.size
    counts = np.zeros((n_boot, n), dtype=np.int64)
    units = _units(labels, groups)
    for members in units:  # one entry per class: a list of index arrays (one per group, or one per video)
        k = len(members)
        draws = rng.integers(0, k, size=(n_boot, k))
        per_unit = np.zeros((n_boot, k), dtype=np.int64)
        np.add.at(per_unit, (np.repeat(np.arange(n_boot), k), draws.ravel()), 1)
        for unit, videos in enumerate(members):
            counts[:, videos] += per_unit[:, unit : unit + 1]
    return counts


def _units(labels: np.ndarray, groups) -> list[list[np.ndarray]]:
    units = []
    for cls in (0, 1):
        indices = np.flatnonzero(labels == cls)
        if groups is None:
            units.append([np.array([i]) for i in indices])
            continue
        keys = np.asarray(groups, dtype=object).ravel()
        if keys.size != labels.size:
            raise ValueError(f"groups has {keys.size} values but labels has {labels.size}")
        by_group: dict = {}
        for i in indices:
            # a video without a known group is its own group
            key = keys[i] if keys[i] is not None and str(keys[i]) not in ("", "nan") else ("video", i)
            by_group.setdefault(key, []).append(i)
        units.append([np.array(v) for v in by_group.values()])
    return units


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level={level}: expected a confidence level between 0 and 1, e.g. 0.95")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}: expected at least 1 resample")


def bootstrap_intervals(
    p_fake, labels, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each video metric (VIDEO_METRICS): {metric: (low, high)}.

    Stratified by class; with `groups` (an identity group per video; empty/None = its own group) whole groups
    are resampled within each class. Deterministic for a given seed.
    """
    _check_level(level, n_boot)
    probs, labels = _inputs(p_fake, labels)
    counts = _resample_counts(labels, groups, n_boot, seed)
    values = _weighted_metrics(probs, labels, counts, VIDEO_METRICS)
    return {name: _percentiles(values[name], level) for name in VIDEO_METRICS}


def paired_difference(
    p_a, p_b, labels, groups=None, metric: str = "auc", n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """metric(a) - metric(b) on the same videos, with a paired bootstrap interval (both scored on the same
    resample of videos): {diff, low, high, excludes_zero}."""
    if metric not in VIDEO_METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(VIDEO_METRICS)}")
    _check_level(level, n_boot)
    probs_a, labels = _inputs(p_a, labels)
    probs_b, _ = _inputs(p_b, labels)
    if probs_a.size != probs_b.size:
        raise ValueError(
            f"p_a has {probs_a.size} values but p_b has {probs_b.size}: pair them on the same videos"
        )
    diff = video_metrics(probs_a, labels)[metric] - video_metrics(probs_b, labels)[metric]
    counts = _resample_counts(labels, groups, n_boot, seed)
    resampled = (
        _weighted_metrics(probs_a, labels, counts, [metric])[metric]
        - _weighted_metrics(probs_b, labels, counts, [metric])[metric]
    )
    low, high = _percentiles(resampled, level)
    return {"diff": float(diff), "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0)}


def selection_inflation(
    p_by_epoch, labels, selected: int, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """How much picking the epoch on the test set adds to a test AUC: max over epochs of the test AUC minus
    the AUC of the `selected` (validation-chosen) epoch, on the same videos; its interval re-takes the max
    in every bootstrap resample of the videos, so it is the inflation a peer's practice would show on
    another draw of the test set. `p_by_epoch`: (epochs, videos). {diff, low, high, best_epoch}."""
    _check_level(level, n_boot)
    scores = np.asarray(p_by_epoch, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if scores.ndim != 2 or scores.shape[1] != labels.size or not 0 <= selected < scores.shape[0]:
        raise ValueError(
            f"p_by_epoch {scores.shape} must be (epochs, {labels.size}) and contain epoch {selected}"
        )
    aucs = np.array([video_metrics(row, labels)["auc"] for row in scores])
    counts = _resample_counts(labels, groups, n_boot, seed)
    resampled = np.stack([_weighted_metrics(row, labels, counts, ["auc"])["auc"] for row in scores])
    low, high = _percentiles(resampled.max(0) - resampled[selected], level)
    return {
        "diff": float(aucs.max() - aucs[selected]),
        "low": low,
        "high": high,
        "best_epoch": int(aucs.argmax()),
        "aucs": aucs.tolist(),
    }


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of replicate values; sd is NaN for a single value."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return (math.nan, math.nan)
    return (float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan)


# -- one AUC ----------------------------------------------------------------------------------------------
def auc(scores, labels) -> float:
    """ROC AUC of `scores` for 0/1 `labels` (1 = fake): the share of (fake, real) pairs the scores order
    correctly, ties counting half (the Mann-Whitney statistic); NaN when a class is missing."""
    labels = np.asarray(labels).ravel()
    if not (labels == 0).any() or not (labels == 1).any():
        return math.nan
    probs, labels = _inputs(scores, labels)
    return float(
        _weighted_metrics(probs, labels, np.ones((1, probs.size), dtype=np.int64), ["auc"])["auc"][0]
    )


def bootstrap_auc(
    scores, labels, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(AUC, low, high): the AUC of `scores` and the percentile interval of a class-stratified bootstrap;
    all NaN when a class is missing. Deterministic for a given seed."""
    _check_level(level, n_boot)
    point = auc(scores, labels)
    if math.isnan(point):
        return (math.nan, math.nan, math.nan)
    probs, labels = _inputs(scores, labels)
    resampled = _weighted_metrics(probs, labels, _resample_counts(labels, None, n_boot, seed), ["auc"])["auc"]
    return (point, *_percentiles(resampled, level))


# -- operating points, subsets, calibration -------------------------------------------------------------
def eer_threshold(p_fake, labels) -> float:
    """The decision threshold at the equal-error point of these (validation) scores: the distinct score t
    whose ROC point (called fake: p_fake >= t) has the smallest |FNR - FPR|; on a tie the highest such t
    (fewer reals called fake). Apply it as `p_fake >= t` (`decisions`)."""
    probs, labels = _inputs(p_fake, labels)
    thresholds = np.unique(probs)[::-1]  # distinct scores, highest first: the ROC points after (0, 0)
    fakes, reals = np.sort(probs[labels == 1]), np.sort(probs[labels == 0])
    tp = fakes.size - np.searchsorted(fakes, thresholds, side="left")  # fakes with p >= t
    fp = reals.size - np.searchsorted(reals, thresholds, side="left")
    fnr, fpr = 1 - tp / fakes.size, fp / reals.size
    return float(thresholds[int(np.argmin(np.abs(fnr - fpr)))])


def decisions(p_fake, threshold: float) -> np.ndarray:
    """1 (fake) where p_fake >= threshold, else 0 (real): the rule of `eer_threshold`."""
    return (np.asarray(p_fake, dtype=np.float64) >= threshold).astype(np.int64)


def accuracy_at_threshold(p_fake, labels, threshold: float) -> float:
    """The share of videos whose `decisions` at `threshold` equal their label (one class is enough)."""
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        raise ValueError("accuracy of no videos: give at least one")
    return float((decisions(p_fake, threshold).ravel() == labels).mean())


def subset_metrics(
    p_fake,
    labels,
    members,
    groups=None,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Metrics of the videos where `members` is true, out of a test set with both classes: `videos`,
    `fake_videos`, `video_auc` and `video_acc` each with `_ci_low`/`_ci_high`, and `video_acc_val_threshold`
    when a threshold is given.

    video_auc: within the subset when it holds both classes; a one-class subset is ranked against every
    video of the other class in the test set (a fake-only subset against all test reals: the per-method
    AUC of FF++ papers). video_acc: at p_fake > 0.5 within the subset only (a fake-only subset's recall, a
    real-only subset's specificity). Intervals: the class-stratified (group) bootstrap of `bootstrap_intervals`
    over the videos the AUC uses; accuracy from the same resamples, restricted to the subset.
    """
    _check_level(level, n_boot)
    probs, labels = _inputs(p_fake, labels)
    members = np.asarray(members, dtype=bool).ravel()
    if members.shape != labels.shape or not members.any():
        raise ValueError(
            f"members must be {labels.size} booleans, one per video, at least one true; "
            f"got {members.size} with {int(members.sum())} true"
        )
    subset_labels = np.unique(labels[members])
    scope = members | (labels != subset_labels[0]) if subset_labels.size == 1 else members
    index = np.flatnonzero(scope)
    probs, labels, inside = probs[index], labels[index], members[index]
    keys = None if groups is None else np.asarray(groups, dtype=object).ravel()[index]
    counts = np.vstack(
        [np.ones((1, index.size), dtype=np.int64), _resample_counts(labels, keys, n_boot, seed)]
    )
    auc_values = _weighted_metrics(probs, labels, counts, ["auc"])["auc"]
    acc_values = _weighted_metrics(probs[inside], labels[inside], counts[:, inside], ["acc"])["acc"]
    out = {"videos": float(inside.sum()), "fake_videos": float(labels[inside].sum())}
    for name, values in (("video_auc", auc_values), ("video_acc", acc_values)):
        out[name] = float(values[0])
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _percentiles(values[1:], level)
    if threshold is not None:
        out["video_acc_val_threshold"] = accuracy_at_threshold(probs[inside], labels[inside], threshold)
    return out


def reliability_bins(p_fake, labels, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of p_fake over [0, 1], left-closed as torchmetrics' BinaryCalibrationError bins
    them: per bin `count`, `mean_p` (mean p_fake) and `fake_share` (the share of fakes); NaN means in empty
    bins; `edges`: the n_bins + 1 bin edges. sum(count * |fake_share - mean_p|) / sum(count) over the
    non-empty bins is its expected calibration error (it gives p_fake == 1.0 a bin of its own, which only
    matters when a score saturates; here 1.0 joins the last bin, as a picture wants)."""
    probs = np.asarray(p_fake, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, probs, minlength=n_bins) / count
        fake_share = np.bincount(which, labels, minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_p": mean_p, "fake_share": fake_share}

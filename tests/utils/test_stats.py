"""Video-level metrics, bootstrap intervals, paired differences, replicate aggregation, and one AUC."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torchmetrics.functional.classification import binary_auroc

from src.models.metrics import detection_metrics
from src.utils import stats


def scores(n: int, shift: float, seed: int, fake_fraction: float = 0.5):
    """Labels and fake probabilities: fakes' logits shifted by `shift` standard deviations."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < fake_fraction).astype(int)
    labels[:2] = [0, 1]
    logits = rng.normal(size=n) + shift * labels
    return labels, 1 / (1 + np.exp(-logits))


def logged_metrics(probs, labels) -> dict[str, float]:
    """What evaluate.py logs as `test/video_*`: the torchmetrics collection of src.models.metrics."""
    values = detection_metrics("")(torch.tensor(probs, dtype=torch.float64), torch.tensor(labels))
    return {name: float(values[name]) for name in stats.METRICS}


def test_point_values_equal_the_logged_metrics():
    labels, probs = scores(40, 1.0, seed=0)
    probs[:6] = probs[6]  # ties
    logged = detection_metrics("test/video_")(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    values = stats.video_metrics(probs, labels)
    assert set(values) == set(stats.VIDEO_METRICS)
    assert {m: values[m] for m in stats.METRICS} == pytest.approx(
        {m: float(logged[f"test/video_{m}"]) for m in stats.METRICS}, abs=1e-6
    )


@pytest.mark.parametrize("seed", range(4))
def test_resampled_metrics_equal_torchmetrics_on_the_repeated_videos(seed):
    """The vectorised per-resample metrics are the logged metrics of the videos repeated as drawn."""
    labels, probs = scores(25, 0.8, seed=seed)
    probs[:4] = probs[4]  # ties, also across classes
    probs[5] = 0.5  # exactly at the accuracy threshold
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, size=(3, labels.size))
    counts[:, :2] += 1  # both classes present
    array_probs, array_labels = stats._inputs(probs, labels)
    resampled = stats._weighted_metrics(array_probs, array_labels, counts, stats.METRICS)
    for row in range(counts.shape[0]):
        repeated = np.repeat(np.arange(labels.size), counts[row])
        expected = logged_metrics(probs[repeated], labels[repeated])
        for name in stats.METRICS:
            assert resampled[name][row] == pytest.approx(expected[name], abs=2e-6), (name, row)


def test_intervals_are_seeded_and_contain_the_point_value():
    labels, probs = scores(60, 1.0, seed=1)
    groups = [f"id{i % 7}" for i in range(labels.size)]
    first = stats.bootstrap_intervals(probs, labels, groups=groups, n_boot=300, seed=5)
    assert first == stats.bootstrap_intervals(probs, labels, groups=groups, n_boot=300, seed=5)
    assert first != stats.bootstrap_intervals(probs, labels, groups=groups, n_boot=300, seed=6)
    point = stats.video_metrics(probs, labels)
    for name, (low, high) in first.items():
        assert low <= point[name] <= high, name
        assert low < high, name


def test_a_single_fake_is_in_every_resample():
    """Stratified resampling never loses a class: with one fake scored above all reals, every resample's AUC
    is 1.0 (an unstratified resample would miss the fake about a third of the time and give 0.0 or NaN)."""
    labels = np.array([0] * 18 + [1])
    probs = np.r_[np.linspace(0.1, 0.6, 18), 0.9]
    intervals = stats.bootstrap_intervals(probs, labels, n_boot=500, seed=0)
    assert intervals["auc"] == (1.0, 1.0)
    assert intervals["eer"] == (0.0, 0.0)


def test_group_resampling_draws_whole_groups_within_each_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    groups = ["a", "a", "b", "b", "a", "a", "c", "c", "c", ""]  # "" = a group of its own
    counts = stats._resample_counts(labels, groups, n_boot=200, seed=0)
    for same in ((0, 1), (2, 3), (4, 5), (6, 7, 8)):
        assert (counts[:, list(same)] == counts[:, [same[0]]]).all()
    assert (counts[:, :4].sum(1) % 2 == 0).all()  # reals: 2 groups of 2 drawn twice
    assert not (counts[:, 4] == counts[:, 0]).all()  # group "a" is drawn separately among fakes and reals


def test_identity_groups_widen_the_interval_when_scores_cluster_by_identity():
    """Videos of one identity share most of their score: resampling them one by one overstates the evidence."""
    rng = np.random.default_rng(3)
    identities = np.repeat(np.arange(12), 8)
    labels = np.tile([0, 1], 48)
    logits = 0.6 * labels + rng.normal(size=12)[identities] + 0.1 * rng.normal(size=96)
    probs = 1 / (1 + np.exp(-logits))
    by_video = stats.bootstrap_intervals(probs, labels, n_boot=500, seed=0)["auc"]
    by_group = stats.bootstrap_intervals(probs, labels, groups=identities, n_boot=500, seed=0)["auc"]
    assert by_group[1] - by_group[0] > 1.5 * (by_video[1] - by_video[0])


def test_coverage_of_the_true_auc():
    """Across simulated test sets, the 95 % AUC interval covers the population AUC in most of them."""
    shift = 1.0
    true_auc = norm.cdf(shift / math.sqrt(2))
    covered = 0
    for seed in range(150):
        labels, probs = scores(80, shift, seed=100 + seed)
        low, high = stats.bootstrap_intervals(probs, labels, n_boot=300, seed=seed)["auc"]
        covered += low <= true_auc <= high
    assert 0.85 <= covered / 150 <= 0.99


def test_paired_difference_marks_a_real_difference_and_not_noise():
    labels, good = scores(60, 2.5, seed=2)
    rng = np.random.default_rng(0)
    useless = rng.random(labels.size)
    clear = stats.paired_difference(good, useless, labels, n_boot=500)
    assert clear["excludes_zero"] and clear["low"] > 0
    assert clear["diff"] == pytest.approx(
        stats.video_metrics(good, labels)["auc"] - stats.video_metrics(useless, labels)["auc"]
    )
    jittered = np.clip(good + rng.normal(0, 0.02, labels.size), 0, 1)
    noise = stats.paired_difference(good, jittered, labels, n_boot=500)
    assert not noise["excludes_zero"] and noise["low"] <= noise["diff"] <= noise["high"]
    same = stats.paired_difference(good, good, labels, n_boot=200)  # paired: the same resamples for both
    assert (same["diff"], same["low"], same["high"], same["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    assert stats.paired_difference(useless, good, labels, metric="eer", n_boot=200)["excludes_zero"]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="both classes; got 0 real and 3 fake"):
        stats.bootstrap_intervals([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="labels must be 0"):
        stats.video_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="metric='f1'"):
        stats.paired_difference([0.1, 0.9], [0.2, 0.8], [0, 1], metric="f1")
    with pytest.raises(ValueError, match="level=95"):
        stats.bootstrap_intervals([0.1, 0.9], [0, 1], level=95)


def test_mean_sd():
    assert stats.mean_sd([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))
    mean, sd = stats.mean_sd([0.7])
    assert mean == 0.7 and math.isnan(sd)


def test_importing_stats_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, src.utils.stats; sys.exit(any(m in sys.modules for m in ('mlflow', 'torch', 'scipy')))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def pairwise_auc(scores, labels) -> float:
    """The definition: the share of (fake, real) pairs ordered correctly, ties counting half."""
    fakes = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    reals = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if f > r else 0.5 if f == r else 0.0 for f, r in itertools.product(fakes, reals))
    return wins / (len(fakes) * len(reals))


def test_auc_matches_independent_computations():
    rng = np.random.default_rng(3)
    for n_real, n_fake in ((5, 9), (30, 12), (1, 1)):
        labels = np.array([0] * n_real + [1] * n_fake)
        scores = np.round(rng.normal(size=len(labels)) + 0.7 * labels, 1)  # rounded: many ties
        value = stats.auc(scores, labels)
        assert value == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)
        if n_real > 1:
            # as probabilities: torchmetrics would squash other scores with a sigmoid, whose vectorised
            # kernel can give two equal scores different last bits and so split a tie
            probs = torch.tensor(scores / 20 + 0.5)
            assert value == pytest.approx(binary_auroc(probs, torch.tensor(labels)).item(), abs=1e-6)
    assert stats.auc([1, 2, 3], [0, 1, 1]) == 1.0 and stats.auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert stats.auc([4, 4, 4, 4], [0, 1, 0, 1]) == 0.5
    assert math.isnan(stats.auc([1, 2], [1, 1]))


def test_bootstrap_interval_holds_the_auc_and_narrows_with_more_videos():
    rng = np.random.default_rng(0)

    def sample(n: int):
        labels = np.arange(n) % 2
        return rng.normal(size=n) + 0.8 * labels, labels

    small_auc, small_low, small_high = stats.bootstrap_auc(*sample(20), n_boot=1000)
    big_auc, big_low, big_high = stats.bootstrap_auc(*sample(400), n_boot=1000)
    assert small_low <= small_auc <= small_high and big_low <= big_auc <= big_high
    assert big_high - big_low < 0.5 * (small_high - small_low)
    assert big_low - 0.05 < 0.714 < big_high + 0.05  # the true AUC, Phi(0.8 / sqrt 2)
    scores, labels = sample(30)
    assert stats.bootstrap_auc(scores, labels, seed=5) == stats.bootstrap_auc(
        scores, labels, seed=5
    )  # reproducible


# -- operating points, subsets, calibration: against scikit-learn (installed with mlflow) ----------------
def sklearn_tpr_at_fpr(probs, labels, target: float) -> float:
    """The convention stated in stats: the highest TPR among sklearn's ROC points with FPR <= target."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    return float(tpr[fpr <= target].max())


@pytest.mark.parametrize("seed", range(6))
def test_tpr_at_fixed_fpr_equals_sklearns_roc(seed):
    n = [40, 250, 401, 120, 1000, 60][seed]
    labels, probs = scores(n, 1.5, seed=seed)
    if seed % 2:
        probs = np.round(probs, 2)  # ties, also across classes
    values = stats.video_metrics(probs, labels)
    for name, target in (("tpr_fpr01", 0.01), ("tpr_fpr05", 0.05)):
        assert values[name] == pytest.approx(sklearn_tpr_at_fpr(probs, labels, target), abs=1e-12), (name, n)


def test_tpr_at_fpr_counts_a_point_exactly_on_the_target():
    """100 reals: one real above every fake makes FPR exactly 1 %, which is allowed (<=), so TPR is 1."""
    probs = np.r_[0.99, np.linspace(0.01, 0.4, 99), np.linspace(0.5, 0.9, 10)]
    labels = np.r_[np.zeros(100, int), np.ones(10, int)]
    values = stats.video_metrics(probs, labels)
    assert values["tpr_fpr01"] == 1.0 and sklearn_tpr_at_fpr(probs, labels, 0.01) == 1.0
    probs[1] = 0.995  # a second real on top: FPR 2 % at the first point, so only (0, 0) qualifies
    assert stats.video_metrics(probs, labels)["tpr_fpr01"] == 0.0
    assert stats.video_metrics(probs, labels)["tpr_fpr05"] == 1.0


def test_tpr_intervals_come_from_the_same_resamples_and_hold_the_point():
    labels, probs = scores(300, 1.5, seed=4)
    intervals = stats.bootstrap_intervals(probs, labels, n_boot=400, seed=1)
    point = stats.video_metrics(probs, labels)
    for name in stats.FPR_TARGETS:
        low, high = intervals[name]
        assert 0 <= low <= point[name] <= high <= 1 and low < high, name
    # the vectorised resampled value is the metric of the videos repeated as drawn
    counts = stats._resample_counts(labels, None, 3, seed=2)
    resampled = stats._weighted_metrics(*stats._inputs(probs, labels), counts, list(stats.FPR_TARGETS))
    for row in range(3):
        drawn = np.repeat(np.arange(labels.size), counts[row])
        assert resampled["tpr_fpr05"][row] == pytest.approx(
            sklearn_tpr_at_fpr(probs[drawn], labels[drawn], 0.05), abs=1e-12
        )


@pytest.mark.parametrize("seed", range(5))
def test_eer_threshold_is_sklearns_roc_point_closest_to_fnr_equal_fpr(seed):
    from sklearn.metrics import roc_curve

    labels, probs = scores([30, 80, 200, 15, 500][seed], 1.2, seed=10 + seed)
    if seed % 2:
        probs = np.round(probs, 2)
    threshold = stats.eer_threshold(probs, labels)
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    gaps = np.abs((1 - tpr) - fpr)[1:]  # point 0 is sklearn's (0, 0) at an infinite threshold
    assert threshold == thresholds[1:][int(np.argmin(gaps))]  # the first minimum: the highest threshold
    # its rule is p >= threshold: the decisions reproduce that ROC point
    called = stats.decisions(probs, threshold)
    assert called.dtype == np.int64 and set(called.tolist()) <= {0, 1}
    point = int(np.argmin(gaps)) + 1
    assert called[labels == 1].mean() == pytest.approx(tpr[point])
    assert called[labels == 0].mean() == pytest.approx(fpr[point])


def test_eer_threshold_of_a_hand_checked_case():
    # reals 0.1 0.2 0.3 0.6, fakes 0.4 0.7 0.8 0.9: at t = 0.7, FNR = 1/4 and FPR = 0 (gap 1/4); at t = 0.6,
    # FNR = 1/4 and FPR = 1/4 (gap 0): the threshold is 0.6
    probs = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    assert stats.eer_threshold(probs, labels) == 0.6
    assert stats.accuracy_at_threshold(probs, labels, 0.6) == 0.75  # 0.6 real called fake, 0.4 fake missed
    with pytest.raises(ValueError, match="both classes"):
        stats.eer_threshold([0.2, 0.3], [1, 1])


def test_accuracy_at_threshold_equals_sklearns_accuracy():
    from sklearn.metrics import accuracy_score

    labels, probs = scores(97, 1.0, seed=7)
    for threshold in (0.0, 0.3, float(probs[5]), 0.5, 0.77, 1.0):
        expected = accuracy_score(labels, (probs >= threshold).astype(int))
        assert stats.accuracy_at_threshold(probs, labels, threshold) == pytest.approx(expected, abs=1e-15)
    assert stats.accuracy_at_threshold([0.9, 0.8], [1, 1], 0.85) == 0.5  # one class is enough


def test_subset_auc_within_a_mixed_subset_and_against_the_other_class_for_a_one_class_subset():
    from sklearn.metrics import accuracy_score, roc_auc_score

    labels, probs = scores(120, 1.0, seed=8)
    rng = np.random.default_rng(8)
    method = rng.choice(np.array(["A", "B", "C"], dtype=object), size=labels.size)
    method[labels == 0] = "real"
    identities = [f"id{i % 11}" for i in range(labels.size)]
    for value in ("A", "B", "real"):
        members = method == value
        values = stats.subset_metrics(probs, labels, members, identities, threshold=0.6, n_boot=300, seed=0)
        other = labels != labels[members][0]
        scope = members | other  # a one-class subset ranked against every video of the other class
        assert values["video_auc"] == pytest.approx(roc_auc_score(labels[scope], probs[scope]), abs=1e-12)
        assert values["video_acc"] == pytest.approx(
            accuracy_score(labels[members], (probs[members] > 0.5).astype(int)), abs=1e-15
        )
        assert values["video_acc_val_threshold"] == pytest.approx(
            accuracy_score(labels[members], (probs[members] >= 0.6).astype(int)), abs=1e-15
        )
        assert values["videos"] == members.sum() and values["fake_videos"] == labels[members].sum()
        for name in ("video_auc", "video_acc"):
            assert values[f"{name}_ci_low"] <= values[name] <= values[f"{name}_ci_high"], (value, name)
    mixed = np.arange(labels.size) < 70  # both classes: the AUC of the subset alone
    values = stats.subset_metrics(probs, labels, mixed, n_boot=200)
    assert values["video_auc"] == pytest.approx(roc_auc_score(labels[mixed], probs[mixed]), abs=1e-12)
    assert "video_acc_val_threshold" not in values
    with pytest.raises(ValueError, match="at least one true; got 120 with 0 true"):
        stats.subset_metrics(probs, labels, np.zeros(labels.size, bool))


def test_reliability_bins_give_torchmetrics_calibration_error_and_sklearns_curve():
    from sklearn.calibration import calibration_curve

    from src.models.metrics import expected_calibration_error

    rng = np.random.default_rng(5)
    probs = rng.random(500)
    labels = (rng.random(500) < probs**2).astype(int)  # overconfident: the share of fakes lags P(fake)
    bins = stats.reliability_bins(probs, labels, n_bins=15)
    used = bins["count"] > 0
    ece = (bins["count"][used] * np.abs(bins["fake_share"][used] - bins["mean_p"][used])).sum() / 500
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)
    share, mean_p = calibration_curve(labels, probs, n_bins=15, strategy="uniform")  # no score on an edge
    assert np.allclose(share, bins["fake_share"][used]) and np.allclose(mean_p, bins["mean_p"][used])
    assert ece > 0.1
    # a hand-checked case: two bins of two videos, P(fake) 0.25 with no fake and 0.75 with both fakes
    assert expected_calibration_error([0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], n_bins=2) == pytest.approx(0.25)

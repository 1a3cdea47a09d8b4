"""The shortcut audit: its features, its flags, and end-to-end runs on the small synthetic sets."""

from __future__ import annotations

import csv

import mlflow
import numpy as np
import pytest

from src.data.audit import (
    FEATURES,
    VideoFeatures,
    audit_table,
    categorical_scores,
    console_table,
    flagged_features,
    noise_sigma,
)
from src.experiments.studies.audit import run_audit
from src.utils.stats import auc
from tests.conftest import SMALL_SYNTHETIC, compose_config, data_overrides


def test_categorical_feature_scored_by_its_fake_rate():
    labels = [1, 1, 0, 0, 1]
    scores = categorical_scores(["h264", "h264", "mp4v", "mp4v", "mp4v"], labels)
    assert list(scores) == pytest.approx([1, 1, 1 / 3, 1 / 3, 1 / 3])
    assert auc(categorical_scores(["a"] * 5, labels), labels) == 0.5


def test_noise_estimate_follows_added_noise():
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(40, 200, 320, dtype=np.float32), (240, 1))  # smooth content: no response
    for sigma in (2.0, 6.0):
        assert noise_sigma(ramp + rng.normal(0, sigma, ramp.shape).astype(np.float32)) == pytest.approx(
            sigma, rel=0.1
        )


def planted(n: int = 60, seed: int = 0) -> list[VideoFeatures]:
    """Videos where brightness is a planted shortcut and every other feature is independent of the label."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        label = i % 2
        values = {name: float(rng.normal()) for name in FEATURES}
        values.update(brightness=float(rng.normal() + 2.5 * label), fps=30.0, codec="h264")
        videos.append(VideoFeatures(f"v{i}.mp4", label, ("train", "val", "test")[i % 3], values))
    return videos


def test_audit_flags_a_planted_shortcut_and_no_independent_feature():
    rows = audit_table(planted(), resamples=1000)
    assert flagged_features(rows) == ["brightness"]
    by = {(r.feature, r.split): r for r in rows}
    assert by["brightness", "all"].auc > 0.9 and by["brightness", "all"].flagged
    assert by["fps", "all"].auc == 0.5 and by["codec", "test"].auc == 0.5
    assert {r.split for r in rows} == {"train", "val", "test", "train+val", "all"}
    assert by["brightness", "train+val"].n_real + by["brightness", "train+val"].n_fake == 40


def test_the_table_says_its_numbers_are_real_vs_fake_aucs_with_intervals():
    text = console_table(audit_table(planted(), resamples=200), band=(0.3, 0.7))
    caption = " ".join(text.splitlines()[:3])
    assert "Real-vs-fake ROC AUC" in caption and "95 %" in caption and "bootstrap interval" in caption
    assert "[0.3, 0.7]" in caption and "Bonferroni" in caption
    header = next(line for line in text.splitlines() if line.startswith("feature"))
    assert "all (30r/30f)" in header and "train+val (20r/20f)" in header
    (brightness,) = [line for line in text.splitlines() if line.startswith("brightness ")]
    assert brightness.endswith("SHORTCUT") and "!" in brightness


def test_a_chance_ordering_in_a_tiny_split_is_not_a_shortcut():
    # 3 real and 3 fake videos perfectly ordered by chance: AUC 1.0, but the interval includes 0.5
    videos = [VideoFeatures(f"v{i}.mp4", int(i >= 3), "val", {"brightness": float(i)}) for i in range(6)]
    row = next(
        r for r in audit_table(videos, resamples=1000) if r.feature == "brightness" and r.split == "val"
    )
    assert row.auc == 1.0 and not row.flagged


def audit_overrides(root, cache, out, extra=()):
    return [*data_overrides(root, cache), f"audit.output_dir={out}", "audit.bootstrap_resamples=500", *extra]


def test_audit_of_the_embedded_set_writes_its_reports(small_dataset, small_cache, tmp_path):
    cfg = compose_config("audit", audit_overrides(small_dataset, small_cache, tmp_path / "audit"))
    rows = run_audit(cfg)
    out = tmp_path / "audit"
    for name in ("features.csv", "auc.csv", "auc.md", "auc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with (out / "features.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(list(small_dataset.glob("*/*.mp4")))
    assert {row["split"] for row in table} == {"train", "val", "test"}
    assert all(float(row["face_size"]) > 0.2 for row in table)  # read from the face-crop cache
    by = {(r.feature, r.split): r for r in rows}
    # the same container and no detection failures for every video: these can never separate the classes
    for feature in ("frame_count", "fps", "duration", "width", "height", "codec", "centre_fallback"):
        assert by[feature, "all"].auc == 0.5 and not by[feature, "all"].flagged, feature
    markdown = (out / "auc.md").read_text()
    assert "| face_sharpness |" in markdown and "Shortcut risks:" in markdown

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("audit")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "synthetic"
    assert run.data.metrics["auc/all/face_sharpness"] == pytest.approx(by["face_sharpness", "all"].auc)
    assert "auc/test/noise_ci_low" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "audit")}
    assert "audit/auc.md" in artifacts and "audit/auc.png" in artifacts


@pytest.mark.slow  # generates the v1 set: make test-all
def test_audit_flags_sharpness_on_the_first_generator(tmp_path):
    """Preset v1 pastes a low-resolution face without camera noise: a blur detector separates it."""
    extra = ["data.synthetic.preset=v1", "audit.mlflow=false"]
    cfg = compose_config(
        "audit", audit_overrides(tmp_path / "v1", tmp_path / "cache", tmp_path / "out", extra)
    )
    assert cfg.data.synthetic.num_identities == SMALL_SYNTHETIC["num_identities"]
    flagged = flagged_features(run_audit(cfg))
    assert "sharpness" in flagged and "face_sharpness" in flagged


def test_audit_composes_with_any_dataset():
    cfg = compose_config("audit", ["data=celebdf", "data.root=/data/Celeb-DF-v2"])
    assert cfg.data.name == "celebdf" and cfg.data.root == "/data/Celeb-DF-v2"
    assert cfg.audit.band == [0.35, 0.65] and cfg.logger.experiment_name == "audit"
    assert (
        "model" not in cfg and "augment" not in cfg and "train_augment" not in cfg
    )  # the audit uses no model

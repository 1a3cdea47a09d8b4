"""Per-subset test metrics (src.experiments.evaluation.subsets): groupings from the index and the face-crop cache, metric
names MLflow accepts, and values equal to an independent computation (scikit-learn)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name
from sklearn.metrics import accuracy_score, roc_auc_score

from src.data.indexes.base import VideoRecord
from src.experiments.evaluation import subsets


@dataclass
class Entry:
    """A cache entry as the data module pins it: `load()` gives (crops, metadata) or raises."""

    side: float | None  # crop box side in pixels; None: no face detected (centre crops)
    broken: bool = False

    def load(self):
        if self.broken:
            raise ValueError("the cache entry x.json of v.mp4 is corrupt")
        if self.side is None:
            return None, {"report": {"centre_fallback": True}, "boxes": [[0, 0, 270, 270]] * 3}
        boxes = [[10, 20, 10 + self.side + d, 20 + self.side + d] for d in (-2, 0, 40)]  # median: the side
        return None, {"report": {"centre_fallback": False}, "boxes": boxes}


def datamodule(records, sides, protocol=None):
    entries = {
        r.path: Entry(None, broken=True) if side == "broken" else Entry(side)
        for r, side in zip(records, sides, strict=True)
    }
    return SimpleNamespace(entries=entries, index=SimpleNamespace(protocol=protocol or {}))


def record(i: int, label: int, source: str) -> VideoRecord:
    return VideoRecord(f"{source}/{i:03d}.mp4", label, f"id{i % 5}", source, True)


def test_metric_names_are_legal_in_mlflow_whatever_the_value():
    """MLflow accepts letters, digits, _ - . / (and : and spaces only off Windows); '=' and '+' are refused,
    and a name must not read as another path ('.', '..', '//')."""
    with pytest.raises(MlflowException):
        _validate_metric_name("test/subset/method=Deepfakes/video_auc")  # why the names are not key=value
    for value in ("Deepfakes", "a=b", "c23 raw", "x:y", "..", ".", "", "a/b", "Überblick", "256px+"):
        name = subsets.safe_name(value)
        assert "/" not in name and name not in ("", ".", "..")
        _validate_metric_name(f"{subsets.PREFIX}source/{name}/video_auc_ci_low")


def test_face_size_buckets_are_ordered_and_cover_every_side():
    assert subsets.face_size_buckets() == ("under-64px", "64-128px", "128-256px", "256px-and-over", "no-face")
    sides = {0: "under-64px", 63.9: "under-64px", 64: "64-128px", 200: "128-256px", 256: "256px-and-over"}
    for side, bucket in sides.items():
        assert subsets.face_size_bucket(side) == bucket


def test_groupings_read_source_compression_and_face_size_and_drop_single_valued_ones(caplog):
    records = [
        record(0, 0, "youtube"),
        record(1, 1, "Deepfakes"),
        record(2, 1, "Face2Face"),
        record(3, 0, "youtube"),
    ]
    module = datamodule(records, [300, 100, None, "broken"], protocol={"compression": "c23"})
    with caplog.at_level(logging.INFO, logger="src.experiments.evaluation.subsets"):
        columns = subsets.groupings(records, module)
    assert columns == {
        "source": ["youtube", "Deepfakes", "Face2Face", "youtube"],
        "face_size": ["256px-and-over", "64-128px", "no-face", None],  # the unreadable entry: no subset
    }  # one compression for every video: no compression subsets (each would be the whole test set)
    assert "1 of 4 test videos have no readable face boxes" in caplog.text
    assert "no compression subsets: the test videos have one compression, c23" in caplog.text
    # a record with its own compression (VideoRecord has none today: a stand-in) wins over the index's
    stand_ins = [
        SimpleNamespace(**vars(r), compression=c)
        for r, c in zip(records, ["c23", "c40", "c23", "c40"], strict=True)
    ]
    assert subsets.groupings(stand_ins, module)["compression"] == ["c23", "c40", "c23", "c40"]


def test_subset_scores_name_every_subset_and_equal_sklearn():
    rng = np.random.default_rng(0)
    sources = ["youtube"] * 30 + ["Deepfakes"] * 20 + ["Face Swap=x"] * 10
    labels = np.array([0] * 30 + [1] * 30)
    p_fake = 1 / (1 + np.exp(-(rng.normal(size=60) + 1.2 * labels)))
    sizes = ["64-128px" if i % 3 else "128-256px" for i in range(60)]
    columns = {"source": sources, "face_size": sizes}
    identities = [f"id{i % 7}" for i in range(60)]
    metrics = subsets.subset_scores(p_fake, labels, columns, identities, threshold=0.55, seed=1)
    for name in metrics:
        _validate_metric_name(name)
    subsets_logged = {subsets.subset_of(name)[:2] for name in metrics}
    assert subsets_logged == {
        ("source", "youtube"),
        ("source", "Deepfakes"),
        ("source", "Face_Swap_x"),
        ("face_size", "64-128px"),
        ("face_size", "128-256px"),
    }
    deepfakes = np.array(sources) == "Deepfakes"
    scope = deepfakes | (labels == 0)  # a fake-only subset against every test real
    prefix = "test/subset/source/Deepfakes/"
    assert metrics[prefix + "video_auc"] == pytest.approx(roc_auc_score(labels[scope], p_fake[scope]))
    assert metrics[prefix + "videos"] == 20 and metrics[prefix + "fake_videos"] == 20
    assert metrics[prefix + "video_acc"] == pytest.approx(np.mean(p_fake[deepfakes] > 0.5))  # its recall
    small = np.array(sizes) == "128-256px"  # both classes: its own AUC
    prefix = "test/subset/face_size/128-256px/"
    assert metrics[prefix + "video_auc"] == pytest.approx(roc_auc_score(labels[small], p_fake[small]))
    assert metrics[prefix + "video_acc_val_threshold"] == pytest.approx(
        accuracy_score(labels[small], (p_fake[small] >= 0.55).astype(int))
    )
    for key in ("video_auc", "video_acc"):
        assert (
            metrics[prefix + f"{key}_ci_low"] <= metrics[prefix + key] <= metrics[prefix + f"{key}_ci_high"]
        )
    assert subsets.subset_of("test/video_auc") is None

"""The data module composed from the real configs: generation, cache, splits, batches."""

from __future__ import annotations

import time

import pytest
import torch

from src.data.datamodule import build_datamodule
from tests.conftest import SMALL_SYNTHETIC, compose_config


def _datamodule(tmp_path, model: str, extra: list[str] | None = None):
    overrides = [
        f"model={model}",
        f"data.root={tmp_path / 'root'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.folds=2",
        *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items()),
        *(extra or []),
    ]
    return build_datamodule(compose_config("train", overrides).data)


def test_empty_folders_become_batches_for_frame_and_clip_models(tmp_path):
    """Done-when of the data issue: generate, cache, and batch for both kinds of model."""
    datamodule = _datamodule(tmp_path, "mesonet")
    start = time.perf_counter()
    datamodule.prepare_data()
    first = time.perf_counter() - start
    assert (tmp_path / "root" / "List_of_testing_videos.txt").is_file()
    assert any((tmp_path / "cache").rglob("*.npy"))
    datamodule.setup("fit")
    x, labels, videos = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert x.shape[1:] == (3, 256, 256) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # MesoNet takes [0, 1]
    assert set(labels.tolist()) <= {0.0, 1.0}
    train_labels = {r.label for r in datamodule.splits["train"]}
    assert train_labels == {0, 1}, "both classes must be present in training"

    # a second prepare on the same folders reuses everything
    again = _datamodule(tmp_path, "resnet_lstm", ["model.input.frames_per_clip=6"])
    start = time.perf_counter()
    again.prepare_data()
    assert time.perf_counter() - start < first / 5
    again.setup("fit")
    clips, labels, _ = again.on_after_batch_transfer(next(iter(again.train_dataloader())), 0)
    assert clips.shape[1:] == (6, 3, 224, 224)
    assert abs(float(clips.mean())) < 1.5  # ImageNet-normalized, not raw pixels
    assert set(labels.tolist()) <= {0.0, 1.0}


def test_eval_batches_are_whole_videos_and_splits_are_disjoint(small_dataset, small_cache):
    datamodule = build_datamodule(
        compose_config("train", [f"data.root={small_dataset}", f"data.cache_dir={small_cache}", "data.folds=2",
                                 *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items())]).data
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    splits = {name: {r.path for r in records} for name, records in datamodule.splits.items()}
    assert not splits["train"] & splits["val"] and not (splits["train"] | splits["val"]) & splits["test"]
    identities = [{r.identity for r in datamodule.splits[s]} for s in ("train", "val")]
    assert not identities[0] & identities[1]
    x, labels, videos = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    assert x.shape[1:] == (datamodule.crops.num_frames, 3, 256, 256)
    assert len(videos) == len(labels) == x.shape[0]
    counts = datamodule.class_counts()
    assert counts["train_real"] > 0 and counts["train_fake"] > 0 and counts["test_fake"] > 0


def test_balanced_sampling_draws_both_classes_evenly(small_dataset, small_cache):
    datamodule = build_datamodule(
        compose_config("train", [f"data.root={small_dataset}", f"data.cache_dir={small_cache}", "data.folds=2",
                                 "data.balanced_sampling=true",
                                 *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items())]).data
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    sampler = datamodule.train_dataloader().sampler
    labels = datamodule.train_dataset().item_labels()
    drawn = labels[[i for _ in range(20) for i in sampler]]
    assert abs(labels.mean() - 0.5) > 0.05, "the split is balanced already: the test proves nothing"
    assert 0.45 < drawn.mean() < 0.55


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=1"], "data.folds=1"),
        (["data.fold=5"], "data.fold=5"),
        (["model=resnet_lstm", "model.input.frames_per_clip=30"], "frames_per_clip=30"),
        (["model.input.size=128"], "model.input.size=128"),
    ],
)
def test_clashing_values_fail_early_naming_them(overrides, message):
    from src.experiments.config import check_config

    with pytest.raises(ValueError, match=message):
        check_config(compose_config("train", overrides))


def test_a_data_root_holding_something_else_is_refused_and_generation_announces_itself(tmp_path, caplog):
    """A mistyped data.root is noticed: generation says where, how many videos and about how big before it
    starts, and a folder holding a Celeb-DF layout (or anything else) is never written into."""
    import logging

    from src.data.datamodule import _announce_synthetic

    celebdf = tmp_path / "Celeb-DF-v2"
    (celebdf / "Celeb-real").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds a Celeb-DF dataset.*use data=celebdf"):
        _announce_synthetic(celebdf, {"preset": "v2"})
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="neither the embedded synthetic set nor a Celeb-DF layout"):
        _announce_synthetic(other, {"preset": "v2"})
    with caplog.at_level(logging.WARNING):
        _announce_synthetic(tmp_path / "new", {"preset": "v2", "num_identities": 2})
    assert "generating the embedded synthetic Celeb-DF" in caplog.text and str(tmp_path / "new") in caplog.text
    assert " MB" in caplog.text and not (tmp_path / "new").exists()

"""The data module video by video: path spellings, pinned entries, settings, splits, report, prediction."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.experiments.wiring import build_datamodule
from tests.conftest import compose_config, data_overrides


def _instantiate(config):
    """The datamodule of a composed config; the datamodule's own error, not Hydra's wrapper of it."""
    from hydra.errors import InstantiationException

    try:
        return build_datamodule(config)
    except InstantiationException as error:
        raise error.__cause__ from None


def _datamodule(root, cache, *extra: str, config: str = "train"):
    return _instantiate(compose_config(config, [*data_overrides(root, cache), *extra]))


def _perturbation(level: str) -> dict:
    """The test-time perturbation spec of conf/augment/<level>.yaml, as evaluate.py hands it to the datamodule."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config("evaluate", [f"augment={level}"]).augment.transform)


def _odd_spelling(video: Path) -> Path:
    """The same file under another spelling: through its folder's parent and back."""
    return video.parent / ".." / video.parent.name / video.name


@pytest.fixture(scope="module")
def prepared(small_dataset, small_cache):
    """The small dataset set up for fitting, after one test video's entry was built from another spelling
    of its path (as `predict.py video=../ds/Celeb-real/x.mp4` does): (datamodule, that video's path)."""
    datamodule = _datamodule(small_dataset, small_cache)
    index_test = sorted(small_dataset.glob("Celeb-real/*.mp4"))
    listed = {
        line.split()[1] for line in (small_dataset / "List_of_testing_videos.txt").read_text().splitlines()
    }
    video = next(v for v in index_test if f"Celeb-real/{v.name}" in listed)
    odd = _odd_spelling(video)
    cache = datamodule.cache
    cache._paths(cache.key(video))[1].unlink(missing_ok=True)  # its entry is (re)built from the odd spelling
    assert cache.build([odd], progress=False).num_built == 1
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, f"Celeb-real/{video.name}"


# -- one canonical path; every indexed video used or reported ------------------------------------------
def _check_every_video_accounted_for(datamodule) -> None:
    index = datamodule.index
    report = datamodule.data_report()
    skipped = {v["video"] for v in report["skipped_videos"]}
    total = 0
    for split, indexed in datamodule.indexed_splits.items():
        used = {r.path for r in datamodule.splits[split]}
        paths = {r.path for r in indexed}
        assert used | (paths & skipped) == paths and not used & skipped, split
        counts = report["splits"][split]
        assert sum(c["used"] + c["skipped"] for c in counts.values()) == len(paths), split
        total += len(paths)
    assert total == len(index.records)
    assert {r.path for r in index.test()} == {r.path for r in datamodule.indexed_splits["test"]}
    assert report["summary"]["skipped_videos"] == len(skipped) == report["summary"]["failed_videos"]


def test_a_video_cached_under_another_spelling_is_still_scored(prepared):
    """Was: the entry's stored path was matched by string, the video silently left out of the test split."""
    datamodule, video = prepared
    assert video in {r.path for r in datamodule.splits["test"]}
    assert len(datamodule.splits["test"]) == len(datamodule.index.test())
    _check_every_video_accounted_for(datamodule)


def test_a_relative_root_reuses_the_cache_built_with_the_absolute_one(
    prepared, small_dataset, small_cache, tmp_path, monkeypatch
):
    """Was: `data.root=../ds` matched no report and failed with 'need at least folds=2 identity groups'."""
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(small_dataset, tmp_path)
    assert relative.startswith("..")
    datamodule = _datamodule(relative, small_cache)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.build_report.num_built == 0, "the same videos were built again"
    assert {s: len(r) for s, r in datamodule.splits.items()} == {
        s: len(r) for s, r in prepared[0].splits.items()
    }
    _check_every_video_accounted_for(datamodule)


# -- pinned entries ------------------------------------------------------------------------------------
def test_touching_a_video_mid_run_keeps_its_crops_readable(prepared, small_dataset):
    """Was: the key was recomputed from the video's current mtime: FileNotFoundError .../<key>.json."""
    datamodule, _ = prepared
    loader = datamodule.test_dataloader()
    videos = [small_dataset / r.path for r in datamodule.splits["test"]]
    times = {v: v.stat() for v in videos}
    try:
        for video, stat in times.items():  # e.g. an rsync during training
            os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        seen = sum(len(labels) for _, labels, _ in loader)
    finally:
        for video, stat in times.items():
            os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert seen == len(videos)


# -- bad settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting",
    [
        "data.frames_per_video=0",
        "data.face_margin=0",
        "data.face_margin=-1.3",
        "data.detect_max_side=0",
        "data.crop_size=0",
        "data.detect_every=0",
        "data.build_workers=0",
        "data.num_workers=-1",
        "data.max_bad_fraction=2",
    ],
)
def test_bad_settings_fail_naming_the_key_before_any_video_is_touched(setting, tmp_path):
    """Was: frames_per_video=0, face_margin<=0, detect_max_side=0 were blamed on the videos, which got
    permanent .error.json entries."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    with pytest.raises(ValueError, match=f"^{setting.split('=')[0]}=") as error:
        _datamodule(root, cache, setting)
    assert len(str(error.value).splitlines()) == 1
    assert not root.exists() and not cache.exists()


@pytest.mark.parametrize("where", ["the file", "under the file"])
def test_a_cache_dir_that_is_a_file_is_a_one_line_error(where, tmp_path):
    """Was: a FileExistsError / NotADirectoryError traceback from mkdir."""
    file = tmp_path / "not-a-folder"
    file.write_text("")
    cache = file if where == "the file" else file / "face-cache"
    with pytest.raises(ValueError, match=r"data\.cache_dir=.*not a folder"):
        _datamodule(tmp_path / "root", cache)


# -- the dataset root and its cache --------------------------------------------------------------------
def test_scoring_a_video_never_creates_the_synthetic_root(small_dataset, tmp_path):
    """Was: the cache lived in data.root, so `predict.py video=x.mp4` created it and generation then
    refused the non-empty folder."""
    config = compose_config("predict", [f"paths.data_dir={tmp_path / 'data'}"])
    root, cache = Path(config.data.root), Path(config.data.cache_dir)
    assert not cache.is_relative_to(root)
    datamodule = _instantiate(config)
    video = next(small_dataset.glob("Celeb-real/*.mp4"))
    datamodule.cache.build([video], progress=False)
    assert any(cache.rglob("*.npy"))
    assert not root.exists()


# -- one-class splits ----------------------------------------------------------------------------------
def _one_class_fold(index) -> tuple[int, int]:
    from src.data.indexes.base import split_folds

    groups = len({r.identity for r in index.train_val()})
    for folds in range(2, groups + 1):
        for fold in range(folds):
            _, val = split_folds(index.train_val(), folds, fold, 0)
            if len({r.label for r in val}) == 1:
                return folds, fold
    raise AssertionError("every fold of the small dataset has both classes: nothing to test")


def test_a_one_class_validation_split_is_a_clear_error(prepared, small_dataset, small_cache):
    """Was: a warning, then val AUC 0.0 and checkpointing silently selecting on it."""
    folds, fold = _one_class_fold(prepared[0].index)
    datamodule = _datamodule(small_dataset, small_cache, f"data.folds={folds}", f"data.fold={fold}")
    datamodule.prepare_data()
    with pytest.raises(
        ValueError,
        match=rf"^the val split of fold {fold} \(data.folds={folds}, data.split_seed=0\) "
        r"has (0 real and \d+ fake|\d+ real and 0 fake) videos: AUC is undefined",
    ):
        datamodule.setup("fit")
    # evaluation needs only the test split
    evaluation = _datamodule(small_dataset, small_cache, f"data.folds={folds}", f"data.fold={fold}")
    evaluation.setup("test")
    assert evaluation.splits["test"]


# -- per-video perturbation seeds ----------------------------------------------------------------------
def test_a_videos_perturbation_does_not_depend_on_the_videos_before_it(prepared):
    """Was: seeded by the position in the list, so one video failing to decode changed every later one."""
    datamodule, _ = prepared
    records = datamodule.splits["test"]
    heavy = _perturbation("heavy")
    full = datamodule.eval_dataset("test", heavy)
    try:
        datamodule.splits["test"] = records[1:]  # as if the first test video had failed to decode
        fewer = datamodule.eval_dataset("test", heavy)
    finally:
        datamodule.splits["test"] = records
    for i in range(len(fewer)):
        assert fewer.records[i].path == full.records[i + 1].path
        assert torch.equal(fewer[i][0], full[i + 1][0]), fewer.records[i].path
    plain = datamodule.eval_dataset("test", _perturbation("none"))
    assert not torch.equal(full[1][0], plain[1][0]), (
        "the heavy level changed nothing: the test proves nothing"
    )


# -- the data report -----------------------------------------------------------------------------------
def _flat_video(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for _ in range(frames):
        writer.write(np.full((240, 320, 3), 128, np.uint8))
    writer.release()
    return path


def test_the_data_report_counts_splits_classes_and_flags_faceless_videos(
    small_dataset, small_cache, prepared, tmp_path
):
    root = tmp_path / "root"
    shutil.copytree(small_dataset, root)  # times kept: the copy's entries are the original's
    datamodule = prepared[0]
    faceless = next(r.path for r in datamodule.splits["train"] if r.label == 0)
    _flat_video(root / faceless)
    copy = _datamodule(root, small_cache)
    copy.prepare_data()
    copy.setup("fit")
    assert copy.build_report.num_built == 1, "a copy of a dataset (times kept) reuses the original's entries"
    report = copy.data_report()

    flagged = {v["video"]: v for v in report["mostly_undetected_videos"]}
    assert (
        faceless in flagged and flagged[faceless]["centre_fallback"] and flagged[faceless]["split"] == "train"
    )
    assert str(root / faceless) == flagged[faceless]["path"]
    train_real = report["splits"]["train"]["real"]
    assert train_real["centre_fallback_videos"] >= 1 and train_real["mostly_undetected_videos"] >= 1
    for split, classes in report["splits"].items():
        for label, name in ((0, "real"), (1, "fake")):
            counts = classes[name]
            used = [r for r in copy.splits[split] if r.label == label]
            assert counts["used"] == len(used) and counts["skipped"] == 0, (split, name)
            assert counts["frames"] == sum(copy.frame_counts[r.path] for r in used)
            assert 0 <= counts["frames_filled"] + counts["frames_detected"] <= counts["frames"]
    assert report["identity_split"] == "official"
    assert set(report["identity_overlap"]) >= {"train", "val", "test"}
    _check_every_video_accounted_for(copy)


# -- prediction of video files through the test pipeline -----------------------------------------------
def test_video_files_are_scored_through_the_test_pipeline(prepared, small_dataset, small_cache, tmp_path):
    datamodule, _ = prepared
    record = datamodule.splits["test"][0]
    video = small_dataset / record.path
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 1000)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    files = [broken, video, fifo, tmp_path / "missing.mp4"]

    predictor = _datamodule(small_dataset, small_cache)
    reports = predictor.setup_predict(files)
    assert [r.ok for r in reports] == [False, True, False, False]
    assert "broken.mp4" in reports[0].reason and "not a regular file" in reports[2].reason
    assert "no such file" in reports[3].reason
    assert reports[1].num_frames == datamodule.frame_counts[record.path] and reports[1].num_detected > 0
    predictor.prepare_data()  # what Trainer.predict calls: no index, no dataset generation
    predictor.setup("predict")
    assert predictor.index is None
    (batch,) = list(predictor.predict_dataloader())
    x, labels, ids = predictor.on_after_batch_transfer(batch, 0)
    assert ids.tolist() == [1] and labels.tolist() == [-1.0]

    # the very item of test evaluation (same transform, frames, seed), under every augmentation level
    test_item = datamodule.eval_dataset("test", _perturbation("none"))[0][0]
    reference, _, _ = datamodule.on_after_batch_transfer((test_item[None], torch.zeros(1), torch.zeros(1)), 0)
    torch.testing.assert_close(x, reference)
    for level in ("flip", "heavy"):
        heavy = _datamodule(small_dataset, small_cache, f"augment={level}", config="predict")
        heavy.setup_predict([video])
        heavy_item = heavy.predict_dataset()[0][0]
        assert torch.equal(heavy_item, datamodule.eval_dataset("test", _perturbation(level))[0][0]), level


def test_prediction_needs_no_dataset_root(small_dataset, small_cache):
    def rootless():
        overrides = ["data=celebdf", "data.root=null", f"data.cache_dir={small_cache}"]
        return _instantiate(compose_config("predict", overrides))

    predictor = rootless()
    (report,) = predictor.setup_predict([next(small_dataset.glob("Celeb-synthesis/*.mp4"))])
    assert report.ok
    assert len(predictor.predict_dataset()) == 1
    with pytest.raises(ValueError, match="data.root is not set"):
        rootless().setup("fit")


def test_the_test_list_is_still_what_predict_yields_without_setup_predict(prepared):
    datamodule, _ = prepared
    ids = torch.cat([batch[2] for batch in datamodule.predict_dataloader()])
    assert ids.tolist() == list(range(len(datamodule.splits["test"])))

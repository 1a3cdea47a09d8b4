"""Reliability and security end to end: bad videos, bad dataset folders and lists, evil weights, bad
configuration, killed runs and builds, concurrent builders and sweeps, determinism.

Every bad corpus is built in a temporary folder from copies of the small synthetic dataset. Runs of
train.py / evaluate.py are subprocesses, as a user types them, each against its own MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.data.cache import CropSettings, FaceCropCache, extract_face_crops
from src.data.faces.detectors import build_detector
from src.experiments.config import PROJECT_ROOT
from tests.conftest import data_overrides, run_script

HAAR = {"face_detector": "haar", "detect_max_side": 320, "detect_every": 1}  # fast, finds the synthetic faces
CROPS = CropSettings(frames_per_video=20, crop_size=64, **HAAR)
QUICK = CropSettings(frames_per_video=6, crop_size=64, **HAAR)  # for tests that build many entries


# -- helpers: processes and stores ----------------------------------------------------------------
def _env(store: Path, **extra: str) -> dict[str, str]:
    """A complete environment for a subprocess: its own MLflow store and weights folder, no DataLoader
    workers, one face-crop build process."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        "DEEPFAKE_WEIGHTS_DIR": str(store / "weights"),
        "DEEPFAKE_NUM_WORKERS": "0",
        "DEEPFAKE_BUILD_WORKERS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        **extra,
    }


def _start(script: str, overrides: list[str], env: dict[str, str], logs: Path, **popen) -> subprocess.Popen:
    """Start train.py / evaluate.py; stdout and stderr go to files (a full pipe would block it)."""
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, script, *overrides, f"hydra.run.dir={logs}/hydra"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=(logs / "stdout").open("w"),
        stderr=(logs / "stderr").open("w"),
        **popen,
    )


def _finish(process: subprocess.Popen, logs: Path, timeout: float = 300) -> tuple[int, str, str]:
    try:
        code = process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, (logs / "stdout").read_text(), (logs / "stderr").read_text()


def _runs(store: Path, experiment: str) -> list:
    import mlflow

    if not (store / "mlflow.db").is_file():
        return []  # never created: no run was started (and creating an empty store takes seconds)
    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _artifact_json(store: Path, run_id: str, name: str, folder: Path) -> dict:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=name, dst_path=str(folder), tracking_uri=f"sqlite:///{store}/mlflow.db"
    )
    return json.loads(Path(local).read_text())


# -- helpers: bad videos --------------------------------------------------------------------------
def _frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _write_video(path: Path, frames: list[np.ndarray], is_color: bool = True) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height), isColor=is_color
    )
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _boxes(data: bytes | bytearray, start: int, end: int):
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        yield start, size, kind
        start += size


def _faststart(data: bytes) -> bytes:
    """The same mp4 with its index (moov) in front of the frames (mdat), as streaming encoders write it.

    Cut short, such a file keeps its index, which claims every frame: the reader meets the missing
    data only when it reads frames, where decoders are most fragile. OpenCV writes moov last, so a
    plain cut loses the index and the file is rejected before any frame is read."""
    top = {kind: data[i : i + size] for i, size, kind in _boxes(data, 0, len(data))}
    moov = bytearray(top[b"moov"])

    def shift(start: int, end: int) -> None:  # chunk offsets move by the size of the moved index
        for i, size, kind in _boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(i + 8, i + size)
            elif kind == b"stco":
                for j in range(struct.unpack(">I", moov[i + 12 : i + 16])[0]):
                    at = i + 16 + 4 * j
                    moov[at : at + 4] = struct.pack(
                        ">I", struct.unpack(">I", moov[at : at + 4])[0] + len(moov)
                    )

    shift(8, len(moov))
    return top[b"ftyp"] + top.get(b"free", b"") + bytes(moov) + top[b"mdat"]


def _make_bad_videos(source: Path, folder: Path) -> dict[str, Path]:
    """One of each kind of bad video, made from the good mp4 `source`."""
    folder.mkdir(parents=True, exist_ok=True)
    data, frames = source.read_bytes(), _frames(source)
    faststart = _faststart(data)
    noise = np.random.default_rng(0).integers(0, 256, (len(frames), *frames[0].shape), dtype=np.uint8)
    made = {
        "zero_bytes": b"",
        "truncated_30": data[: len(data) * 3 // 10],
        "truncated_90": data[: len(data) * 9 // 10],
        "faststart_truncated_30": faststart[: len(faststart) * 3 // 10],
        "faststart_truncated_90": faststart[: len(faststart) * 9 // 10],
        "text": b"this is not a video\n" * 100,
        "random_bytes": np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
    }
    paths = {}
    for name, content in made.items():
        paths[name] = folder / f"{name}.mp4"
        paths[name].write_bytes(content)
    paths["short_5_frames"] = _write_video(folder / "short_5_frames.mp4", frames[:5])
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    paths["grayscale"] = _write_video(folder / "grayscale.mp4", gray, is_color=False)
    paths["odd_161x97"] = _write_video(folder / "odd_161x97.mp4", [cv2.resize(f, (161, 97)) for f in frames])
    paths["noise_no_face"] = _write_video(folder / "noise_no_face.mp4", list(noise))
    paths["flat_no_face"] = _write_video(
        folder / "flat_no_face.mp4", [np.full_like(frames[0], 128)] * len(frames)
    )
    return paths


UNREADABLE = {
    "zero_bytes",
    "truncated_30",
    "truncated_90",
    "faststart_truncated_30",
    "faststart_truncated_90",
    "text",
    "random_bytes",
}


# -- 1. bad videos ---------------------------------------------------------------------------------
def test_each_kind_of_bad_video_fails_alone_or_is_used_and_reported(small_dataset, tmp_path):
    """What decord does on each bad file, through the real build path (decoding in build processes)."""
    bad = _make_bad_videos(next((small_dataset / "Celeb-real").glob("*.mp4")), tmp_path / "bad")
    good = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:2]
    cache = FaceCropCache(tmp_path / "cache", CROPS, video_timeout=60)
    start = time.monotonic()
    report = cache.build([*bad.values(), *good], workers=2, progress=False)
    assert time.monotonic() - start < 60, "a bad file stalled the build"
    by_name = {Path(v.path).stem: v for v in report.videos}

    for name in UNREADABLE:
        video = by_name[name]
        assert not video.ok, name
        assert str(bad[name]) in video.reason, video.reason
    assert "empty file" in by_name["zero_bytes"].reason
    for name in ("truncated_30", "truncated_90", "text", "random_bytes"):  # no index: ffmpeg rejects them
        assert "cannot open as a video" in by_name[name].reason, by_name[name].reason
    for name in ("faststart_truncated_30", "faststart_truncated_90"):  # an index, then missing frame data
        # decord's wording depends on the codec (MPEG-4: av_read_frame failed; H.264: cannot create buffer)
        assert not by_name[name].ok and str(bad[name]) in by_name[name].reason, by_name[name].reason
    assert "died" not in " ".join(v.reason for v in report.videos), "decord crashed a build process"
    assert "did not finish" not in " ".join(v.reason for v in report.videos), "decord hung"

    short = by_name["short_5_frames"]
    assert short.ok and short.num_frames == 5 and short.reason == "short video: 5 of 20 frames"
    assert cache.load(bad["short_5_frames"])[0].shape == (5, 64, 64, 3)
    for name in ("grayscale", "odd_161x97"):
        crops, meta = cache.load(bad[name])
        assert by_name[name].ok and crops.shape == (20, 64, 64, 3), name
        assert by_name[name].num_detected > 0, f"no face found in the {name} video"
    assert cache.load(bad["odd_161x97"])[1]["frame_shape"] == [96, 160]  # MPEG-4 part 2 rounds down to even
    for name in ("noise_no_face", "flat_no_face"):
        assert by_name[name].ok and by_name[name].centre_fallback, name
        assert "centre crops" in by_name[name].degraded
    assert all(by_name[v.stem].ok and not by_name[v.stem].degraded for v in good)
    summary = report.summary()
    assert summary["failed_videos"] == len(UNREADABLE)
    assert summary["degraded_videos"] == 3  # short + two without faces

    # failures are entries too: a second build reports them without decoding anything again
    again = cache.build([*bad.values(), *good], workers=2, progress=False)
    assert again.num_built == 0 and [v.reason for v in again.videos] == [v.reason for v in report.videos]


class _FaultyCache(FaceCropCache):
    """Decoder failures that cannot be caught in Python, as native decoders produce them: a segfault
    and a native call that never returns. Runs in the build processes (pickled there by reference)."""

    def build_one(self, video, detector):
        if video.name.startswith("segfault"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if video.name.startswith("hang"):
            time.sleep(3600)
        return super().build_one(video, detector)


def test_a_crashing_or_hanging_decoder_fails_its_video_not_the_build(small_dataset, tmp_path):
    import multiprocessing

    good = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:3]
    segfault, hang = tmp_path / "segfault.mp4", tmp_path / "hang.mp4"
    shutil.copy(good[0], segfault)
    shutil.copy(good[0], hang)
    videos = [good[0], segfault, good[1], hang, good[2]]
    cache = _FaultyCache(tmp_path / "cache", CROPS, video_timeout=4)
    start = time.monotonic()
    report = cache.build(videos, workers=2, progress=False)
    assert time.monotonic() - start < 40
    assert [v.path for v in report.videos] == [str(v) for v in videos]
    failed = {Path(v.path).name: v.reason for v in report.failed}
    assert set(failed) == {"segfault.mp4", "hang.mp4"}
    assert str(segfault) in failed["segfault.mp4"] and "SIGSEGV" in failed["segfault.mp4"]
    assert str(hang) in failed["hang.mp4"] and "did not finish within 4 s" in failed["hang.mp4"]
    for video in good:
        assert cache.load(video)[0].shape == (20, 64, 64, 3)
    assert not multiprocessing.active_children(), "build processes outlived the build"

    # recorded as failed: the next build reports them at once instead of crashing or waiting again
    start = time.monotonic()
    again = cache.build(videos, workers=2, progress=False)
    assert again.num_reused == 5 and time.monotonic() - start < 4
    assert {Path(v.path).name for v in again.failed} == {"segfault.mp4", "hang.mp4"}


@pytest.fixture(scope="module")
def bad_corpus(small_dataset, tmp_path_factory) -> Path:
    """The small dataset plus bad videos (valid names) in train/val and in the test list, and bad test-list
    lines; a good video outside the root that the list points at. Returns the root."""
    base = tmp_path_factory.mktemp("bad-corpus")
    root = base / "root"
    shutil.copytree(small_dataset, root, ignore=shutil.ignore_patterns(".synthetic.json", ".face-cache"))
    bad = _make_bad_videos(next((small_dataset / "Celeb-real").glob("*.mp4")), base / "made")
    placed = {
        "Celeb-real/id10_0000.mp4": "zero_bytes",
        "Celeb-real/id10_0001.mp4": "truncated_30",
        "Celeb-synthesis/id10_id0_0000.mp4": "truncated_90",
        "Celeb-synthesis/id11_id1_0000.mp4": "text",
        "Celeb-real/id11_0000.mp4": "short_5_frames",
        "Celeb-real/id12_0000.mp4": "grayscale",
        "Celeb-synthesis/id12_id2_0000.mp4": "odd_161x97",
        "YouTube-real/00077.mp4": "noise_no_face",
        # test list
        "Celeb-real/id13_0000.mp4": "faststart_truncated_90",
        "Celeb-synthesis/id13_id0_0000.mp4": "flat_no_face",
        "YouTube-real/00078.mp4": "grayscale",
    }
    for rel, kind in placed.items():
        shutil.copy(bad[kind], root / rel)
    outside = base / "outside" / "Celeb-real" / "id0_0000.mp4"  # a good video outside the root
    outside.parent.mkdir(parents=True)
    shutil.copy(next((small_dataset / "Celeb-real").glob("*.mp4")), outside)
    with (root / "List_of_testing_videos.txt").open("a") as listing:
        listing.write(
            "1 Celeb-real/id13_0000.mp4\n0 Celeb-synthesis/id13_id0_0000.mp4\n1 YouTube-real/00078.mp4\n"
            "this line is malformed\n"
            "1 Celeb-real/id99_0000.mp4\n"
            "1 ../outside/Celeb-real/id0_0000.mp4\n"
            "1 Celeb-real/../../outside/Celeb-real/id0_0000.mp4\n"
            f"1 {outside}\n"
        )
    return root


BAD_SKIPPED = {
    "Celeb-real/id10_0000.mp4",
    "Celeb-real/id10_0001.mp4",
    "Celeb-synthesis/id10_id0_0000.mp4",
    "Celeb-synthesis/id11_id1_0000.mp4",
    "Celeb-real/id13_0000.mp4",
}
BAD_DEGRADED = {"Celeb-real/id11_0000.mp4", "YouTube-real/00077.mp4", "Celeb-synthesis/id13_id0_0000.mp4"}


def _bad_data(root: Path, cache: Path) -> list[str]:
    return [
        "data=celebdf",
        f"data.root={root}",
        f"data.cache_dir={cache}",
        "data.folds=2",
        "data.frames_per_video=8",
    ]


@pytest.fixture(scope="module")
def bad_training(bad_corpus, tmp_path_factory):
    """`python train.py data=celebdf data.root=<bad corpus>`: (store, root, result)."""
    root = bad_corpus
    store = tmp_path_factory.mktemp("bad-train-store")
    result = run_script(
        "train.py",
        [
            *_bad_data(root, store / "cache"),
            "weights=scratch",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            f"paths.checkpoint_dir={store}/checkpoints",
        ],
        {**_env(store), "HYDRA_OUTPUTS": str(store / "hydra")},
    )
    return store, root, result


def _check_data_report(report: dict, root: Path) -> None:
    skipped = {str(Path(v["path"]).relative_to(root)): v["reason"] for v in report["skipped_videos"]}
    assert set(skipped) == BAD_SKIPPED
    for rel, reason in skipped.items():
        assert str(root / rel) in reason, reason
    degraded = {str(Path(v["path"]).relative_to(root)): v["reason"] for v in report["degraded_videos"]}
    assert set(degraded) >= BAD_DEGRADED  # real videos may also have a frame or two without a detection
    assert degraded["Celeb-real/id11_0000.mp4"].startswith("short video: 5 of 8 frames")
    assert "centre crops" in degraded["YouTube-real/00077.mp4"]
    # test-list lines ("<list>:<n>: '<line>'"); the videos such lines name are quarantined as separate entries
    entries = {
        e["entry"].split(": ", 1)[1]: e["reason"]
        for e in report["skipped_index_entries"]
        if ": " in e["entry"]
    }
    assert "malformed" in entries["'this line is malformed'"]
    assert "file not found" in entries["'1 Celeb-real/id99_0000.mp4'"]
    assert "escapes the dataset root" in entries["'1 ../outside/Celeb-real/id0_0000.mp4'"]
    assert "escapes the dataset root" in entries["'1 Celeb-real/../../outside/Celeb-real/id0_0000.mp4'"]
    assert "absolute path" in entries[f"'1 {root.parent / 'outside' / 'Celeb-real' / 'id0_0000.mp4'}'"]
    # a rejected line naming Celeb-real/id0_0000.mp4 (through ../outside/) keeps that video out of training
    quarantined = {e["entry"]: e["reason"] for e in report["skipped_index_entries"] if ": " not in e["entry"]}
    assert "kept out of train/val" in quarantined["Celeb-real/id0_0000.mp4"]
    # nothing outside the root was ever decoded: every video of the report is an indexed one
    assert report["summary"]["videos"] == 26 + 11 - 1
    assert report["summary"]["failed_videos"] == len(BAD_SKIPPED)


def test_training_goes_on_with_the_good_videos_and_reports_the_bad(bad_training, tmp_path):
    store, root, result = bad_training
    (run,) = _runs(store, "train")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/skipped_videos"] == len(BAD_SKIPPED)
    assert "val/video_auc" in run.data.metrics and "test/video_auc" in run.data.metrics
    _check_data_report(_artifact_json(store, run.info.run_id, "data_report.json", tmp_path), root)
    output = result.stdout + result.stderr
    for rel in BAD_SKIPPED:
        assert f"skipped video {root / rel}: {root / rel}" in output, rel  # the log names path and reason


def test_evaluation_scores_the_good_test_videos_and_reports_the_bad(bad_training, small_dataset, tmp_path):
    import csv

    import mlflow

    store, root, _ = bad_training
    (best,) = (store / "checkpoints").glob("*/run-*/best-*.ckpt")
    run_script(
        "evaluate.py",
        [*_bad_data(root, store / "cache"), "weights=finetuned", f"weights.path={best}"],
        {**_env(store), "HYDRA_OUTPUTS": str(tmp_path / "hydra")},
    )
    (run,) = _runs(store, "evaluate")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/skipped_videos"] == len(BAD_SKIPPED)
    _check_data_report(_artifact_json(store, run.info.run_id, "data_report.json", tmp_path), root)
    scores = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="video_scores.csv",
        dst_path=str(tmp_path),
        tracking_uri=f"sqlite:///{store}/mlflow.db",
    )
    scored = {row["path"] for row in csv.DictReader(open(scores))}
    original = {
        line.split()[1] for line in (small_dataset / "List_of_testing_videos.txt").read_text().splitlines()
    }
    assert scored == original | {"Celeb-synthesis/id13_id0_0000.mp4", "YouTube-real/00078.mp4"}


# -- 2, 3, 4. failures that must be clear, early and harmless ---------------------------------------
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _failing_cases(base: Path, small_dataset: Path) -> dict[str, tuple[str, list[str]]]:
    """case -> (script, overrides) of every run that must fail; "{work}" is the case's own folder."""
    # data=synthetic would generate the dataset into data.root: it must never come to that
    never = ["weights=scratch", "data.root={work}/never-generated"]
    cases = {
        "unknown_option": ("train.py", ["model=nonexistent"]),
        "misspelled_key": ("train.py", ["data.rooot=x"]),
        "folds": ("train.py", [*never, "data.folds=1"]),
        "fold": ("train.py", [*never, "data.folds=3", "data.fold=3"]),
        "frames_per_clip": (
            "train.py",
            [*never, "model=resnet_lstm", "model.input.frames_per_clip=30", "data.frames_per_video=20"],
        ),
        "image_size": ("train.py", [*never, "model.input.size=128"]),
        "missing_root": ("train.py", ["data=celebdf", f"data.root={base}/no-such-root", "weights=scratch"]),
        "missing_folder": ("train.py", ["data=celebdf", f"data.root={base}/no-folder", "weights=scratch"]),
        "empty_class": ("train.py", ["data=celebdf", f"data.root={base}/no-fakes", "weights=scratch"]),
        "evil_pickle": (
            "evaluate.py",
            [
                "weights=finetuned",
                f"weights.path={base}/evil.ckpt",
                *data_overrides(small_dataset, base / "evil-cache"),
            ],
        ),
    }
    for copy in ("no-fakes", "no-folder"):
        shutil.copytree(
            small_dataset, base / copy, ignore=shutil.ignore_patterns(".synthetic.json", ".face-cache")
        )
    for video in (base / "no-fakes" / "Celeb-synthesis").iterdir():
        video.unlink()
    shutil.rmtree(base / "no-folder" / "Celeb-synthesis")
    return cases


@pytest.fixture(scope="module")
def failing_runs(request, small_dataset, tmp_path_factory):
    """The runs that must fail, those of the selected tests only, all started at once (each pays ~8 s of
    imports; the cores share them). Returns {case: (exit code, stdout, stderr, work folder)}."""
    import torch

    wanted = {
        item.callspec.params["case"]
        for item in request.session.items
        if "failing_runs" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
    }
    base = tmp_path_factory.mktemp("failing")
    cases = _failing_cases(base, small_dataset)
    torch.save({"state_dict": _RunsCode(base / "pwned")}, base / "evil.ckpt")
    if "too_many_bad" in wanted:  # in the cache of the bad training run: its failures count as when built
        bad_store, root, _ = request.getfixturevalue("bad_training")
        cases["too_many_bad"] = (
            "train.py",
            [*_bad_data(root, bad_store / "cache"), "weights=scratch", "data.max_bad_fraction=0.1"],
        )
    started = {}
    for case in sorted(wanted):
        script, overrides = cases[case]
        work = base / case
        overrides = [o.replace("{work}", str(work)) for o in overrides]
        started[case] = (
            _start(
                script, [*overrides, f"paths.checkpoint_dir={work}/checkpoints"], _env(work), work / "logs"
            ),
            work,
        )
    return {case: (*_finish(process, work / "logs"), work) for case, (process, work) in started.items()}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_option", "Could not find 'model/nonexistent'"),
        ("misspelled_key", "Could not override 'data.rooot'"),
    ],
)
def test_hydra_rejects_unknown_options_and_misspelled_keys(failing_runs, case, message):
    code, _, stderr, _ = failing_runs[case]
    assert code != 0 and message in stderr, stderr[-2000:]
    assert "Traceback" not in stderr


# each failing run costs ~8 s of CPU for its imports: one of a kind runs in the fast set
@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param(
            "folds", "data.folds=1: k-fold cross-validation needs at least 2 folds", marks=pytest.mark.slow
        ),
        pytest.param("fold", "data.fold=3 is out of range for data.folds=3", marks=pytest.mark.slow),
        pytest.param(
            "frames_per_clip",
            "model.input.frames_per_clip=30 > data.frames_per_video=20",
            marks=pytest.mark.slow,
        ),
        ("image_size", "model.input.size=128: mesonet has a fixed 256x256 input"),
    ],
)
def test_clashing_values_fail_before_any_data_work(failing_runs, case, message):
    code, _, stderr, work = failing_runs[case]
    assert code != 0 and message in stderr, stderr[-2000:]
    assert not (work / "never-generated").exists(), "the dataset was generated before the check"
    assert not (work / "checkpoints").exists()
    assert not _runs(work, "train"), "an MLflow run was started before the check"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_root", "Celeb-DF root not found: {base}/no-such-root"),
        pytest.param(
            "missing_folder",
            "required folder missing: {base}/no-folder/Celeb-synthesis",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "empty_class", "no fake videos in the train/val split of {base}/no-fakes", marks=pytest.mark.slow
        ),
    ],
)
def test_bad_dataset_folders_fail_with_a_clear_message(failing_runs, case, message):
    code, _, stderr, work = failing_runs[case]
    assert code != 0
    assert message.format(base=work.parent) in stderr, stderr[-2000:]
    assert not _runs(work, "train"), "a run was started for a dataset that cannot be used"


@pytest.mark.parametrize("case", ["too_many_bad"])
def test_too_many_bad_videos_is_a_clear_failure_naming_them(failing_runs, bad_corpus, case):
    code, _, stderr, work = failing_runs[case]
    root = bad_corpus
    assert code != 0
    line = next((line for line in stderr.splitlines() if "TooManyBadVideos: " in line), "")
    # 26 + 11 videos, less the one a rejected test-list line keeps out of train/val
    assert f"5 of 36 videos under {root} could not be decoded" in line, stderr[-3000:]
    assert "> data.max_bad_fraction=0.1" in line
    named = [rel for rel in BAD_SKIPPED if f"{root / rel}: " in line]
    assert len(named) >= 3, line
    assert not _runs(work, "train")


@pytest.mark.parametrize("case", ["evil_pickle"])
def test_evil_checkpoint_is_refused_by_evaluate_without_running_its_code(failing_runs, case, tmp_path):
    import torch

    code, _, stderr, work = failing_runs[case]
    evil, marker = work.parent / "evil.ckpt", work.parent / "pwned"
    assert code != 0
    assert f"{evil} is not a loadable checkpoint" in stderr, stderr[-2000:]
    assert not marker.exists(), "loading the checkpoint ran the code in it"
    (run,) = _runs(work, "evaluate")
    assert run.info.status == "FAILED" and str(evil) in run.data.tags["error"]
    # such a file is really evil: an unsafe load runs it (so the check above can fail)
    torch.save({"state_dict": _RunsCode(tmp_path / "pwned")}, tmp_path / "evil.ckpt")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert (tmp_path / "pwned").read_text() == "pwned"


# -- 5. interruptions -------------------------------------------------------------------------------
def _wait_for(condition, process: subprocess.Popen, timeout: float, what: str, logs: Path | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            detail = (logs / "stderr").read_text()[-3000:] if logs else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}\n{detail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this test started (with start_new_session=True), if anything is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.mark.slow  # resume is in make test through tests/experiments/test_train.py and the run-folder tests
def test_a_run_killed_mid_training_resumes_into_the_same_mlflow_run(small_dataset, small_cache, tmp_path):
    import mlflow

    env, checkpoints, logs = _env(tmp_path), tmp_path / "checkpoints", tmp_path / "first"
    common = [
        "weights=scratch",
        f"paths.checkpoint_dir={checkpoints}",
        "trainer.limit_train_batches=2",
        "test_after_fit=false",
        *data_overrides(small_dataset, small_cache),
    ]
    first = _start("train.py", [*common, "trainer.max_epochs=30"], env, logs, start_new_session=True)
    try:
        _wait_for(
            lambda: any(checkpoints.glob("*/run-*/last.ckpt")), first, 240, "a last.ckpt was written", logs
        )
    finally:
        _kill_group(first)
    (killed,) = _runs(tmp_path, "train")
    assert killed.info.status == "RUNNING", "the run was not interrupted"
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    before = {m.step for m in client.get_metric_history(killed.info.run_id, "val/video_auc")}

    run_script(
        "train.py",
        [*common, "ckpt_path=last", "trainer.max_epochs=3"],
        {**env, "HYDRA_OUTPUTS": str(tmp_path / "second")},
    )
    (run,) = _runs(tmp_path, "train")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed_from"] == "last"
    history = client.get_metric_history(run.info.run_id, "val/video_auc")
    steps = {m.step for m in history}  # one validation per epoch, at the step count it was reached
    assert before and before < steps and len(steps) == 3


BUILD = """
import json, sys
from pathlib import Path
from src.data.cache import CropSettings, FaceCropCache
cache = FaceCropCache(sys.argv[1], CropSettings(frames_per_video=6, crop_size=64, face_detector="haar",
                                                detect_max_side=320, detect_every=1))
report = cache.build([Path(p) for p in sys.argv[3:]], workers=int(sys.argv[2]), progress=False)
print(json.dumps(report.summary()))
"""


def _start_build(cache_dir: Path, videos: list[Path], workers: int, logs: Path, **popen) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(cache_dir), str(workers), *map(str, videos)],
        cwd=PROJECT_ROOT,
        stdout=(logs / "stdout").open("w"),
        stderr=(logs / "stderr").open("w"),
        **popen,
    )


def _many_videos(small_dataset: Path, folder: Path, copies: int) -> list[Path]:
    folder.mkdir()
    videos = []
    for copy in range(copies):
        for video in sorted(small_dataset.glob("*/*.mp4")):
            videos.append(folder / f"{copy}-{video.parent.name}-{video.name}")
            os.link(video, videos[-1])
    return videos


def _process_group_gone(pgid: int) -> bool:
    """No live (non-zombie) process left in the group (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def test_a_cache_build_killed_midway_leaves_no_bad_entry_and_the_next_build_completes(
    small_dataset, tmp_path
):
    videos = _many_videos(small_dataset, tmp_path / "videos", copies=2)
    cache = FaceCropCache(tmp_path / "cache", QUICK)
    logs = tmp_path / "logs"
    build = _start_build(cache.cache_dir, videos, 2, logs, start_new_session=True)
    try:
        _wait_for(
            lambda: len(list(cache.cache_dir.glob("*/*.json"))) >= 4, build, 120, "entries were written", logs
        )
        build.kill()  # the main process only: its build processes must notice and stop
        build.wait()
        deadline = time.monotonic() + 30
        while not _process_group_gone(build.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _process_group_gone(build.pid), "build processes outlived the killed build"
    finally:
        _kill_group(build)
    done_before = [v for v in videos if cache.lookup(v) is not None]
    assert 4 <= len(done_before) < len(videos), "the kill did not land mid-build"

    report = cache.build(videos, workers=2, progress=False)
    assert not report.failed and report.num_reused == len(done_before)
    assert report.num_built == len(videos) - len(done_before)
    for video in videos:
        crops, meta = cache.load(video)
        assert crops.shape == (6, 64, 64, 3) and meta["report"]["ok"]
    detector = build_detector("haar")
    for video in done_before[:3]:  # what the killed build wrote is what a clean build writes
        np.testing.assert_array_equal(cache.load(video)[0], extract_face_crops(video, QUICK, detector)[0])


def test_two_processes_building_one_cache_do_not_corrupt_it(small_dataset, tmp_path):
    videos = sorted(small_dataset.glob("*/*.mp4"))[:12]
    shared = tmp_path / "shared"
    builds = [_start_build(shared, videos, 1, tmp_path / f"logs{i}") for i in range(2)]
    for i, build in enumerate(builds):
        assert build.wait(180) == 0, (tmp_path / f"logs{i}" / "stderr").read_text()[-3000:]
        summary = json.loads((tmp_path / f"logs{i}" / "stdout").read_text().splitlines()[-1])
        assert summary["failed_videos"] == 0 and summary["videos"] == 12
    reference = FaceCropCache(tmp_path / "reference", QUICK)
    reference.build(videos, workers=2, progress=False)
    cache = FaceCropCache(shared, QUICK)
    for video in videos:
        crops, meta = cache.load(video)
        np.testing.assert_array_equal(crops, reference.load(video)[0])
        np.testing.assert_equal(meta, reference.load(video)[1])  # landmarks: arrays, NaN where missing
    leftovers = [p.name for p in shared.rglob(".*")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# -- 6. concurrent sweeps ---------------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_sweep_jobs_lose_no_run_and_no_metric(bad_training, small_dataset, small_cache, tmp_path):
    store, _, _ = bad_training
    (best,) = (store / "checkpoints").glob("*/run-*/best-*.ckpt")
    run_script(
        "evaluate.py",
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"weights.path={best}",
            "augment=none,flip,heavy",
            "seed=1,2",
            *data_overrides(small_dataset, small_cache),
        ],
        {**_env(tmp_path), "HYDRA_OUTPUTS": str(tmp_path / "hydra")},
    )
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = _runs(tmp_path, "evaluate")
    assert sorted((r.data.tags["augment"], r.data.params["seed"]) for r in runs) == sorted(
        (a, s) for a in ("none", "flip", "heavy") for s in ("1", "2")
    )
    expected = {
        f"test/{level}_{m}" for level in ("video", "frame") for m in ("auc", "ap", "acc", "loss", "eer")
    }
    expected |= {"data/skipped_videos", "data/frame_detection_rate", "data/scored_videos"}
    expected |= {
        f"test/video_{m}_ci_{end}" for m in ("auc", "ap", "acc", "loss", "eer") for end in ("low", "high")
    }
    # each level's perturbation parameters are params too, so the count is per level
    for level in ("none", "flip", "heavy"):
        params = {len(r.data.params) for r in runs if r.data.tags["augment"] == level}
        assert len(params) == 1, f"{level} runs lost params: {params}"
    for run in runs:
        assert run.info.status == "FINISHED" and expected <= set(run.data.metrics), expected - set(
            run.data.metrics
        )
        for key in expected:
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "data_report.json", "video_scores.csv", "roc_curve.png"} <= artifacts


# -- 7. determinism ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics(small_dataset, small_cache, tmp_path):
    metrics = []
    for attempt in ("a", "b"):
        store = tmp_path / attempt
        run_script(
            "train.py",
            [
                "weights=scratch",
                "trainer.max_epochs=2",
                f"paths.checkpoint_dir={store}/ckpt",
                *data_overrides(small_dataset, small_cache),
            ],
            {**_env(store), "HYDRA_OUTPUTS": str(store / "hydra")},
        )
        (run,) = _runs(store, "train")
        metrics.append(
            {k: v for k, v in run.data.metrics.items() if k.startswith(("val/", "test/", "train/"))}
        )
    assert len(metrics[0]) >= 20 and metrics[0].keys() == metrics[1].keys()
    different = {k: (metrics[0][k], metrics[1][k]) for k in metrics[0] if metrics[0][k] != metrics[1][k]}
    assert not different, f"same seed, different metrics: {different}"


# -- 8. round two: weights caches are data, never code ----------------------------------------------
def _resnet_cfg(*extra: str):
    from tests.conftest import compose_config

    return compose_config("evaluate", ["model=resnet_lstm", "weights=pretrained", *extra])


def test_a_code_running_pickle_in_torchvisions_cache_never_runs(tmp_path, monkeypatch):
    """The file torchvision's loader would have unpickled with weights_only=False: refused by its
    published hash (resnet50-0676ba61.pth) before anything reads it."""
    import hydra
    import torch
    from torchvision.models import ResNet50_Weights

    from src.models.weights import IncompatibleWeights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "pwned"
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save({"state_dict": _RunsCode(marker)}, cached)
    cfg = _resnet_cfg()
    with pytest.raises(
        IncompatibleWeights, match=r"resnet50-0676ba61\.pth: SHA-256 .* does not match the published 0676ba61"
    ):
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))
    assert not marker.exists(), "the cached torchvision file ran its code"


@pytest.mark.parametrize("model", ["resnet_lstm", "xception"])
def test_a_code_running_pickle_given_as_a_weights_file_is_refused_as_data(model, tmp_path):
    import hydra
    import torch

    from src.models.weights import IncompatibleWeights

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsCode(marker)}, evil)
    cfg = compose_config_evaluate(model, f"model.pretrained.file={evil}")
    with pytest.raises(IncompatibleWeights):
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))
    assert not marker.exists(), f"{model}: the weights file ran its code"


def compose_config_evaluate(model: str, *extra: str):
    from tests.conftest import compose_config

    return compose_config("evaluate", [f"model={model}", "weights=pretrained", *extra])


def test_a_mesonet_download_that_does_not_match_the_original_is_never_used(tmp_path, monkeypatch):
    """A download (here a local file:// URL standing in for GitHub) lands only when its SHA-256 is the
    original's; a stalled or substituted transfer leaves nothing behind in the weights folder."""
    from src.models.nets.mesonet import ORIGINAL_SHA256
    from src.models.weights import IncompatibleWeights, fetch_keras_weights

    fake = tmp_path / "MesoInception_DF.h5"
    fake.write_bytes(b"not the original")
    weights_dir = tmp_path / "weights"
    with pytest.raises(IncompatibleWeights, match="does not match the published"):
        fetch_keras_weights(
            "MesoInception_DF.h5", fake.as_uri(), weights_dir, ORIGINAL_SHA256["MesoInception_DF.h5"]
        )
    assert not weights_dir.exists() or not any(weights_dir.iterdir()), list(weights_dir.iterdir())
    shared = PROJECT_ROOT.parent / "shared" / "mesonet" / "weights" / "MesoInception_DF.h5"
    if shared.is_file():
        path = fetch_keras_weights(
            "MesoInception_DF.h5", shared.as_uri(), weights_dir, ORIGINAL_SHA256["MesoInception_DF.h5"]
        )
        assert path.read_bytes() == shared.read_bytes()


def test_initial_weights_record_the_file_and_its_sha256(tmp_path, monkeypatch):
    import hashlib

    import hydra
    import torch
    from torchvision.models import resnet50

    own = tmp_path / "my-resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), own)
    cfg = _resnet_cfg(f"model.pretrained.file={own}")
    origin = hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model)).initial_weights
    assert origin == f"{own} sha256={hashlib.sha256(own.read_bytes()).hexdigest()}"


# -- 8. round two: signals end runs as KILLED, non-zero ------------------------------------------------
def _signal_after(
    process: subprocess.Popen, condition, logs: Path, signum: int = signal.SIGTERM, timeout: float = 240
):
    try:
        _wait_for(condition, process, timeout, "the moment to signal", logs)
        process.send_signal(signum)
        return process.wait(timeout=120)
    finally:
        _kill_group(process)


def _runs_with(tmp_path: Path, experiment: str, status: str | None = None) -> list:
    import mlflow

    if not (tmp_path / "mlflow.db").is_file():  # never create the store the process under test creates
        return []
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if status is None or r.info.status == status]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_caught_by_the_between_jobs_handler_inside_a_run_still_ends_it_killed(signum, tmp_path):
    """Whichever of our handlers turns the signal into an exception (the run's own, or the process-wide one
    that a library restored while the run was going), the run ends KILLED, not FAILED, and the process
    exits with 128 + signal."""
    from src.utils.signals import exit_on_signals

    run = _mlflow_run(tmp_path)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        exit_on_signals()
        with pytest.raises(SystemExit) as stopped, run.state():
            exit_on_signals()  # a library puts back the handler it found before the run's own
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stored = run.store.get_run(run.id)
    assert stopped.value.code == 128 + signum
    assert stored.info.status == "KILLED" and signal.Signals(signum).name in stored.data.tags["error"]


def _mlflow_run(tmp_path):
    """A run through the one tracking interface, in a store of its own."""
    from omegaconf import OmegaConf

    from src.experiments.tracking import Run

    logger = {
        "_target_": "lightning.pytorch.loggers.MLFlowLogger",
        "experiment_name": "signals",
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
    }
    return Run.start(OmegaConf.create(logger), name="signals")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_inside_a_run_ends_it_killed(signum, tmp_path):
    """The run's own handler: SIGHUP (a closed terminal or ssh session) too, not only SIGTERM/SIGINT; with
    the default SIGHUP action the process died and the run stayed RUNNING."""
    run = _mlflow_run(tmp_path)
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stopped, run.state():
        os.kill(os.getpid(), signum)
        time.sleep(5)
    assert signal.getsignal(signum) is before, "the run's handler must be removed afterwards"
    assert stopped.value.code == 128 + signum
    stored = run.store.get_run(run.id)
    assert stored.info.status == "KILLED" and signal.Signals(signum).name in stored.data.tags["error"]


def test_sigterm_during_training_ends_the_run_killed_with_a_non_zero_status(
    small_dataset, small_cache, tmp_path
):
    env, logs = _env(tmp_path), tmp_path / "logs"
    checkpoints = tmp_path / "checkpoints"
    process = _start(
        "train.py",
        [
            "weights=scratch",
            f"paths.checkpoint_dir={checkpoints}",
            "trainer.max_epochs=50",
            "trainer.limit_train_batches=2",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
        logs,
        start_new_session=True,
    )
    code = _signal_after(process, lambda: any(checkpoints.glob("*/run-*/last.ckpt")), logs)
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    (run,) = _runs_with(tmp_path, "train")
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]


def test_sigterm_during_an_evaluation_sweep_stops_it_and_no_run_stays_running(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    _, checkpoints = trained_mesonet
    best = next(checkpoints.glob("*/run-*/best-*.ckpt"))
    env, logs = _env(tmp_path), tmp_path / "logs"
    process = _start(
        "evaluate.py",
        [
            "-m",
            f"weights.path={best}",
            "augment=none,flip,heavy,jpeg",
            f"hydra.sweep.dir={tmp_path}/sweep",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
        logs,
        start_new_session=True,
    )
    # the sweep folder of job 0 exists once the store was created (before the jobs): polling it is safe then
    code = _signal_after(
        process,
        lambda: (tmp_path / "sweep" / "0").is_dir() and bool(_runs_with(tmp_path, "evaluate", "FINISHED")),
        logs,
    )
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    runs = _runs_with(tmp_path, "evaluate")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) < 4, "the sweep went on after SIGTERM"


@pytest.mark.slow  # signals are in make test through training and sweeps: make test-all
def test_sigterm_during_evaluates_cache_build_ends_the_run_killed(small_dataset, tmp_path):
    """The face-crop cache is built inside the run: a signal there must not leave it RUNNING."""
    root = tmp_path / "root"
    shutil.copytree(small_dataset, root, copy_function=os.link)
    env, logs = _env(tmp_path), tmp_path / "logs"
    process = _start(
        "evaluate.py",
        ["weights=scratch", *data_overrides(root, tmp_path / "fresh-cache")],
        env,
        logs,
        start_new_session=True,
    )
    code = _signal_after(process, lambda: any((tmp_path / "fresh-cache").rglob("*.json")), logs)
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    (run,) = _runs_with(tmp_path, "evaluate")
    assert run.info.status == "KILLED"


# -- 8. round two: the tracking store is checked first -------------------------------------------------
@pytest.mark.parametrize("store", ["unreachable", "corrupt", "read_only"])
def test_an_unusable_tracking_store_fails_in_seconds_with_one_line(store, small_dataset, tmp_path):
    from src.experiments.tracking import TrackingStoreError, check_tracking_store

    db = tmp_path / "mlflow.db"
    uri = {"unreachable": "http://127.0.0.1:9", "corrupt": f"sqlite:///{db}", "read_only": f"sqlite:///{db}"}[
        store
    ]
    if store == "corrupt":
        db.write_bytes(b"this is not a database" * 100)
    if store == "read_only":
        import sqlite3

        sqlite3.connect(db).close()
        db.chmod(0o444)
        if os.access(db, os.W_OK):
            pytest.skip("running as a user who may write read-only files (root)")
    with pytest.raises(TrackingStoreError) as error:
        check_tracking_store(uri)
    assert "\n" not in str(error.value) and (str(db) in str(error.value) or "127.0.0.1:9" in str(error.value))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "weights=scratch", f"data.root={tmp_path}/never"],
        cwd=PROJECT_ROOT,
        env=_env(tmp_path, MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and time.monotonic() - started < 60
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert not (tmp_path / "never").exists(), "data was touched before the store was checked"


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.precision=8", "trainer.precision"),
        ("data.folds=abc", "data.folds"),
        ("trainer.max_epochs=two", "trainer.max_epochs"),
        ("data.frames_per_video=0", "data.frames_per_video"),
    ],
)
def test_bad_values_fail_before_any_run_starts(override, key, tmp_path):
    result = subprocess.run(
        [sys.executable, "evaluate.py", "weights=scratch", override, f"data.root={tmp_path}/never"],
        cwd=PROJECT_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert key in last and "Traceback" not in result.stderr
    assert not _runs_with(tmp_path, "evaluate") and not (tmp_path / "never").exists()


def test_a_bad_value_in_any_job_of_a_sweep_fails_before_the_first_job_and_the_data_work(tmp_path):
    """Job #0 used to run to the end (or the data be generated) before job #1 failed with a traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "-m",
            "weights=scratch",
            "augment=none,heavvy",
            f"data.root={tmp_path}/never",
            f"hydra.sweep.dir={tmp_path}/multirun",
        ],
        cwd=PROJECT_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Could not find 'augment/heavvy'; choose one of flip, "
        "heavy, jpeg, none (job augment=heavvy); no job was started"
    )
    assert "Traceback" not in result.stderr and "Launching" not in result.stdout + result.stderr
    assert not _runs_with(tmp_path, "evaluate") and not (tmp_path / "never").exists()
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            ["data.batch_size=4,0"],
            "ConfigError: data.batch_size=0: must be at least 1 (job data.batch_size=0)",
        ),
        (
            ["trainer.devices=1,abc"],
            "ConfigError: trainer: `devices` selected with `CPUAccelerator` should be an int > 0. "
            "(job trainer.devices=abc)",
        ),
        (
            ["model=mesonet,meso4", "trainer.max_epochs=1,-1"],
            "ConfigError: trainer.max_epochs=-1: must be at least 1 "
            "(job model=mesonet trainer.max_epochs=-1)",
        ),
    ],
)
def test_the_sweep_check_composes_every_value_of_every_swept_key(sweep, message, capsys):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from src.experiments.config import CONFIG_DIR
    from src.experiments.sweeps.callbacks import check_jobs

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["weights=scratch"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["weights=scratch", *sweep]
            cfg.hydra.job.config_name = "train"
        with pytest.raises(SystemExit) as stopped:
            check_jobs(cfg)
        assert stopped.value.code == 1
        assert capsys.readouterr().err.strip() == f"Error: {message}; no job was started"
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["weights=scratch", "model=mesonet,meso4", "train_augment=weak,strong"]
        check_jobs(cfg)  # a good grid passes


def test_a_sweep_whose_jobs_fail_at_run_time_still_ends_with_its_table_and_a_line_per_failed_job(
    small_dataset, small_cache, tmp_path
):
    """weights=finetuned with nothing trained fails inside each job: Hydra raised the first job's error with a
    traceback and no sweep summary."""
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "-m",
            "augment=none,flip",
            *data_overrides(small_dataset, small_cache),
            f"hydra.sweep.dir={tmp_path}/multirun/sweep-9",
        ],
        cwd=PROJECT_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "Sweep sweep-9: 0 runs" in result.stdout and "Traceback" not in result.stderr
    )  # failed before a run
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3 and errors[-1].startswith("Error: 2 of 2 jobs failed")
    assert all("WeightsNotFound" in line for line in errors[:2])
    assert "job augment=none failed" in errors[0] and "job augment=flip failed" in errors[1]


def test_an_unwritable_artifact_folder_ends_the_run_failed(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    """An error after the run started (here: the artifact store) marks it FAILED, never RUNNING."""
    if os.geteuid() == 0:
        pytest.skip("root may write to read-only folders")
    _, checkpoints = trained_mesonet
    best = next(checkpoints.glob("*/run-*/best-*.ckpt"))
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(mode=0o555)
    client.create_experiment("evaluate", artifact_location=artifacts.as_uri())
    result = subprocess.run(
        [sys.executable, "evaluate.py", f"weights.path={best}", *data_overrides(small_dataset, small_cache)],
        cwd=PROJECT_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    (run,) = _runs_with(tmp_path, "evaluate")
    assert run.info.status == "FAILED"


# -- 8. round two: checkpoint folders, resume and atomic checkpoints ------------------------------------
def _train_cfg(tmp_path: Path, *extra: str):
    from tests.conftest import compose_config

    return compose_config("train", ["weights=scratch", f"paths.checkpoint_dir={tmp_path}/ckpt", *extra])


def test_two_runs_never_share_a_checkpoint_folder_even_with_a_fixed_output_dir(tmp_path):
    from src.experiments.train import run_folder

    cfg = _train_cfg(tmp_path)
    assert run_folder(cfg)[0] != run_folder(cfg)[0]


def test_resume_refuses_a_folder_of_another_configuration(tmp_path):
    from src.experiments.train import RUN_FILE, ResumeMismatch, resume_key, run_folder

    first = _train_cfg(tmp_path, "data.root=/data/one", "seed=1")
    folder, _ = run_folder(first)
    folder.mkdir(parents=True)
    (folder / RUN_FILE).write_text(json.dumps({"mlflow_run_id": "abc", "resume_key": resume_key(first)}))
    (folder / "last.ckpt").write_bytes(b"x")
    again, recorded = run_folder(
        _train_cfg(
            tmp_path,
            "data.root=/data/one",
            "seed=1",
            "ckpt_path=last",
            "trainer.max_epochs=40",
            "data.num_workers=0",
        )
    )
    assert again == folder and recorded["mlflow_run_id"] == "abc"
    for change, named in (
        ("data.root=/data/two", "data.root"),
        ("data.folds=3", "data.folds"),
        ("seed=2", "seed"),
    ):
        with pytest.raises(ResumeMismatch, match=named):
            run_folder(_train_cfg(tmp_path, "data.root=/data/one", "seed=1", "ckpt_path=last", change))
    with pytest.raises(ResumeMismatch, match="data.root"):
        run_folder(_train_cfg(tmp_path, "data.root=/data/two", "seed=1", f"ckpt_path={folder / 'last.ckpt'}"))


def test_checkpoints_are_written_atomically_in_their_own_folder(tmp_path, monkeypatch):
    """A kill mid-write (here: the rename fails) leaves the previous checkpoint intact and no partial file."""
    import torch

    from src.experiments.checkpointing import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    writes = []
    real_save = torch.save
    monkeypatch.setattr(
        torch,
        "save",
        lambda obj, f, *a, **k: (writes.append(os.path.dirname(f.name)), real_save(obj, f, *a, **k)),
    )

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert writes == [str(tmp_path)], "the temporary file must live next to the checkpoint"
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_good_one(tmp_path, caplog):
    import torch

    from src.experiments.train import resume_checkpoint

    torch.save({"epoch": 3}, tmp_path / "best-03.ckpt")
    time.sleep(0.01)
    good = tmp_path / "last.ckpt"
    torch.save({"epoch": 5}, good)
    truncated = good.read_bytes()[: len(good.read_bytes()) // 2]
    assert resume_checkpoint(tmp_path, good) == good
    good.write_bytes(truncated)
    assert resume_checkpoint(tmp_path, good) == tmp_path / "best-03.ckpt"
    assert "unreadable" in caplog.text

"""The face-crop build on bad input files: broken, odd and non-regular files, crashing or hanging decoders."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from src.data.cache import CropSettings, FaceCropCache
from tests.conftest import make_bad_videos

HAAR = {"face_detector": "haar", "detect_max_side": 320, "detect_every": 1}  # fast, finds the synthetic faces


CROPS = CropSettings(frames_per_video=20, crop_size=64, **HAAR)


QUICK = CropSettings(frames_per_video=6, crop_size=64, **HAAR)  # for tests that build many entries


UNREADABLE = {
    "zero_bytes",
    "truncated_30",
    "truncated_90",
    "faststart_truncated_30",
    "faststart_truncated_90",
    "text",
    "random_bytes",
}


def test_each_kind_of_bad_video_fails_alone_or_is_used_and_reported(small_dataset, tmp_path):
    """What decord does on each bad file, through the real build path (decoding in build processes)."""
    bad = make_bad_videos(next((small_dataset / "Celeb-real").glob("*.mp4")), tmp_path / "bad")
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


def test_fifos_devices_and_folders_are_not_regular_files(tmp_path):
    """Was: reported as 'no such file'. A FIFO must not be opened (it would block)."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    missing = tmp_path / "missing.mp4"
    cache = FaceCropCache(tmp_path / "cache", QUICK)
    report = cache.build([fifo, Path("/dev/zero"), folder, missing], progress=False)
    reasons = [v.reason for v in report.videos]
    assert reasons[0] == f"{fifo}: not a regular file (a FIFO (named pipe))"
    assert reasons[1] == "/dev/zero: not a regular file (a character device)"
    assert reasons[2] == f"{folder}: not a regular file (a folder)"
    assert reasons[3] == f"{missing}: no such file"
    assert not list((tmp_path / "cache").rglob("*.error.json")), "not videos: nothing to record"

"""The face-crop cache under faults: corrupt entries, a full disk, a killed build, two builders at once."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from src.data.cache import CropSettings, FaceCropCache, extract_face_crops
from src.data.faces.detectors import build_detector
from src.experiments.config import PROJECT_ROOT
from tests.conftest import kill_group, wait_for

QUICK = CropSettings(
    frames_per_video=6, crop_size=64, face_detector="haar", detect_max_side=320, detect_every=1
)


def test_a_corrupt_entry_is_rebuilt_and_a_pinned_one_names_video_and_file(small_dataset, tmp_path):
    """Was: a truncated .npy failed every rerun with 'mmap length is greater than file size'."""
    videos = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:2]
    cache = FaceCropCache(tmp_path / "cache", QUICK)
    cache.build(videos, progress=False)
    crops_file, _, _ = cache._paths(cache.key(videos[0]))
    intact = crops_file.read_bytes()
    crops_file.write_bytes(intact[: len(intact) // 2])  # truncated, e.g. by a full disk
    cache._paths(cache.key(videos[1]))[1].write_text('{"report": ')  # bad JSON

    with pytest.raises(ValueError, match="corrupt") as error:
        cache.load(videos[0])  # as a run that pinned this entry reads it: told which video and which file
    assert str(videos[0]) in str(error.value) and str(crops_file) in str(error.value)

    rebuilt = cache.build(videos, progress=False)
    assert rebuilt.num_built == 2 and not rebuilt.failed
    for video in videos:
        crops, meta = cache.load(video)
        assert crops.shape == (6, 64, 64, 3) and len(meta["frame_indices"]) == 6


class _DiskFullCache(FaceCropCache):
    """A cache on a disk that fills up while the crops are written (in the build process)."""

    def build_one(self, video, detector):
        real_save = np.save

        def save_until_full(file, array, *args, **kwargs):
            file.write(b"\x93NUMPY" + b"\0" * 4096)  # part of the array made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")

        np.save = save_until_full
        try:
            return super().build_one(video, detector)
        finally:
            np.save = real_save


def test_disk_full_stops_the_build_as_disk_full_and_leaves_no_partial_file(small_dataset, tmp_path):
    """Was: partial hidden .npy files stayed, and good videos were reported as 'could not be decoded'."""
    videos = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:3]
    cache_dir = tmp_path / "cache"
    with pytest.raises(ValueError, match="disk full") as error:
        _DiskFullCache(cache_dir, QUICK).build(videos, workers=2, progress=False)
    assert "data.cache_dir" in str(error.value) and "decode" not in str(error.value)
    left = [p.name for p in cache_dir.rglob("*") if p.is_file()]
    assert left == [], f"partial or error entries left behind: {left}"
    # nothing was recorded against the videos: with space again, all of them build
    again = FaceCropCache(cache_dir, QUICK).build(videos, progress=False)
    assert again.num_built == 3 and not again.failed


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
        wait_for(
            lambda: len(list(cache.cache_dir.glob("*/*.json"))) >= 4, build, 120, "entries were written", logs
        )
        build.kill()  # the main process only: its build processes must notice and stop
        build.wait()
        deadline = time.monotonic() + 30
        while not _process_group_gone(build.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _process_group_gone(build.pid), "build processes outlived the killed build"
    finally:
        kill_group(build)
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

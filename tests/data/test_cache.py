"""Decoding, face detection, crop boxes and the face-crop cache."""

from __future__ import annotations

import json
import os

import cv2
import decord
import numpy as np
import pytest

from src.data.cache import CropSettings, FaceCropCache
from src.data.faces.detectors import HaarFaceDetector, build_detector
from src.data.faces.track import square_box, track_faces
from src.data.faces.video import VideoDecodeError, evenly_spaced_indices, linspace_indices, read_frames
from src.utils.errors import ConfigError
from tests.conftest import SHARED_MESONET


def test_evenly_spaced_indices_cover_the_video():
    assert evenly_spaced_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert evenly_spaced_indices(3, 5).tolist() == [0, 1, 2]
    assert evenly_spaced_indices(0, 5).tolist() == []


@pytest.mark.parametrize(("total", "wanted"), [(100, 4), (24, 6), (300, 20), (7, 7), (2, 1), (1, 1), (10, 3)])
def test_linspace_sampling_is_numpys_linspace_rounded_with_first_and_last_frame(total, wanted):
    expected = np.round(np.linspace(0, total - 1, wanted)).astype(np.int64)
    np.testing.assert_array_equal(linspace_indices(total, wanted), expected)
    assert linspace_indices(total, wanted)[0] == 0
    assert wanted == 1 or linspace_indices(total, wanted)[-1] == total - 1


@pytest.mark.parametrize(("total", "wanted"), [(3, 5), (5, 20), (1, 4)])
def test_linspace_sampling_of_a_short_video_yields_each_frame_once(total, wanted):
    """More frames wanted than the video has: the distinct frames of numpy's linspace (all of them, in order),
    as the segment centres give; the entry's report calls the video short."""
    expected = np.unique(np.round(np.linspace(0, total - 1, wanted)).astype(np.int64))
    assert linspace_indices(total, wanted).tolist() == expected.tolist() == list(range(total))
    assert linspace_indices(total, wanted).tolist() == evenly_spaced_indices(total, wanted).tolist()
    assert linspace_indices(0, 5).tolist() == []


def test_read_frames_decodes_requested_frames(small_dataset):
    video = next((small_dataset / "Celeb-real").glob("*.mp4"))
    frames, indices = read_frames(video, 6)
    assert frames.shape[0] == 6 and frames.shape[-1] == 3 and frames.dtype == np.uint8
    assert indices.tolist() == sorted(set(indices.tolist()))
    assert frames.std() > 5  # real pixels, not a blank decode


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 100])
def test_read_frames_rejects_bad_files_naming_them(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        read_frames(bad, 4)


def test_decoders_native_messages_go_into_the_reason_not_onto_the_terminal(tmp_path, capfd):
    """decord and FFmpeg printed "ERROR opening: ..." / "moov atom not found" on file descriptor 2, next to
    the project's own one-line warning and without naming which video of a batch they meant."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError) as error:
        read_frames(bad, 4)
    assert "Invalid data found when processing input" in str(error.value) and "\n" not in str(error.value)
    assert capfd.readouterr().err == ""


def test_haar_detects_the_shared_real_faces():
    if not SHARED_MESONET.is_dir():
        pytest.skip(f"{SHARED_MESONET} is absent: no real face crops to test the detector on")
    detector = HaarFaceDetector()
    images = sorted(SHARED_MESONET.glob("test_images/*/*.jpg"))
    found = 0
    for image in images:
        rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        # the crops are tight: pad them so the face sits in a frame as in a video
        framed = cv2.copyMakeBorder(rgb, 80, 80, 80, 80, cv2.BORDER_CONSTANT, value=(90, 90, 90))
        box = detector.detect(framed)
        if box is not None:
            found += 1
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert abs(cx - framed.shape[1] / 2) < framed.shape[1] / 4
            assert abs(cy - framed.shape[0] / 2) < framed.shape[0] / 4
    assert found >= len(images) - 1, f"Haar found faces in only {found} of {len(images)} real crops"


def test_haar_finds_faces_in_synthetic_frames(small_dataset):
    detector = HaarFaceDetector()
    videos = sorted(small_dataset.glob("Celeb-*/*.mp4"))[:6]
    hits = total = 0
    for video in videos:
        frames, _ = read_frames(video, 8)
        hits += sum(detector.detect(f) is not None for f in frames)
        total += len(frames)
    # preset v2 turns heads (yaw up to ~30 degrees) and occludes faces at times, which a frontal cascade
    # misses in some frames; those take boxes from the neighbouring detections
    assert hits / total >= 0.85


def test_square_box_scales_by_margin_and_stays_in_frame():
    assert square_box((100, 100, 140, 160), 1.5, 480, 640) == (75, 85, 165, 175)
    x0, y0, x1, y1 = square_box((0, 0, 60, 60), 1.3, 100, 100)
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 78
    assert square_box((10, 10, 300, 300), 2.0, 100, 200) == (100, 0, 200, 100)


def test_missing_detections_are_interpolated_and_none_falls_back_to_centre():
    a, b = (10, 10, 50, 50), (100, 20, 140, 60)
    track = track_faces([a, None, None, b, None], (200, 200), 1.0)
    assert track.detected.tolist() == [True, False, False, True, False]
    assert track.num_filled == 3 and not track.centre_fallback
    # between two detections: linear; after the last one: its box
    assert track.boxes[1].tolist() == [40, 13, 80, 53] and track.boxes[2].tolist() == [70, 17, 110, 57]
    assert track.boxes[4].tolist() == list(b)
    centre = track_faces([None, None], (100, 200), 1.3)
    assert centre.centre_fallback and centre.boxes[0].tolist() == [50, 0, 150, 100]


def _settings(**changes) -> CropSettings:
    """Few, small crops by the fast detector, on every frame."""
    quick = {
        "frames_per_video": 6,
        "crop_size": 64,
        "face_detector": "haar",
        "detect_max_side": 320,
        "detect_every": 1,
    }
    return CropSettings(**{**quick, **changes})


def test_cache_build_reuse_and_invalidation(small_dataset, tmp_path):
    videos = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:3]
    cache = FaceCropCache(tmp_path / "cache", _settings())
    first = cache.build(videos, workers=1, progress=False)
    assert first.num_built == 3 and not first.failed
    crops, meta = cache.load(videos[0])
    assert crops.shape == (6, 64, 64, 3) and crops.dtype == np.uint8
    assert len(meta["boxes"]) == 6 and len(meta["detected"]) == 6

    again = cache.build(videos, workers=1, progress=False)
    assert again.num_built == 0 and again.num_reused == 3

    # the detector's device changes no pixel: same entries
    assert (
        FaceCropCache(tmp_path / "cache", _settings(detect_device="cuda"))
        .build(videos, progress=False)
        .num_reused
        == 3
    )
    # settings that change pixels get new entries; a touched file is rebuilt
    assert (
        FaceCropCache(tmp_path / "cache", _settings(face_margin=1.6)).build(videos, progress=False).num_built
        == 3
    )
    assert (
        FaceCropCache(tmp_path / "cache", _settings(crop_size=32)).build(videos, progress=False).num_built
        == 3
    )
    stat = videos[1].stat()
    os.utime(videos[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.build(videos, workers=1, progress=False).num_built == 1


def test_new_crop_keys_at_their_defaults_keep_every_existing_entrys_key():
    """data.align and data.frame_sampling came after entries were built: at their defaults they are not hashed,
    so those entries stay valid; set otherwise, each makes its own entries."""
    keyed = {
        "num_frames",
        "margin",
        "crop_size",
        "detector",
        "detect_max_side",
        "yunet_model",
        "detect_every",
    }
    assert set(CropSettings().pixel_settings()) == keyed
    assert set(CropSettings(frame_sampling="linspace").pixel_settings()) == keyed | {"frame_sampling"}
    assert set(CropSettings(align=True).pixel_settings()) == keyed | {"align"}
    with pytest.raises(ConfigError, match=r"^data.frame_sampling='ends': choose centres"):
        CropSettings(frame_sampling="ends")


def test_linspace_sampling_caches_first_and_last_frame_in_entries_of_its_own(small_dataset, tmp_path):
    videos = sorted(small_dataset.glob("Celeb-real/*.mp4"))[:2]
    centres = FaceCropCache(tmp_path / "cache", _settings())
    linspace = FaceCropCache(tmp_path / "cache", _settings(frame_sampling="linspace"))
    assert centres.build(videos, progress=False).num_built == 2
    assert linspace.build(videos, progress=False).num_built == 2  # never the centres' entries
    total = len(decord.VideoReader(str(videos[0])))
    assert linspace.load(videos[0])[1]["frame_indices"] == linspace_indices(total, 6).tolist()
    assert linspace.load(videos[0])[1]["frame_indices"][::5] == [0, total - 1]
    assert centres.load(videos[0])[1]["frame_indices"] == evenly_spaced_indices(total, 6).tolist()


def test_entries_hold_landmarks_nan_without_a_landmark_detector_or_from_before_they_were_stored(
    small_dataset, tmp_path
):
    video = next(small_dataset.glob("Celeb-real/*.mp4"))
    cache = FaceCropCache(tmp_path / "cache", _settings())
    cache.build([video], progress=False)
    _, meta = cache.load(video)
    assert meta["landmarks"].shape == (6, 5, 2) and np.isnan(meta["landmarks"]).all()  # Haar gives none
    _, meta_file, _ = cache._paths(cache.key(video))
    stored = json.loads(meta_file.read_text())
    del stored["landmarks"]  # an entry built before landmarks were stored is still read
    meta_file.write_text(json.dumps(stored))
    assert cache.build([video], progress=False).num_reused == 1
    assert np.isnan(cache.load(video)[1]["landmarks"]).all()
    stored["landmarks"] = [[1, 2]] * 6  # a damaged list: the entry is rebuilt
    meta_file.write_text(json.dumps(stored))
    assert cache.lookup(video) is None


def test_cache_parallel_build_matches_serial(small_dataset, tmp_path):
    videos = sorted(small_dataset.glob("Celeb-synthesis/*.mp4"))[:4]
    serial = FaceCropCache(tmp_path / "serial", _settings())
    parallel = FaceCropCache(tmp_path / "parallel", _settings())
    serial.build(videos, workers=1, progress=False)
    report = parallel.build(videos, workers=2, progress=False)
    assert [v.path for v in report.videos] == [str(v) for v in videos]
    for video in videos:
        np.testing.assert_array_equal(serial.load(video)[0], parallel.load(video)[0])


def test_cache_records_bad_videos_and_ignores_half_written_entries(small_dataset, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    good = next(small_dataset.glob("Celeb-real/*.mp4"))
    cache = FaceCropCache(tmp_path / "cache", _settings())
    report = cache.build([good, bad], progress=False)
    assert [v.path for v in report.failed] == [str(bad)]
    assert "broken.mp4" in report.failed[0].reason
    # a killed writer leaves at most a temporary file or crops without metadata: not an entry
    crops_file, meta_file, _ = cache._paths(cache.key(good))
    meta_file.unlink()
    (crops_file.parent / ".partial.npy").write_bytes(b"junk")
    assert cache.lookup(good) is None
    rebuilt = cache.build([good], progress=False)
    assert rebuilt.num_built == 1 and json.loads(meta_file.read_text())["report"]["ok"]


def test_a_second_build_reuses_every_entry_and_rewrites_nothing(small_dataset, tmp_path):
    videos = sorted(small_dataset.glob("*/*.mp4"))[:8]
    cache = FaceCropCache(tmp_path / "cache", _settings())
    first = cache.build(videos, progress=False)
    assert first.num_built == 8
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    again = cache.build(videos, progress=False)
    assert (again.num_built, again.num_reused) == (0, 8)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == written


def test_yunet_without_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="yunet_model"):
        build_detector("yunet")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        build_detector("yunet", yunet_model=str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="unknown data.face_detector='no-such-detector'"):
        build_detector("no-such-detector")

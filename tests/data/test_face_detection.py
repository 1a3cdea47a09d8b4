"""Face detectors on real faces, sparse detection with interpolated boxes, and detector selection."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from src.data.cache import CropSettings, FaceCropCache, extract_face_crops
from src.data.faces.detectors import FaceDetector, MissingDetectorPackage, build_detector
from src.data.faces.track import detect_faces, search_positions, track_faces
from tests.conftest import SHARED_MESONET


def test_real_data_default_detector_finds_real_faces():
    """The default detector (data=celebdf keeps it) finds >= 95% of real faces (40-200 px, turned up to 30
    degrees, JPEG 40-90) and makes at most 1 false box per 20 frames."""
    if not SHARED_MESONET.is_dir():
        pytest.skip(f"{SHARED_MESONET} is absent: no real face crops to build the test frames from")
    pytest.importorskip("skimage", reason="scikit-image (the dev extra) provides the astronaut photo")
    from benchmarks.detectors import real_face_frames, score_detector

    crops = CropSettings()
    detector = build_detector(crops.face_detector, crops.detect_max_side, crops.yunet_model)
    frames = real_face_frames(repeats=1, empty=12)
    assert len(frames) == 72  # 5 faces x 4 heights x 3 angles + 12 empty: the MesoNet crops were all found
    result = score_detector(detector, frames)
    assert result["recall"] >= 0.95, f"data.face_detector={crops.face_detector}: {result}"
    assert result["false_boxes"] <= len(frames) / 20, result


def test_mtcnn_loads_the_weights_inside_its_wheel_as_data_and_keeps_the_process_threads(monkeypatch):
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is a project dependency")
    import torch

    loads = []
    real_load = torch.load

    def checked_load(path, *args, **kwargs):
        loads.append((str(path), kwargs.get("weights_only")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    threads = torch.get_num_threads()
    detector = build_detector("mtcnn")
    assert detector.detect(np.zeros((120, 160, 3), np.uint8)) is None
    assert torch.get_num_threads() == threads  # the detector's 1 thread is its own, not the process's
    assert [name.rsplit("/", 1)[-1] for name, _ in loads] == ["pnet.pt", "rnet.pt", "onet.pt"]
    assert all(weights_only is True for _, weights_only in loads)
    assert all("facenet_pytorch" in name for name, _ in loads)


def test_each_detector_and_its_parameters_have_their_own_cache_key():
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is a project dependency")
    keys = {
        build_detector("haar").cache_key,
        build_detector("haar", 640).cache_key,
        build_detector("mtcnn").cache_key,
        build_detector("mtcnn", 960).cache_key,
    }
    assert len(keys) == 4
    assert build_detector("mtcnn").cache_key == build_detector("mtcnn").cache_key


def test_missing_optional_detector_package_is_a_one_line_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yuface", None)  # import yuface -> ImportError
    with pytest.raises(MissingDetectorPackage, match=r"pip install yuface") as error:
        build_detector("yuface")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="choose one of mtcnn"):
        build_detector("retinaface")


def test_boxes_between_detections_are_interpolated_and_ends_take_the_nearest():
    a, b = (0, 0, 40, 40), (80, 40, 120, 80)
    searched = np.array([True, True, False, False, True, True])
    track = track_faces([None, a, None, None, b, None], (200, 200), 1.0, searched)
    assert track.boxes.tolist() == [
        [0, 0, 40, 40],
        [0, 0, 40, 40],
        [27, 13, 67, 53],
        [53, 27, 93, 67],
        [80, 40, 120, 80],
        [80, 40, 120, 80],
    ]
    # detected: the detector ran on the frame and found a face there; every other frame is filled
    assert track.detected.tolist() == [False, True, False, False, True, False]
    assert track.num_filled == 4 and track.num_searched == 4 and track.num_missed == 2
    with pytest.raises(ValueError, match="not marked as searched"):
        track_faces([a, None], (200, 200), 1.0, np.array([False, True]))


def test_search_positions_include_both_ends_and_are_at_most_k_apart():
    assert search_positions(20, 1).tolist() == list(range(20))
    for count, every in [(20, 4), (20, 3), (7, 4), (2, 5), (1, 4)]:
        positions = search_positions(count, every)
        assert positions[0] == 0 and positions[-1] == count - 1
        assert np.diff(positions).max(initial=0) <= every
    assert len(search_positions(20, 4)) == 6


class _ScriptedDetector(FaceDetector):
    """Finds a face only in the frames whose first pixel is 255; records each batch it is given."""

    name = "scripted"

    def __init__(self):
        super().__init__(None)
        self.batches: list[int] = []

    @property
    def cache_key(self) -> str:
        return "scripted"

    def detect_batch(self, frames):
        self.batches.append(len(frames))
        return [(10, 10, 30, 30) if frame[0, 0, 0] == 255 else None for frame in frames]


def test_sparse_detection_searches_every_kth_frame_in_one_batch_and_the_rest_before_giving_up():
    frames = np.zeros((20, 48, 64, 3), np.uint8)
    frames[:, 0, 0, 0] = 255
    detector = _ScriptedDetector()
    boxes, searched = detect_faces(frames, detector, every=4)
    assert detector.batches == [6] and searched.sum() == 6
    assert sum(box is not None for box in boxes) == 6
    # no face in the sampled frames: the others are searched too, before a centre crop
    frames[:, 0, 0, 0] = 0
    frames[9, 0, 0, 0] = 255
    detector = _ScriptedDetector()
    boxes, searched = detect_faces(frames, detector, every=4)
    assert detector.batches == [6, 14] and searched.all() and boxes[9] is not None


class _EveryFrameDetector(_ScriptedDetector):
    def detect_batch(self, frames):
        self.batches.append(len(frames))
        return [(10, 10, 40, 40)] * len(frames)


def test_cache_entry_records_searched_frames_and_detections(small_dataset):
    video = sorted(small_dataset.glob("Celeb-real/*.mp4"))[0]
    settings = CropSettings(frames_per_video=8, crop_size=64, face_detector="haar", detect_every=4)
    detector = _EveryFrameDetector()
    crops, meta = extract_face_crops(video, settings, detector)
    assert crops.shape == (8, 64, 64, 3) and detector.batches == [3]
    assert meta["searched"] == meta["detected"] == [True, False, False, False, True, False, False, True]
    report = meta["report"]
    assert (report["num_searched"], report["num_detected"], report["num_filled"]) == (3, 3, 5)
    every_frame = CropSettings(frames_per_video=8, crop_size=64, face_detector="haar", detect_every=1)
    assert FaceCropCache("unused", settings).key(video) != FaceCropCache("unused", every_frame).key(video)

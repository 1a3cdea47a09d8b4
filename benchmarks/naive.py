"""The face-crop baseline that reference implementations use: decode EVERY frame with OpenCV
(`cv2.VideoCapture`), keep the evenly spaced ones, run the same Haar cascade at full resolution, crop the
same boxes and write one JPEG per frame. Kept free of torch imports, like the cache's worker processes.
"""

from __future__ import annotations

from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from src.data.cache import CropSettings
from src.data.faces.detectors import HaarFaceDetector
from src.data.faces.track import crop_faces, track_faces
from src.data.faces.video import VideoDecodeError, evenly_spaced_indices

FULL_RESOLUTION = 1 << 20  # a detect_max_side no frame reaches: detection never downscales
JPEG_QUALITY = 95  # cv2.imwrite's default

_state: dict = {}


def _init(out_dir: Path, settings: CropSettings) -> None:
    cv2.setNumThreads(1)  # as the framework's cache workers
    _state.update(out_dir=out_dir, settings=settings, detector=HaarFaceDetector(FULL_RESOLUTION))


def naive_extract(video: Path, settings: CropSettings, detector) -> tuple[np.ndarray, np.ndarray]:
    """(crops, frame indices) of one video, the naive way."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise VideoDecodeError(f"{video}: no decodable frames")
    indices = evenly_spaced_indices(len(frames), settings.frames_per_video)
    rgb = np.stack([cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in indices])
    track = track_faces([detector.detect(f) for f in rgb], rgb.shape[1:3], settings.face_margin)
    return crop_faces(rgb, track.boxes, settings.crop_size), indices


def write_jpegs(folder: Path, crops: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(crops):
        cv2.imwrite(
            str(folder / f"{i:04d}.jpg"),
            cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )


def _one(video: Path) -> int:
    crops, _ = naive_extract(video, _state["settings"], _state["detector"])
    write_jpegs(_state["out_dir"] / video.parent.name / video.stem, crops)
    return len(crops)


def naive_build(videos: list[Path], out_dir: Path, settings: CropSettings, workers: int = 1) -> int:
    """Extract every video the naive way into out_dir/<folder>/<video>/<frame>.jpg; returns the crop count.

    Parallel over videos exactly like `FaceCropCache.build`: a spawn pool, one OpenCV thread per worker.
    """
    if workers > 1 and len(videos) > 1:
        with get_context("spawn").Pool(min(workers, len(videos)), _init, (out_dir, settings)) as pool:
            return sum(pool.imap_unordered(_one, videos))
    _init(out_dir, settings)
    return sum(_one(video) for video in videos)

"""Face detection and square face crops.

OpenCV's bundled Haar cascade is the default detector; YuNet (`cv2.FaceDetectorYN`) is used when
a model file is given. Detection runs on frames downscaled to `detect_max_side`, which is several
times cheaper and finds the same faces at Celeb-DF resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels


class HaarFaceDetector:
    name = "haar"

    def __init__(self, detect_max_side: int = 320):
        self.detect_max_side = detect_max_side
        cascade_file = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(cascade_file))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV Haar cascade not found or unreadable: {cascade_file}")

    @property
    def cache_key(self) -> str:
        return f"haar-frontalface-default-{self.detect_max_side}"

    def detect(self, frame: np.ndarray) -> Box | None:
        """The largest face in an RGB frame, or None."""
        small, scale = _downscale(frame, self.detect_max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(48, 48))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return _scale_box((x, y, x + w, y + h), scale)


class YuNetFaceDetector:
    name = "yunet"

    def __init__(self, model_file: str | Path, detect_max_side: int = 320, score_threshold: float = 0.7):
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(
                f"YuNet model file not found: {self.model_file}. Download face_detection_yunet_2023mar.onnx "
                "from the OpenCV model zoo and set data.yunet_model=<path>, or use data.face_detector=haar."
            )
        self.detect_max_side = detect_max_side
        self.detector = cv2.FaceDetectorYN.create(str(self.model_file), "", (320, 320), score_threshold)

    @property
    def cache_key(self) -> str:
        digest = _file_digest(self.model_file)
        return f"yunet-{digest}-{self.detect_max_side}"

    def detect(self, frame: np.ndarray) -> Box | None:
        small, scale = _downscale(frame, self.detect_max_side)
        height, width = small.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return None
        x, y, w, h = max(faces[:, :4], key=lambda f: f[2] * f[3])
        return _scale_box((x, y, x + w, y + h), scale)


def build_detector(name: str, detect_max_side: int = 320, yunet_model: str | None = None):
    if name == "haar":
        return HaarFaceDetector(detect_max_side)
    if name == "yunet":
        if not yunet_model:
            raise ValueError("data.face_detector=yunet needs data.yunet_model=<path to the YuNet .onnx file>")
        return YuNetFaceDetector(yunet_model, detect_max_side)
    raise ValueError(f"unknown data.face_detector={name!r}; choose haar or yunet")


@dataclass
class FaceTrack:
    """Square crop boxes for a video's frames, and how each was obtained."""

    boxes: np.ndarray      # (N, 4) int x0, y0, x1, y1
    detected: np.ndarray   # (N,) bool: the detector found a face in this frame
    centre_fallback: bool  # no face in any frame: every box is a centre crop

    @property
    def num_filled(self) -> int:
        """Frames that borrowed the box of the nearest frame with a detection."""
        return 0 if self.centre_fallback else int((~self.detected).sum())


def track_faces(raw_boxes: list[Box | None], frame_shape: tuple[int, int], margin: float) -> FaceTrack:
    """Square boxes (scaled by `margin`, clamped to the frame) for every frame.

    A frame without a detection takes the box of the nearest frame with one; a video without any
    detection falls back to a centre crop.
    """
    height, width = frame_shape
    detected = np.array([box is not None for box in raw_boxes], dtype=bool)
    if not detected.any():
        side = min(height, width)
        box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
        return FaceTrack(np.tile(np.array(box), (len(raw_boxes), 1)), detected, centre_fallback=True)
    found = np.flatnonzero(detected)
    boxes = []
    for i in range(len(raw_boxes)):
        nearest = found[np.argmin(np.abs(found - i))]
        boxes.append(square_box(raw_boxes[nearest], margin, height, width))
    return FaceTrack(np.array(boxes, dtype=np.int64), detected, centre_fallback=False)


def square_box(box: Box, margin: float, height: int, width: int) -> Box:
    """A square around `box`, its side the longer edge times `margin`, shifted (then clipped) into the frame."""
    x0, y0, x1, y1 = box
    side = min(int(round(max(x1 - x0, y1 - y0) * margin)), height, width)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def crop_faces(frames: np.ndarray, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, crop_size, crop_size, 3) uint8 crops of `frames` at `boxes`."""
    crops = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes, strict=True)):
        patch = frame[y0:y1, x0:x1]
        interpolation = cv2.INTER_AREA if patch.shape[0] > crop_size else cv2.INTER_LINEAR
        crops[i] = cv2.resize(patch, (crop_size, crop_size), interpolation=interpolation)
    return crops


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    scale = max(frame.shape[:2]) / max_side
    if scale <= 1:
        return frame, 1.0
    size = (int(round(frame.shape[1] / scale)), int(round(frame.shape[0] / scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def _scale_box(box, scale: float) -> Box:
    return tuple(int(round(v * scale)) for v in box)


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def extract_face_crops(video: Path, settings, detector) -> tuple[np.ndarray, dict]:
    """Decode, detect and crop one video: (crops (N, S, S, 3) uint8, metadata with its VideoReport).

    `settings` is a `src.data.cache.CropSettings`.
    """
    from dataclasses import asdict

    from src.data.cache import VideoReport
    from src.data.video import read_frames

    frames, indices = read_frames(video, settings.num_frames)
    track = track_faces([detector.detect(f) for f in frames], frames.shape[1:3], settings.margin)
    crops = crop_faces(frames, track.boxes, settings.crop_size)
    report = VideoReport(
        str(video), ok=True, num_frames=len(frames), num_detected=int(track.detected.sum()),
        num_filled=track.num_filled, centre_fallback=track.centre_fallback,
    )
    if len(frames) < settings.num_frames:
        report.reason = f"short video: {len(frames)} of {settings.num_frames} frames"
    meta = {
        "report": asdict(report),
        "frame_indices": indices.tolist(),
        "boxes": track.boxes.tolist(),
        "detected": track.detected.tolist(),
        "frame_shape": list(frames.shape[1:3]),
        "settings": asdict(settings),
    }
    return crops, meta

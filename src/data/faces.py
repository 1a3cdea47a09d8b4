"""Face detection and square face crops.

Detectors (`data.face_detector`), all returning the largest confident face of a frame:

- `mtcnn`: facenet-pytorch's MTCNN, the weights shipped inside its wheel. Finds real faces (frontal or
  turned, 40 px and up, JPEG-damaged) and is the default for real data; runs batched, on the GPU if asked.
- `yuface`: libfacedetection's YuNet from the `yuface` wheel (Python <= 3.11).
- `yunet`: the same network through OpenCV's `cv2.FaceDetectorYN`, from a local .onnx file (`data.yunet_model`).
- `dlib`: dlib's HOG frontal-face detector (`dlib-bin`).
- `haar`: OpenCV's bundled Haar cascade: fast, but it misses most real faces that are small, turned or
  compressed; good enough for the synthetic set's drawn faces.

Each detector works on frames downscaled to its `detect_max_side` (None: the detector's own default),
chosen so that faces of 40 px and up in a 960x540 frame are still found.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels
DETECTORS = ("mtcnn", "yuface", "yunet", "dlib", "haar")


class FaceDetector:
    """The interface the cache uses: `detect_batch` on same-sized RGB frames, `cache_key` for its entries."""

    name = "base"
    default_max_side = 320

    def __init__(self, detect_max_side: int | None = None):
        self.detect_max_side = int(detect_max_side or self.default_max_side)

    @property
    def cache_key(self) -> str:
        raise NotImplementedError

    def detect(self, frame: np.ndarray) -> Box | None:
        """The largest face in an RGB frame, or None."""
        return self.detect_batch(frame[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[Box | None]:
        """The largest face of each of (N, H, W, 3) RGB frames (None where there is none)."""
        return [self._detect_one(frame) for frame in frames]

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        raise NotImplementedError


def _largest(boxes) -> tuple[float, float, float, float] | None:
    """The largest of (x0, y0, x1, y1) boxes, or None."""
    boxes = list(boxes)
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if boxes else None


class HaarFaceDetector(FaceDetector):
    name = "haar"
    default_max_side = 320

    def __init__(self, detect_max_side: int | None = None, min_size: int = 48):
        super().__init__(detect_max_side)
        self.min_size = min_size
        cascade_file = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(cascade_file))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV Haar cascade not found or unreadable: {cascade_file}")

    @property
    def cache_key(self) -> str:
        suffix = "" if self.min_size == 48 else f"-min{self.min_size}"  # unchanged keys for the old default
        return f"haar-frontalface-default-{self.detect_max_side}{suffix}"

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        small, scale = _downscale(frame, self.detect_max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(self.min_size, self.min_size))
        box = _largest((x, y, x + w, y + h) for x, y, w, h in faces)
        return None if box is None else _scale_box(box, scale)


class YuNetFaceDetector(FaceDetector):
    """YuNet through OpenCV, from a local model file."""

    name = "yunet"
    default_max_side = 640

    def __init__(self, model_file: str | Path, detect_max_side: int | None = None, score_threshold: float = 0.7):
        super().__init__(detect_max_side)
        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(
                f"YuNet model file not found: {self.model_file}. Download face_detection_yunet_2023mar.onnx "
                "from the OpenCV model zoo and set data.yunet_model=<path>, or use data.face_detector=yuface "
                "(pip install yuface) or mtcnn."
            )
        self.score_threshold = score_threshold
        self.detector = cv2.FaceDetectorYN.create(str(self.model_file), "", (320, 320), score_threshold)

    @property
    def cache_key(self) -> str:
        return f"yunet-{_file_digest(self.model_file)}-{self.detect_max_side}-{self.score_threshold:g}"

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        small, scale = _downscale(frame, self.detect_max_side)
        height, width = small.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return None
        box = _largest((x, y, x + w, y + h) for x, y, w, h in faces[:, :4])
        return None if box is None else _scale_box(box, scale)


class YuFaceDetector(FaceDetector):
    """YuNet from libfacedetection, as the `yuface` wheel ships it (model compiled into the library)."""

    name = "yuface"
    default_max_side = 640

    def __init__(self, detect_max_side: int | None = None, score_threshold: float = 0.7):
        super().__init__(detect_max_side)
        self.score_threshold = score_threshold
        self.yuface = _optional_import("yuface", "yuface", "pip install yuface==2023.5.1 (wheels for Python <= 3.11)")

    @property
    def cache_key(self) -> str:
        library = Path(self.yuface.__file__).parent / "libfacedetection.so"
        digest = _file_digest(library) if library.is_file() else _package_version("yuface")
        return f"yuface-{digest}-{self.detect_max_side}-{self.score_threshold:g}"

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        small, scale = _downscale(frame, self.detect_max_side)
        confidences, boxes, _ = self.yuface.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), conf=self.score_threshold)
        box = _largest((int(x), int(y), int(x) + int(w), int(y) + int(h)) for x, y, w, h in boxes)
        return None if box is None else _scale_box(box, scale)


class DlibHogFaceDetector(FaceDetector):
    """dlib's HOG + linear SVM frontal-face detector (model built into dlib)."""

    name = "dlib"
    default_max_side = 960

    def __init__(self, detect_max_side: int | None = None, upsample: int = 1):
        super().__init__(detect_max_side)
        self.upsample = upsample
        dlib = _optional_import("dlib", "dlib", "pip install dlib-bin")
        self.version = dlib.__version__
        self.detector = dlib.get_frontal_face_detector()

    @property
    def cache_key(self) -> str:
        return f"dlib-hog-{self.version}-{self.detect_max_side}-up{self.upsample}"

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        small, scale = _downscale(frame, self.detect_max_side)
        faces = self.detector(np.ascontiguousarray(small), self.upsample)
        box = _largest((r.left(), r.top(), r.right(), r.bottom()) for r in faces)
        return None if box is None else _scale_box(box, scale)


class MTCNNFaceDetector(FaceDetector):
    """MTCNN (facenet-pytorch): the three networks' weights are loaded from inside the installed wheel.

    `min_face` is the smallest face searched, in pixels of the frame downscaled to `detect_max_side`
    (640 and 24: faces of 36 px and up in a 960x540 frame; as many found as at 960 and 32, in 3/4 of the
    time). A face counts if the last stage's probability reaches `confidence`. Frames go through the networks `batch_size` at a time, on `device`, with `threads`
    torch CPU threads (1: the cache builds one video per core; more threads per process are much slower on a
    busy machine).
    """

    name = "mtcnn"
    default_max_side = 640

    def __init__(self, detect_max_side: int | None = None, min_face: int = 24, confidence: float = 0.95,
                 device: str = "cpu", batch_size: int = 8, threads: int = 1):
        super().__init__(detect_max_side)
        self.min_face, self.confidence, self.batch_size = min_face, confidence, batch_size
        self.device, self.threads = device, threads
        facenet = _optional_import("facenet_pytorch", "facenet-pytorch",
                                   "pip install facenet-pytorch==2.5.3 (a project dependency: pip install -e .)")
        self.weight_files = [Path(facenet.__file__).parent / "data" / f"{net}.pt" for net in ("pnet", "rnet", "onet")]
        missing = [str(f) for f in self.weight_files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"MTCNN weights missing from the facenet-pytorch install: {missing}; reinstall "
                                    "facenet-pytorch==2.5.3")
        self._nets = None  # loaded on first use: computing the cache key needs no model

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(b"".join(_file_digest(f).encode() for f in self.weight_files)).hexdigest()[:16]
        return f"mtcnn-{digest}-{self.detect_max_side}-min{self.min_face}-p{self.confidence:g}"

    def _load(self):
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        nets = []
        for net_class, weights in zip((PNet, RNet, ONet), self.weight_files, strict=True):
            net = net_class(pretrained=False)
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            nets.append(net.to(self.device).eval())
        self._nets = nets
        return nets

    def detect_batch(self, frames: np.ndarray) -> list[Box | None]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        pnet, rnet, onet = self._nets or self._load()
        found: list[Box | None] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            small, scale = _downscale_batch(chunk, self.detect_max_side)
            with torch.inference_mode(), _torch_threads(self.threads):
                try:
                    batch_boxes, _ = detect_face(small, self.min_face, pnet, rnet, onet, [0.6, 0.7, 0.7], 0.709,
                                                 self.device)
                except RuntimeError as error:
                    # facenet-pytorch concatenates an empty list when every candidate box falls outside the
                    # frame after refinement: no face
                    if "non-empty list" not in str(error):
                        raise
                    batch_boxes = [np.zeros((0, 5))] * len(chunk)
            for boxes in batch_boxes:
                boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)  # x0, y0, x1, y1, probability
                confident = [b[:4] for b in boxes if b[4] >= self.confidence]
                box = _largest(confident)
                found.append(None if box is None else _clip(_scale_box(box, scale), chunk.shape[1:3]))
        return found


@contextmanager
def _torch_threads(threads: int):
    """torch's CPU threads set to `threads` for the block only: the process's own setting is left as it was."""
    import torch

    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_detector(name: str, detect_max_side: int | None = None, yunet_model: str | None = None,
                   device: str = "cpu", threads: int = 1) -> FaceDetector:
    """The detector `data.face_detector=<name>`; a missing optional package is a one-line error naming it."""
    if name == "mtcnn":
        return MTCNNFaceDetector(detect_max_side, device=device, threads=threads)
    if name == "haar":
        return HaarFaceDetector(detect_max_side)
    if name == "yuface":
        return YuFaceDetector(detect_max_side)
    if name == "yunet":
        if not yunet_model:
            raise ValueError("data.face_detector=yunet needs data.yunet_model=<path to the YuNet .onnx file> "
                             "(or use data.face_detector=yuface, the same network from the yuface package)")
        return YuNetFaceDetector(yunet_model, detect_max_side)
    if name == "dlib":
        return DlibHogFaceDetector(detect_max_side)
    raise ValueError(f"unknown data.face_detector={name!r}; choose one of {', '.join(DETECTORS)}")


class MissingDetectorPackage(ImportError):
    """An optional detector whose package is not installed."""


def _optional_import(module: str, package: str, how: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDetectorPackage(f"this face detector needs the {package} package ({error}): {how}") from None


def _package_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


@dataclass
class FaceTrack:
    """Square crop boxes for a video's frames, and how each was obtained."""

    boxes: np.ndarray      # (N, 4) int x0, y0, x1, y1
    detected: np.ndarray   # (N,) bool: the detector ran on this frame and found a face in it
    centre_fallback: bool  # no face in any frame: every box is a centre crop
    searched: np.ndarray = field(default=None)  # (N,) bool: the detector ran on this frame (default: all)

    def __post_init__(self):
        if self.searched is None:
            self.searched = np.ones(len(self.detected), dtype=bool)

    @property
    def num_filled(self) -> int:
        """Frames whose box comes from neighbouring detections (not searched, or searched without a face)."""
        return 0 if self.centre_fallback else int((~self.detected).sum())

    @property
    def num_searched(self) -> int:
        return int(self.searched.sum())

    @property
    def num_missed(self) -> int:
        """Frames the detector ran on without finding a face."""
        return int((self.searched & ~self.detected).sum())


def track_faces(raw_boxes: list[Box | None], frame_shape: tuple[int, int], margin: float,
                searched: np.ndarray | None = None) -> FaceTrack:
    """Square boxes (scaled by `margin`, clamped to the frame) for every frame.

    A frame without a detection (not searched, or no face found) gets a box interpolated linearly
    between the nearest detections before and after it; before the first or after the last detection
    it takes the nearest one. A video without any detection falls back to a centre crop.
    `searched` marks the frames the detector ran on (default: every frame).
    """
    height, width = frame_shape
    detected = np.array([box is not None for box in raw_boxes], dtype=bool)
    searched = np.ones(len(raw_boxes), dtype=bool) if searched is None else np.asarray(searched, dtype=bool)
    if (detected & ~searched).any():
        raise ValueError("track_faces: a frame has a box but is not marked as searched")
    if not detected.any():
        side = min(height, width)
        box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
        return FaceTrack(np.tile(np.array(box), (len(raw_boxes), 1)), detected, True, searched)
    found = np.flatnonzero(detected)
    known = np.array([raw_boxes[i] for i in found], dtype=np.float64)
    positions = np.arange(len(raw_boxes))
    # np.interp holds the end values outside [first, last] detection: the nearest box at the ends
    filled = np.stack([np.interp(positions, found, known[:, c]) for c in range(4)], axis=1)
    boxes = [square_box(tuple(b), margin, height, width) for b in filled]
    return FaceTrack(np.array(boxes, dtype=np.int64), detected, False, searched)


def search_positions(num_frames: int, every: int) -> np.ndarray:
    """Which of `num_frames` sampled frames the detector runs on: the first, the last, and at most `every`
    apart in between (evenly spread), so every other frame lies between two searched ones."""
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    every = max(1, int(every))
    count = math.ceil((num_frames - 1) / every) + 1
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def detect_faces(frames: np.ndarray, detector: FaceDetector, every: int = 1) -> tuple[list[Box | None], np.ndarray]:
    """Raw face boxes of `frames`, the detector run on every `every`-th (see `search_positions`).

    If those frames hold no face, the detector also runs on the others before the caller gives up on the video.
    Returns (one box or None per frame, which frames were searched).
    """
    searched = np.zeros(len(frames), dtype=bool)
    searched[search_positions(len(frames), every)] = True
    boxes: list[Box | None] = [None] * len(frames)
    for round_mask in (searched.copy(), ~searched):
        positions = np.flatnonzero(round_mask)
        if len(positions) == 0:
            continue
        for i, box in zip(positions, detector.detect_batch(frames[positions]), strict=True):
            boxes[i] = box
        searched |= round_mask
        if any(box is not None for box in boxes):
            break
    return boxes, searched


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


def _downscale_batch(frames: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    if max(frames.shape[1:3]) <= max_side:
        return np.ascontiguousarray(frames), 1.0
    resized = [_downscale(frame, max_side) for frame in frames]
    return np.stack([small for small, _ in resized]), resized[0][1]


def _scale_box(box, scale: float) -> Box:
    return tuple(int(round(float(v) * scale)) for v in box)


def _clip(box: Box, frame_shape: tuple[int, int]) -> Box:
    height, width = frame_shape
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def extract_face_crops(video: Path, settings, detector: FaceDetector) -> tuple[np.ndarray, dict]:
    """Decode, detect and crop one video: (crops (N, S, S, 3) uint8, metadata with its VideoReport).

    `settings` is a `src.data.cache.CropSettings`; the detector runs on every `settings.detect_every`-th
    sampled frame (batched), the boxes of the others interpolated between.
    """
    from dataclasses import asdict

    from src.data.cache import VideoReport
    from src.data.video import read_frames

    frames, indices = read_frames(video, settings.num_frames)
    raw_boxes, searched = detect_faces(frames, detector, getattr(settings, "detect_every", 1))
    track = track_faces(raw_boxes, frames.shape[1:3], settings.margin, searched)
    crops = crop_faces(frames, track.boxes, settings.crop_size)
    report = VideoReport(
        str(video), ok=True, num_frames=len(frames), num_detected=int(track.detected.sum()),
        num_filled=track.num_filled, centre_fallback=track.centre_fallback, num_searched=track.num_searched,
    )
    if len(frames) < settings.num_frames:
        report.reason = f"short video: {len(frames)} of {settings.num_frames} frames"
    meta = {
        "report": asdict(report),
        "frame_indices": indices.tolist(),
        "boxes": track.boxes.tolist(),
        "detected": track.detected.tolist(),
        "searched": track.searched.tolist(),
        "frame_shape": list(frames.shape[1:3]),
        "settings": asdict(settings),
    }
    return crops, meta

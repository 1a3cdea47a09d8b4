"""Face detectors (`data.face_detector`), all returning the largest confident face of a frame.

- `mtcnn`: facenet-pytorch's MTCNN, the weights shipped inside its wheel. Finds real faces (frontal or
  turned, 40 px and up, JPEG-damaged) and is the default for real data; runs batched, on the GPU if asked.
- `yuface`: libfacedetection's YuNet from the `yuface` wheel (Python <= 3.11).
- `yunet`: the same network through OpenCV's `cv2.FaceDetectorYN`, from a local .onnx file (`data.yunet_model`).
- `dlib`: dlib's HOG frontal-face detector (`dlib-bin`).
- `haar`: OpenCV's bundled Haar cascade: fast, but it misses most real faces that are small, turned or
  compressed; good enough for the synthetic set's drawn faces.

`mtcnn` also gives each face's five landmarks (`Face.landmarks`: the eyes, the nose tip, the mouth corners),
which `data.align=true` needs (LANDMARK_DETECTORS); the others give boxes only.

Each detector works on frames downscaled to its `detect_max_side` (None: the detector's own default),
chosen so that faces of 40 px and up in a 960x540 frame are still found. Its `cache_key` names everything
about it that changes a box (weights, parameters), for the face-crop cache's key.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src.utils.errors import ConfigError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels
DETECTORS = ("mtcnn", "yuface", "yunet", "dlib", "haar")


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face: its box and, from a detector that finds them, its five landmarks."""

    box: Box
    # (5, 2) float x, y in full-frame pixels, left to right as seen in the image: the two eyes, the nose tip,
    # the two mouth corners; None from a detector without landmarks
    landmarks: np.ndarray | None = None


class FaceDetector:
    """The interface the cache uses: `find_faces` (or `detect_batch`, boxes only) on same-sized RGB frames,
    `cache_key` for its entries."""

    name = "base"
    default_max_side = 320
    gives_landmarks = False  # find_faces gives each face's five landmarks

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

    def find_faces(self, frames: np.ndarray) -> list[Face | None]:
        """`detect_batch`'s faces with their landmarks, where the detector gives them."""
        return [None if box is None else Face(box) for box in self.detect_batch(frames)]

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        raise NotImplementedError


def _largest(boxes) -> tuple[float, float, float, float] | None:
    """The largest of (x0, y0, x1, y1) boxes, or None."""
    return max(boxes, key=_area, default=None)


def _area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


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
        small, scale = downscale(frame, self.detect_max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        faces = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size)
        )
        box = _largest((x, y, x + w, y + h) for x, y, w, h in faces)
        return None if box is None else scale_box(box, scale)


class YuNetFaceDetector(FaceDetector):
    """YuNet through OpenCV, from a local model file."""

    name = "yunet"
    default_max_side = 640

    def __init__(
        self, model_file: str | Path, detect_max_side: int | None = None, score_threshold: float = 0.7
    ):
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
        small, scale = downscale(frame, self.detect_max_side)
        height, width = small.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return None
        box = _largest((x, y, x + w, y + h) for x, y, w, h in faces[:, :4])
        return None if box is None else scale_box(box, scale)


class YuFaceDetector(FaceDetector):
    """YuNet from libfacedetection, as the `yuface` wheel ships it (model compiled into the library)."""

    name = "yuface"
    default_max_side = 640

    def __init__(self, detect_max_side: int | None = None, score_threshold: float = 0.7):
        super().__init__(detect_max_side)
        self.score_threshold = score_threshold
        self.yuface = _optional_import(
            "yuface", "yuface", "pip install yuface==2023.5.1 (wheels for Python <= 3.11)"
        )

    @property
    def cache_key(self) -> str:
        library = Path(self.yuface.__file__).parent / "libfacedetection.so"
        digest = _file_digest(library) if library.is_file() else _package_version("yuface")
        return f"yuface-{digest}-{self.detect_max_side}-{self.score_threshold:g}"

    def _detect_one(self, frame: np.ndarray) -> Box | None:
        small, scale = downscale(frame, self.detect_max_side)
        confidences, boxes, _ = self.yuface.detect(
            cv2.cvtColor(small, cv2.COLOR_RGB2BGR), conf=self.score_threshold
        )
        box = _largest((int(x), int(y), int(x) + int(w), int(y) + int(h)) for x, y, w, h in boxes)
        return None if box is None else scale_box(box, scale)


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
        small, scale = downscale(frame, self.detect_max_side)
        faces = self.detector(np.ascontiguousarray(small), self.upsample)
        box = _largest((r.left(), r.top(), r.right(), r.bottom()) for r in faces)
        return None if box is None else scale_box(box, scale)


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
    gives_landmarks = True

    def __init__(
        self,
        detect_max_side: int | None = None,
        min_face: int = 24,
        confidence: float = 0.95,
        device: str = "cpu",
        batch_size: int = 8,
        threads: int = 1,
    ):
        super().__init__(detect_max_side)
        self.min_face, self.confidence, self.batch_size = min_face, confidence, batch_size
        self.device, self.threads = device, threads
        facenet = _optional_import(
            "facenet_pytorch",
            "facenet-pytorch",
            "pip install facenet-pytorch==2.5.3 (a project dependency: pip install -e .)",
        )
        self.weight_files = [
            Path(facenet.__file__).parent / "data" / f"{net}.pt" for net in ("pnet", "rnet", "onet")
        ]
        missing = [str(f) for f in self.weight_files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"MTCNN weights missing from the facenet-pytorch install: {missing}; reinstall "
                "facenet-pytorch==2.5.3"
            )
        self._nets = None  # loaded on first use: computing the cache key needs no model

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(b"".join(_file_digest(f).encode() for f in self.weight_files)).hexdigest()[
            :16
        ]
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
        return [None if face is None else face.box for face in self.find_faces(frames)]

    def find_faces(self, frames: np.ndarray) -> list[Face | None]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        pnet, rnet, onet = self._nets or self._load()
        found: list[Face | None] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start : start + self.batch_size]
            small, scale = _downscale_batch(chunk, self.detect_max_side)
            with torch.inference_mode(), _torch_threads(self.threads):
                try:
                    batch_boxes, batch_points = detect_face(
                        small, self.min_face, pnet, rnet, onet, [0.6, 0.7, 0.7], 0.709, self.device
                    )
                except RuntimeError as error:
                    # facenet-pytorch concatenates an empty list when every candidate box falls outside the
                    # frame after refinement: no face
                    if "non-empty list" not in str(error):
                        raise
                    batch_boxes = batch_points = [np.zeros((0, 5))] * len(chunk)
            for boxes, points in zip(batch_boxes, batch_points, strict=True):
                boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)  # x0, y0, x1, y1, probability
                points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
                confident = [i for i, b in enumerate(boxes) if b[4] >= self.confidence]
                largest = max(confident, key=lambda i: _area(boxes[i]), default=None)
                if largest is None:
                    found.append(None)
                    continue
                box = _clip(scale_box(boxes[largest, :4], scale), chunk.shape[1:3])
                found.append(Face(box, points[largest] * scale))
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


def build_detector(
    name: str,
    detect_max_side: int | None = None,
    yunet_model: str | None = None,
    device: str = "cpu",
    threads: int = 1,
) -> FaceDetector:
    """The detector `data.face_detector=<name>`; a missing optional package is a one-line error naming it."""
    if name == "mtcnn":
        return MTCNNFaceDetector(detect_max_side, device=device, threads=threads)
    if name == "haar":
        return HaarFaceDetector(detect_max_side)
    if name == "yuface":
        return YuFaceDetector(detect_max_side)
    if name == "yunet":
        if not yunet_model:
            raise ConfigError(
                "data.face_detector=yunet needs data.yunet_model=<path to the YuNet .onnx file> "
                "(or use data.face_detector=yuface, the same network from the yuface package)"
            )
        return YuNetFaceDetector(yunet_model, detect_max_side)
    if name == "dlib":
        return DlibHogFaceDetector(detect_max_side)
    raise ConfigError(f"unknown data.face_detector={name!r}; choose one of {', '.join(DETECTORS)}")


# the detectors whose faces come with their five landmarks (data.align=true needs one)
LANDMARK_DETECTORS = tuple(
    cls.name
    for cls in (MTCNNFaceDetector, YuFaceDetector, YuNetFaceDetector, DlibHogFaceDetector, HaarFaceDetector)
    if cls.gives_landmarks
)


class MissingDetectorPackage(ImportError):
    """An optional detector whose package is not installed."""


def _optional_import(module: str, package: str, how: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDetectorPackage(
            f"this face detector needs the {package} package ({error}): {how}"
        ) from None


def _package_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The frame shrunk so its longer side is at most `max_side` (area interpolation), and the factor back.

    Args:
        frame: an (H, W, 3) image.
        max_side: the longest side the detector gets.

    Returns:
        (the possibly smaller frame, the factor that maps its coordinates back to the original's).
    """
    scale = max(frame.shape[:2]) / max_side
    if scale <= 1:
        return frame, 1.0
    size = (int(round(frame.shape[1] / scale)), int(round(frame.shape[0] / scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def _downscale_batch(frames: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    if max(frames.shape[1:3]) <= max_side:
        return np.ascontiguousarray(frames), 1.0
    resized = [downscale(frame, max_side) for frame in frames]
    return np.stack([small for small, _ in resized]), resized[0][1]


def scale_box(box, scale: float) -> Box:
    """A box found on a downscaled frame, in the original frame's pixels.

    Args:
        box: (x0, y0, x1, y1) on the small frame.
        scale: the factor `downscale` returned.
    """
    return tuple(int(round(float(v) * scale)) for v in box)


def _clip(box: Box, frame_shape: tuple[int, int]) -> Box:
    height, width = frame_shape
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

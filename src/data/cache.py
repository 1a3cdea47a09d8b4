"""Face-crop cache: each video is decoded and its faces detected once, then read back as one array.

An entry is `<key>.npy` (the (N, S, S, 3) uint8 crops, memory-mappable) plus `<key>.json`
(frame indices, boxes, which frames had a detection). The key hashes everything that changes
the pixels: detector, margin, frame count, crop size and the video file's path, size and mtime.
Both files are written to temporary names and renamed into place, JSON last, so a killed build
leaves no entry that looks complete, and concurrent builders of one entry cannot corrupt it.
Videos that fail to decode get a `<key>.error.json` entry, so they are reported, not retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.data.faces import build_detector, crop_faces, track_faces
from src.data.video import VideoDecodeError, read_frames

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
# spawn, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the
# children; spawned workers import only this module's light dependencies (cv2, decord, numpy)
_START_METHOD = "spawn"


@dataclass(frozen=True)
class CropSettings:
    """Everything that changes the pixels of a cached crop."""

    num_frames: int = 20
    margin: float = 1.3
    crop_size: int = 256
    detector: str = "haar"
    detect_max_side: int = 320
    yunet_model: str | None = None


@dataclass
class VideoReport:
    """What happened to one video during the cache build."""

    path: str
    ok: bool
    num_frames: int = 0
    num_detected: int = 0
    num_filled: int = 0
    centre_fallback: bool = False
    reason: str = ""

    @property
    def degraded(self) -> str:
        """Why the crops of a usable video are not all detected faces ('' if they are)."""
        if self.centre_fallback:
            return "no face detected in any frame: centre crops"
        if self.num_filled:
            return f"{self.num_filled} of {self.num_frames} frames without a detection took the nearest box"
        return ""


@dataclass
class BuildReport:
    videos: list[VideoReport] = field(default_factory=list)
    num_built: int = 0
    num_reused: int = 0

    @property
    def failed(self) -> list[VideoReport]:
        return [v for v in self.videos if not v.ok]

    @property
    def frame_detection_rate(self) -> float:
        frames = sum(v.num_frames for v in self.videos if v.ok)
        return sum(v.num_detected for v in self.videos if v.ok) / frames if frames else 0.0

    def summary(self) -> dict[str, float]:
        ok = [v for v in self.videos if v.ok]
        return {
            "videos": len(self.videos),
            "built": self.num_built,
            "reused": self.num_reused,
            "failed_videos": len(self.failed),
            "centre_fallback_videos": sum(v.centre_fallback for v in ok),
            "filled_frames": sum(v.num_filled for v in ok),
            "frames": sum(v.num_frames for v in ok),
            "frame_detection_rate": round(self.frame_detection_rate, 4),
        }


class FaceCropCache:
    def __init__(self, cache_dir: str | Path, settings: CropSettings):
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self._detector_key: str | None = None

    # -- keys and paths -------------------------------------------------------------------------
    def detector_key(self) -> str:
        if self._detector_key is None:
            s = self.settings
            self._detector_key = build_detector(s.detector, s.detect_max_side, s.yunet_model).cache_key
        return self._detector_key

    def key(self, video: Path) -> str:
        stat = video.stat()
        fields = {
            "format": CACHE_FORMAT,
            "settings": asdict(self.settings),
            "detector": self.detector_key(),
            "video": str(video.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json", folder / f"{key}.error.json"

    # -- reading --------------------------------------------------------------------------------
    def lookup(self, video: Path) -> VideoReport | None:
        """The stored report of a video, or None if it has no complete entry."""
        crops_file, meta_file, error_file = self._paths(self.key(video))
        for file in (meta_file, error_file):
            if file.is_file():
                try:
                    report = json.loads(file.read_text())["report"]
                except (OSError, ValueError, KeyError):
                    return None  # unreadable entry: rebuilt
                if report["ok"] and not crops_file.is_file():
                    return None
                return VideoReport(**report)
        return None

    def load(self, video: Path) -> tuple[np.ndarray, dict]:
        """(crops (N, S, S, 3) uint8, memory-mapped; metadata) of a built video."""
        crops_file, meta_file, _ = self._paths(self.key(video))
        meta = json.loads(meta_file.read_text())
        crops = np.load(crops_file, mmap_mode="r")
        if crops.shape[0] != len(meta["frame_indices"]):
            raise ValueError(f"cache entry {crops_file} for {video} is inconsistent: rebuild with make clean-cache")
        return crops, meta

    # -- building -------------------------------------------------------------------------------
    def build(self, videos: Iterable[Path], workers: int = 1, progress: bool = True) -> BuildReport:
        """Build the missing entries (in parallel over videos) and report on every video."""
        videos = [Path(v) for v in videos]
        report = BuildReport()
        todo = []
        for video in videos:
            stored = self.lookup(video) if video.is_file() else None
            if stored is None:
                todo.append(video)
            else:
                report.videos.append(stored)
                report.num_reused += 1
        if todo:
            self.detector_key()  # fail early (e.g. a missing YuNet file), before starting workers
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            bar = tqdm(total=len(todo), desc="face crops", unit="video", disable=not progress)
            if workers > 1 and len(todo) > 1:
                with get_context(_START_METHOD).Pool(min(workers, len(todo)), _init_worker, (self,)) as pool:
                    for result in pool.imap_unordered(_build_in_worker, todo):
                        report.videos.append(result)
                        bar.update()
            else:
                _init_worker(self)
                for video in todo:
                    report.videos.append(_build_in_worker(video))
                    bar.update()
            bar.close()
            report.num_built = len(todo)
        order = {str(v): i for i, v in enumerate(videos)}
        report.videos.sort(key=lambda v: order.get(v.path, len(order)))
        return report

    def build_one(self, video: Path, detector) -> VideoReport:
        try:
            key = self.key(video)
        except OSError as error:
            return VideoReport(str(video), ok=False, reason=f"cannot stat: {error}")
        crops_file, meta_file, error_file = self._paths(key)
        crops_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            crops, meta = extract_face_crops(video, self.settings, detector)
        except VideoDecodeError as error:
            report = VideoReport(str(video), ok=False, reason=str(error))
            _atomic_write_text(error_file, json.dumps({"report": asdict(report)}))
            return report
        report = VideoReport(**meta["report"])
        tmp = crops_file.with_name(f".{crops_file.stem}.{os.getpid()}.{uuid.uuid4().hex}.npy")
        np.save(tmp, crops)
        os.replace(tmp, crops_file)
        _atomic_write_text(meta_file, json.dumps(meta))
        if error_file.exists():
            error_file.unlink(missing_ok=True)
        return report


def extract_face_crops(video: Path, settings: CropSettings, detector) -> tuple[np.ndarray, dict]:
    """Decode, detect and crop one video: (crops (N, S, S, 3) uint8, metadata with its VideoReport)."""
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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


_worker_state: dict = {}


def _init_worker(cache: FaceCropCache) -> None:
    import cv2

    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe the cores
    s = cache.settings
    _worker_state["cache"] = cache
    _worker_state["detector"] = build_detector(s.detector, s.detect_max_side, s.yunet_model)


def _build_in_worker(video: Path) -> VideoReport:
    return _worker_state["cache"].build_one(video, _worker_state["detector"])

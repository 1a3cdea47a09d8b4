"""Face-crop cache: each video is decoded and its faces detected once, then read back as one array.

An entry is `<key>.npy` (the (N, S, S, 3) uint8 crops, memory-mappable) plus `<key>.json`
(frame indices, boxes, which frames had a detection). The key hashes everything that changes
the pixels: detector, margin, frame count, crop size and the video file's path, size and mtime.
Both files are written to temporary names and renamed into place, JSON last, so a killed build
leaves no entry that looks complete, and concurrent builders of one entry cannot corrupt it.
Videos that fail to decode get a `<key>.error.json` entry, so they are reported, not retried.

Decoding runs in spawned worker processes, never in the caller: decord's native code can crash the
process or spin forever (holding the GIL) on some broken files. A worker that dies or overruns
`video_timeout` seconds is replaced, and its video gets an error entry with the reason, like a
video that fails to decode (so the next build does not crash or wait on it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.data.faces import build_detector, extract_face_crops
from src.data.video import VideoDecodeError

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
# spawn, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the
# children; spawned workers import only this module's light dependencies (cv2, decord, numpy)
_START_METHOD = "spawn"
# a video normally decodes and detects in well under a second; a worker past this is presumed hung
VIDEO_TIMEOUT_S = 300.0
_STARTUP_S = 120.0  # allowed on top for a new worker to import its modules and load the detector


@dataclass(frozen=True)
class CropSettings:
    """Everything that changes the pixels of a cached crop."""

    num_frames: int = 20
    margin: float = 1.3
    crop_size: int = 256
    detector: str = "haar"
    detect_max_side: int = 320
    yunet_model: str | None = None
    detect_every: int = 1  # run the detector on every k-th sampled frame, interpolate boxes between


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
            "degraded_videos": sum(bool(v.reason or v.degraded) for v in ok),
            "centre_fallback_videos": sum(v.centre_fallback for v in ok),
            "filled_frames": sum(v.num_filled for v in ok),
            "frames": sum(v.num_frames for v in ok),
            "frame_detection_rate": round(self.frame_detection_rate, 4),
        }


class FaceCropCache:
    def __init__(self, cache_dir: str | Path, settings: CropSettings, video_timeout: float = VIDEO_TIMEOUT_S):
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self.video_timeout = video_timeout
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
            for result in _build_isolated(self, todo, max(1, min(workers, len(todo)))):
                report.videos.append(result)
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
            return self.record_failure(video, str(error))
        report = VideoReport(**meta["report"])
        tmp = crops_file.with_name(f".{crops_file.stem}.{os.getpid()}.{uuid.uuid4().hex}.npy")
        np.save(tmp, crops)
        os.replace(tmp, crops_file)
        _atomic_write_text(meta_file, json.dumps(meta))
        if error_file.exists():
            error_file.unlink(missing_ok=True)
        return report

    def record_failure(self, video: Path, reason: str) -> VideoReport:
        """Store a failed video's report as its entry: later builds report it instead of retrying it."""
        report = VideoReport(str(video), ok=False, reason=reason)
        try:
            _, _, error_file = self._paths(self.key(video))
            error_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(error_file, json.dumps({"report": asdict(report)}))
        except OSError as error:
            log.warning("cannot record the failure of %s in the cache: %s", video, error)
        return report


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _worker_main(cache: FaceCropCache, conn) -> None:
    """A build process: says it is ready, then receives videos and answers with their reports."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe the cores
    s = cache.settings
    detector = build_detector(s.detector, s.detect_max_side, s.yunet_model)
    try:
        conn.send(None)
        while True:
            video = conn.recv()
            try:
                report = cache.build_one(video, detector)
            except Exception as error:  # e.g. a detector or write error: this video fails, not the build
                report = VideoReport(str(video), ok=False, reason=f"{video}: {type(error).__name__}: {error}")
            conn.send(report)
    except (EOFError, OSError):  # the parent closed the pipe (done) or is gone (killed)
        return


class _Worker:
    """One spawned build process and the video it is busy with."""

    def __init__(self, context, cache: FaceCropCache):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(cache, child), name="face-crop-builder")
        self.process.start()
        child.close()  # only the worker holds its end now: its death reads as EOF here
        self.timeout = cache.video_timeout
        self.ready = False
        self.video: Path | None = None
        self.deadline = 0.0

    def submit(self, video: Path) -> None:
        self.conn.send(video)
        # the clock starts once the worker has started up (imports, detector)
        self.video, self.deadline = video, time.monotonic() + self.timeout + (0 if self.ready else _STARTUP_S)

    def receive(self) -> VideoReport | None:
        """The report of the current video, or None for the start-up message."""
        message = self.conn.recv()
        if message is None:
            self.ready, self.deadline = True, time.monotonic() + self.timeout
            return None
        self.video = None
        return message

    def stop(self) -> None:
        self.conn.close()  # an idle worker reads EOF and exits; a busy one is killed
        self.process.join(timeout=5 if self.video is None else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _death(process) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _build_isolated(cache: FaceCropCache, videos: list[Path], workers: int) -> Iterator[VideoReport]:
    """Build `videos` in `workers` spawned processes; yields one report per video, as they complete.

    A worker that dies (e.g. a segfault in the decoder) or overruns `cache.video_timeout` fails only
    its video, which is recorded as failed, and is replaced; the build goes on.
    """
    if multiprocessing.current_process().daemon:  # a daemonic process may not start children
        log.warning("building face crops in-process (inside a daemonic process): a decoder crash is fatal")
        import cv2

        cv2.setNumThreads(1)
        s = cache.settings
        detector = build_detector(s.detector, s.detect_max_side, s.yunet_model)
        yield from (cache.build_one(video, detector) for video in videos)
        return
    context = multiprocessing.get_context(_START_METHOD)
    pending = list(reversed(videos))
    pool: list[_Worker] = []
    try:
        while pending or any(w.video is not None for w in pool):
            for worker in pool:
                if worker.video is None and pending:
                    worker.submit(pending.pop())
            while pending and len(pool) < workers:
                pool.append(_Worker(context, cache))
                pool[-1].submit(pending.pop())
            busy = [w for w in pool if w.video is not None]
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=timeout)
            for worker in busy:
                video = worker.video
                if worker.conn in ready:
                    try:
                        report = worker.receive()
                    except (EOFError, OSError):
                        if not worker.ready:  # not this video's fault: nothing can be built
                            raise RuntimeError(
                                f"a face-crop build process failed to start ({_death(worker.process)}); "
                                "see its error above"
                            ) from None
                        failure = f"the build process died while decoding it ({_death(worker.process)})"
                    else:
                        if report is not None:
                            yield report
                        continue
                elif time.monotonic() > worker.deadline:
                    failure = f"decoding did not finish within {worker.timeout:g} s (a hung decoder?)"
                else:
                    continue
                log.error("%s: %s; going on in a new process", video, failure)
                worker.stop()
                pool.remove(worker)
                yield cache.record_failure(video, f"{video}: {failure}")
    finally:
        for worker in pool:
            worker.stop()

"""Face-crop cache: each video is decoded and its faces detected once, then read back as one array.

An entry is `<key>.npy` (the (N, S, S, 3) uint8 crops, memory-mappable) plus `<key>.json`
(frame indices, boxes, which frames had a detection). The key hashes everything that changes
the pixels: detector, margin, frame count, crop size and the video file's canonical path, size and
mtime. The canonical path is the resolved path relative to the dataset root when the video lies
inside it (the absolute resolved path otherwise), so every spelling of a path (`../ds/x.mp4`,
`/data/ds/x.mp4`, a symlinked folder) finds the same entry, and a dataset moved with its times kept
(rsync -a) keeps its cache.

Both files are written to temporary names and renamed into place, JSON last, so a killed build
leaves no entry that looks complete, and concurrent builders of one entry cannot corrupt it; the
temporary files are removed on any failure. A write that fails (disk full, read-only or unwritable
cache folder) stops the build with `CacheWriteError`: it is never blamed on the video. An entry that
does not read back (a truncated `.npy`, bad JSON) is rebuilt on lookup.
Videos that fail to decode get a `<key>.error.json` entry, so they are reported, not retried.

Decoding runs in spawned worker processes, never in the caller: decord's native code can crash the
process or spin forever (holding the GIL) on some broken files. A worker that dies or overruns
`video_timeout` seconds is replaced, and its video gets an error entry with the reason, like a
video that fails to decode (so the next build does not crash or wait on it again).
"""

from __future__ import annotations

import errno
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
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.data.faces import DETECTORS, build_detector, extract_face_crops
from src.data.logs import ONCE_PER_SWEEP
from src.data.schema import check, setting
from src.data.video import VideoDecodeError, not_a_video_file

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)
# 2: the key holds the canonical (root-relative) path; reports carry their entry's key
CACHE_FORMAT = 2
# spawn, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the
# children; spawned workers import only this module's light dependencies (cv2, decord, numpy)
_START_METHOD = "spawn"
# a video normally decodes and detects in well under a second; a worker past this is presumed hung
VIDEO_TIMEOUT_S = 300.0
_STARTUP_S = 120.0  # allowed on top for a new worker to import its modules and load the detector
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CacheError(ValueError):
    """A problem of the cache itself, not of a video. A ValueError, so runs end on its one-line message."""


class CacheWriteError(CacheError):
    """The cache folder cannot take an entry (disk full, read-only, no permission): the build stops."""


class CacheEntryError(CacheError):
    """A cache entry that a run pinned no longer reads back; the message names the video and the file."""


@dataclass(frozen=True)
class CropSettings:
    """How face crops are made: everything that changes their pixels (the cache key), and the device the
    detector runs on (which changes no pixel beyond rounding, so it is not in the key). Values are checked
    on construction, so a bad configuration fails before any video is touched; each field names the
    `data.*` key it is read from, and its errors name that key."""

    num_frames: int = setting("data.frames_per_video", 20)
    margin: float = setting("data.face_margin", 1.3)
    crop_size: int = setting("data.crop_size", 256)
    detector: str = setting("data.face_detector", "haar")
    detect_max_side: int | None = setting("data.detect_max_side", 320)  # None: the detector's own choice
    yunet_model: str | None = setting("data.yunet_model", None)
    detect_every: int = setting("data.detect_every", 1)  # detect on every k-th sampled frame, interpolate between
    device: str = setting("data.detect_device", "cpu", compare=False)  # the trainer's accelerator name

    def __post_init__(self):
        for name, minimum in (("num_frames", 1), ("crop_size", 16), ("detect_max_side", 32), ("detect_every", 1)):
            value = getattr(self, name)
            if value is None and name == "detect_max_side":
                continue
            check(_is_int(value) and value >= minimum, self, name, f"must be an integer >= {minimum}")
        margin = self.margin
        check(isinstance(margin, Real) and not isinstance(margin, bool) and margin > 0, self, "margin",
              "must be a number > 0 (the crop side / the face box side)")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown data.face_detector={self.detector!r}; choose one of {', '.join(DETECTORS)}")
        check(isinstance(self.device, str), self, "device", "must be an accelerator name (cpu, gpu, auto)")

    def pixel_settings(self) -> dict:
        """The settings that change the crops' pixels: what the cache key hashes."""
        return {k: v for k, v in asdict(self).items() if k != "device"}


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


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
    num_searched: int = 0  # frames the detector ran on (data.detect_every > 1 skips some)
    key: str = ""  # the cache entry it was read from or written to ("" when the video was never keyed)

    @property
    def degraded(self) -> str:
        """Why the crops of a usable video are not all detected faces ('' if they are)."""
        if self.centre_fallback:
            return "no face detected in any frame: centre crops"
        missed = self.frames_searched - self.num_detected
        if missed:
            return f"no face in {missed} of {self.frames_searched} searched frames: boxes from neighbouring detections"
        return ""

    @property
    def frames_searched(self) -> int:
        """Frames the detector ran on (data.detect_every=k searches about every k-th; older entries: all)."""
        return self.num_searched or self.num_frames


@dataclass(frozen=True)
class CacheEntry:
    """The files of one built entry, fixed when a run looked it up: it stays readable for the whole run,
    even if the video is touched (which changes the key) meanwhile. Picklable, for DataLoader workers."""

    video: str
    crops_file: Path
    meta_file: Path

    def load(self) -> tuple[np.ndarray, dict]:
        """(crops (N, S, S, 3) uint8, memory-mapped; metadata). CacheEntryError names video and file."""
        try:
            meta = json.loads(self.meta_file.read_text())
            frames = len(meta["frame_indices"])
        except FileNotFoundError:
            raise CacheEntryError(
                f"the cache entry {self.meta_file} of {self.video} is gone (deleted while in use?); "
                "rerun to rebuild it"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise self._corrupt(self.meta_file, error) from None
        try:
            crops = np.load(self.crops_file, mmap_mode="r")
        except FileNotFoundError:
            raise CacheEntryError(
                f"the cache entry {self.crops_file} of {self.video} is gone (deleted while in use?); "
                "rerun to rebuild it"
            ) from None
        except (OSError, ValueError, EOFError) as error:  # a truncated .npy: "mmap length is greater ..."
            raise self._corrupt(self.crops_file, error) from None
        if crops.ndim != 4 or crops.shape[0] != frames or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise self._corrupt(self.crops_file, f"{crops.dtype} {crops.shape} for {frames} frames")
        return crops, meta

    def _corrupt(self, file: Path, error) -> CacheEntryError:
        reason = f"{type(error).__name__}: {error}" if isinstance(error, Exception) else error
        return CacheEntryError(
            f"the cache entry {file} of {self.video} is corrupt ({reason}); delete it and rerun to rebuild it"
        )


@dataclass
class BuildReport:
    videos: list[VideoReport] = field(default_factory=list)  # one per video asked for, in that order
    num_built: int = 0
    num_reused: int = 0

    @property
    def failed(self) -> list[VideoReport]:
        return [v for v in self.videos if not v.ok]

    @property
    def frame_detection_rate(self) -> float:
        """Detections per frame the detector searched (not per frame: interpolated frames were not searched)."""
        searched = sum(v.frames_searched for v in self.videos if v.ok)
        return sum(v.num_detected for v in self.videos if v.ok) / searched if searched else 0.0

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
            "searched_frames": sum(v.frames_searched for v in ok),
            "frame_detection_rate": round(self.frame_detection_rate, 4),
        }


class FaceCropCache:
    def __init__(
        self,
        cache_dir: str | Path,
        settings: CropSettings,
        video_timeout: float = VIDEO_TIMEOUT_S,
        root: str | Path | None = None,
        device: str = "cpu",
    ):
        """`root`: the dataset root; videos inside it are keyed by their path relative to it. `device`: where
        a torch detector (MTCNN) runs; it changes no pixel beyond rounding, so it is not part of the key."""
        self.device = device
        self.cache_dir = Path(cache_dir).expanduser()
        self.settings = settings
        self.video_timeout = video_timeout
        self.root = None if root is None else Path(root).expanduser()
        self._detector_key: str | None = None
        check_cache_dir(self.cache_dir)

    # -- keys and paths -------------------------------------------------------------------------
    def detector_key(self) -> str:
        if self._detector_key is None:
            s = self.settings
            self._detector_key = build_detector(s.detector, s.detect_max_side, s.yunet_model).cache_key
        return self._detector_key

    def canonical_path(self, video: Path) -> str:
        """The one name of a video: resolved, relative (POSIX) to the resolved root when inside it."""
        resolved = Path(video).resolve()
        if self.root is not None:
            root = self.root.resolve()
            if resolved.is_relative_to(root):
                return resolved.relative_to(root).as_posix()
        return resolved.as_posix()

    def key(self, video: Path) -> str:
        stat_result = Path(video).stat()
        fields = {
            "format": CACHE_FORMAT,
            "settings": self.settings.pixel_settings(),
            "detector": self.detector_key(),
            "video": self.canonical_path(video),
            "size": stat_result.st_size,
            "mtime_ns": stat_result.st_mtime_ns,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json", folder / f"{key}.error.json"

    def entry(self, video: Path, key: str | None = None) -> CacheEntry:
        """The entry files of `video`: of `key` (pinned by an earlier lookup or build) or of its current stat."""
        crops_file, meta_file, _ = self._paths(key or self.key(video))
        return CacheEntry(str(video), crops_file, meta_file)

    # -- reading --------------------------------------------------------------------------------
    def lookup(self, video: Path) -> VideoReport | None:
        """The stored report of a video (its path as spelled here), or None if it has no complete, readable
        entry: a missing, half-written or corrupt entry is (re)built."""
        key = self.key(video)
        crops_file, meta_file, error_file = self._paths(key)
        if meta_file.is_file():
            entry = CacheEntry(str(video), crops_file, meta_file)
            try:
                _, meta = entry.load()
                report = meta["report"]
            except (CacheEntryError, KeyError) as error:
                log.warning("%s; rebuilding it", error)
                return None
        elif error_file.is_file():
            try:
                report = json.loads(error_file.read_text())["report"]
            except (OSError, ValueError, KeyError):
                return None  # unreadable error entry: the video is tried again
        else:
            return None
        try:
            stored = VideoReport(**report)
        except TypeError:
            return None
        return self._respelled(stored, video, key)

    @staticmethod
    def _respelled(report: VideoReport, video: Path, key: str) -> VideoReport:
        """A stored report under the spelling asked for now (a reason starting with the old one too)."""
        old, new = report.path, str(video)
        if old != new and report.reason.startswith(old):
            report.reason = new + report.reason[len(old) :]
        report.path, report.key = new, key
        return report

    def load(self, video: Path | CacheEntry) -> tuple[np.ndarray, dict]:
        """(crops (N, S, S, 3) uint8, memory-mapped; metadata) of a built video or of a pinned entry."""
        entry = video if isinstance(video, CacheEntry) else self.entry(Path(video))
        return entry.load()

    # -- building -------------------------------------------------------------------------------
    def build(self, videos: Iterable[Path], workers: int = 1, progress: bool = True) -> BuildReport:
        """Build the missing entries (in parallel over videos) and report on every video, one report per
        video in the order given (matched by position, never by how a path is spelled).

        Raises CacheWriteError (and removes its partial files) when an entry cannot be written.
        """
        videos = [Path(v) for v in videos]
        reports: list[VideoReport | None] = [None] * len(videos)
        report = BuildReport()
        todo: list[int] = []
        for position, video in enumerate(videos):
            problem = not_a_video_file(video)
            if problem:  # missing, a FIFO, a device, a folder: reported, never opened, never recorded
                reports[position] = VideoReport(str(video), ok=False, reason=f"{video}: {problem}")
                continue
            stored = self.lookup(video)
            if stored is None:
                todo.append(position)
            else:
                reports[position] = stored
                report.num_reused += 1
        if todo:
            self.detector_key()  # fail early (e.g. a missing YuNet file), before starting workers
            self._make_cache_dir()
            bar = tqdm(total=len(todo), desc="face crops", unit="video", disable=not progress)
            jobs = [(position, videos[position]) for position in todo]
            for position, result in _build_isolated(self, jobs, max(1, min(workers, len(todo)))):
                result.path = str(videos[position])
                reports[position] = result
                bar.update()
            bar.close()
            report.num_built = len(todo)
        report.videos = reports
        return report

    def build_one(self, video: Path, detector) -> VideoReport:
        try:
            key = self.key(video)
        except OSError as error:
            return VideoReport(str(video), ok=False, reason=f"{video}: cannot stat: {error}")
        crops_file, meta_file, error_file = self._paths(key)
        try:
            crops, meta = extract_face_crops(video, self.settings, detector)
        except VideoDecodeError as error:
            return self.record_failure(video, str(error), key)
        report = VideoReport(**meta["report"])
        report.key = key
        meta["report"] = asdict(report)
        self._write_entry(video, crops_file, meta_file, crops, json.dumps(meta))
        if error_file.exists():
            error_file.unlink(missing_ok=True)
        return report

    def _write_entry(self, video: Path, crops_file: Path, meta_file: Path, crops: np.ndarray, meta: str) -> None:
        """Crops, then metadata, each via a temporary file renamed into place; the temporary files go on any
        failure. A failed write is the cache folder's problem (CacheWriteError), not the video's."""
        tag = f"{os.getpid()}.{uuid.uuid4().hex}"
        tmp_crops = crops_file.with_name(f".{crops_file.stem}.{tag}.npy")
        tmp_meta = meta_file.with_name(f".{meta_file.name}.{tag}")
        try:
            crops_file.parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp_crops, crops)
            os.replace(tmp_crops, crops_file)
            tmp_meta.write_text(meta)
            os.replace(tmp_meta, meta_file)
        except OSError as error:
            raise self._write_error(video, error) from error
        finally:
            for tmp in (tmp_crops, tmp_meta):
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass

    def _write_error(self, video: Path, error: OSError) -> CacheWriteError:
        if error.errno in _DISK_FULL:
            return CacheWriteError(
                f"disk full: no space left to write the face crops of {video} into the cache {self.cache_dir} "
                f"({error.strerror or error}); free some space or set data.cache_dir to another disk"
            )
        return CacheWriteError(
            f"cannot write the face crops of {video} into the cache {self.cache_dir} "
            f"({type(error).__name__}: {error}); make it writable or set data.cache_dir to another folder"
        )

    def _make_cache_dir(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheWriteError(
                f"cannot create the face-crop cache folder data.cache_dir={self.cache_dir} "
                f"({type(error).__name__}: {error}); set data.cache_dir to a writable folder"
            ) from error

    def record_failure(self, video: Path, reason: str, key: str | None = None) -> VideoReport:
        """Store a failed video's report as its entry: later builds report it instead of retrying it."""
        report = VideoReport(str(video), ok=False, reason=reason)
        try:
            report.key = key or self.key(video)
            _, _, error_file = self._paths(report.key)
            error_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(error_file, json.dumps({"report": asdict(report)}))
        except OSError as error:
            log.warning("cannot record the failure of %s in the cache: %s", video, error)
        return report


def check_cache_dir(cache_dir: Path) -> None:
    """A one-line error when the cache folder, or the nearest existing folder above it, is not a folder."""
    for path in (cache_dir, *cache_dir.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                what = "is" if path == cache_dir else f"is under {path}, which is"
                raise CacheError(
                    f"data.cache_dir={cache_dir} {what} not a folder; set data.cache_dir to a folder"
                )
            return


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class _Fatal:
    """A worker's message that the build cannot go on (the cache folder cannot be written)."""

    message: str


def _worker_main(cache: FaceCropCache, conn) -> None:
    """A build process: says it is ready, then receives videos and answers with their reports."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe the cores
    s = cache.settings
    detector = build_detector(s.detector, s.detect_max_side, s.yunet_model, device=cache.device)
    try:
        conn.send(None)
        while True:
            video = conn.recv()
            try:
                report = cache.build_one(video, detector)
            except CacheWriteError as error:  # the cache's problem, not the video's: the build stops
                report = _Fatal(str(error))
            except Exception as error:  # e.g. a detector error: this video fails, not the build
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
        self.position = -1
        self.deadline = 0.0

    def submit(self, position: int, video: Path) -> None:
        self.conn.send(video)
        # the clock starts once the worker has started up (imports, detector)
        self.video, self.deadline = video, time.monotonic() + self.timeout + (0 if self.ready else _STARTUP_S)
        self.position = position

    def receive(self) -> VideoReport | None:
        """The report of the current video, or None for the start-up message."""
        message = self.conn.recv()
        if message is None:
            self.ready, self.deadline = True, time.monotonic() + self.timeout
            return None
        self.video = None
        if isinstance(message, _Fatal):
            raise CacheWriteError(message.message)
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


def _build_isolated(
    cache: FaceCropCache, jobs: list[tuple[int, Path]], workers: int
) -> Iterator[tuple[int, VideoReport]]:
    """Build the (position, video) `jobs` in `workers` spawned processes; yields (position, report) per
    video, as they complete.

    A worker that dies (e.g. a segfault in the decoder) or overruns `cache.video_timeout` fails only
    its video, which is recorded as failed, and is replaced; the build goes on. A CacheWriteError
    stops it.
    """
    if multiprocessing.current_process().daemon:  # a daemonic process may not start children
        log.warning("building face crops in-process (inside a daemonic process): a decoder crash is fatal")
        import cv2

        cv2.setNumThreads(1)
        s = cache.settings
        detector = build_detector(s.detector, s.detect_max_side, s.yunet_model, device=cache.device)
        yield from ((position, cache.build_one(video, detector)) for position, video in jobs)
        return
    context = multiprocessing.get_context(_START_METHOD)
    pending = list(reversed(jobs))
    pool: list[_Worker] = []
    try:
        while pending or any(w.video is not None for w in pool):
            for worker in pool:
                if worker.video is None and pending:
                    worker.submit(*pending.pop())
            while pending and len(pool) < workers:
                pool.append(_Worker(context, cache))
                pool[-1].submit(*pending.pop())
            busy = [w for w in pool if w.video is not None]
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=timeout)
            for worker in busy:
                video, position = worker.video, worker.position
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
                            yield position, report
                        continue
                elif time.monotonic() > worker.deadline:
                    failure = f"decoding did not finish within {worker.timeout:g} s (a hung decoder?)"
                else:
                    continue
                log.error("%s: %s; going on in a new process", video, failure)
                worker.stop()
                _remove_temporary_files(cache.cache_dir, worker.process.pid)
                pool.remove(worker)
                yield position, cache.record_failure(video, f"{video}: {failure}")
    finally:
        for worker in pool:
            busy = worker.video is not None
            worker.stop()
            if busy:  # killed mid-video: it may have left a half-written temporary file
                _remove_temporary_files(cache.cache_dir, worker.process.pid)


def _remove_temporary_files(cache_dir: Path, pid: int | None) -> None:
    """The temporary files of a killed build process (their names carry its pid)."""
    if pid is None:
        return
    for tmp in cache_dir.glob(f"*/.*.{pid}.*"):
        tmp.unlink(missing_ok=True)

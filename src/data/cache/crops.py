"""The face-crop cache: each video is decoded and its faces detected once, then read back as one array.

An entry is `<key>.npy` (the (N, S, S, 3) uint8 crops, memory-mappable) plus `<key>.json`
(frame indices, boxes, which frames had a detection, the detected landmarks in crop pixels). The key
hashes everything that changes the pixels: detector, margin, frame count and sampling, crop size,
alignment and the video file's canonical path, size and mtime. The canonical path is the resolved path
relative to the dataset root when the video lies inside it (the absolute resolved path otherwise), so
every spelling of a path (`../ds/x.mp4`, `/data/ds/x.mp4`, a symlinked folder) finds the same entry, and a
dataset moved with its times kept (rsync -a) keeps its cache.

Both files are written atomically (`src.utils.files`), JSON last, so a killed build leaves no entry
that looks complete, and concurrent builders of one entry cannot corrupt it. A write that fails (disk
full, read-only or unwritable cache folder) stops the build with `CacheWriteError`: it is never blamed
on the video. An entry that does not read back (a truncated `.npy`, bad JSON) is rebuilt on lookup.
Videos that fail to decode get a `<key>.error.json` entry, so they are reported, not retried.
Decoding runs in build processes (`src.data.cache.pool`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.data.cache.errors import CacheEntryError, CacheError, CacheWriteError
from src.data.cache.pool import VIDEO_TIMEOUT_S, build_isolated
from src.data.cache.reports import BuildReport, VideoReport
from src.data.faces.align import landmarks_from_json, landmarks_to_json, make_crops
from src.data.faces.detectors import DETECTORS, LANDMARK_DETECTORS, FaceDetector, build_detector
from src.data.faces.track import detect_faces
from src.data.faces.video import FRAME_SAMPLINGS, VideoDecodeError, not_a_video_file, read_frames
from src.data.logs import ONCE_PER_SWEEP
from src.utils.errors import ConfigError, check
from src.utils.files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)
# 2: the key holds the canonical (root-relative) path; reports carry their entry's key
CACHE_FORMAT = 2
# the names the key hashes these settings under (the fields' names before they became the keys users
# type): renaming a field must not orphan every entry already built
_KEYED_AS = {"frames_per_video": "num_frames", "face_margin": "margin", "face_detector": "detector"}
# settings added after entries were built, with the value every older entry was built with: hashed only when
# set otherwise, so those entries keep their keys
_KEYED_WHEN_CHANGED = {"align": False, "frame_sampling": "centres"}
DETECT_DEVICES = ("auto", "cpu", "cuda", "gpu")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class CropSettings:
    """How face crops are made, one field per key users type (`data.<field>`): everything that changes
    their pixels (the cache key), and the device the detector runs on (which changes no pixel beyond
    rounding, so it is not in the key). Values are checked on construction, so a bad configuration fails
    before any video is touched, naming its key."""

    frames_per_video: int = 20  # frames cached per video, spread by frame_sampling
    # centres: the middle frame of each of frames_per_video equal segments | linspace: round(numpy.linspace(0,
    # frames - 1, frames_per_video)), first and last frame included
    frame_sampling: str = "centres"
    face_margin: float = 1.3  # the crop side / the face box side
    crop_size: int = 256  # cached crop side; resized to the model's input size on load
    face_detector: str = "mtcnn"  # one of DETECTORS (src.data.faces.detectors)
    detect_max_side: int | None = (
        None  # frames are downscaled to this before detection; None: the detector's own
    )
    yunet_model: str | None = None  # the YuNet .onnx file that face_detector=yunet needs
    detect_every: int = 2  # detect on every k-th sampled frame, boxes interpolated between
    align: bool = False  # map the five landmarks onto a template (src.data.faces.align): a level eye line
    # auto: CUDA when available, else the CPU; gpu is cuda (as trainer.accelerator names it)
    detect_device: str = field(default="auto", compare=False)

    def __post_init__(self):
        for name, minimum in (("frames_per_video", 1), ("crop_size", 16), ("detect_every", 1)):
            value = getattr(self, name)
            check(
                _is_int(value) and value >= minimum, f"data.{name}", value, f"must be an integer >= {minimum}"
            )
        side = self.detect_max_side
        check(
            side is None or (_is_int(side) and side >= 32),
            "data.detect_max_side",
            side,
            "must be null (the detector's own) or an integer >= 32",
        )
        margin = self.face_margin
        check(
            isinstance(margin, Real) and not isinstance(margin, bool) and margin > 0,
            "data.face_margin",
            margin,
            "must be a number > 0 (the crop side / the face box side)",
        )
        check(
            self.face_detector in DETECTORS,
            "data.face_detector",
            self.face_detector,
            f"choose one of {', '.join(DETECTORS)}",
        )
        check(
            self.yunet_model is None or isinstance(self.yunet_model, str),
            "data.yunet_model",
            self.yunet_model,
            "must be null or the path of the YuNet .onnx file",
        )
        check(
            self.frame_sampling in FRAME_SAMPLINGS,
            "data.frame_sampling",
            self.frame_sampling,
            "choose centres (the middle of equal segments) or linspace (first and last frame included)",
        )
        check(isinstance(self.align, bool), "data.align", self.align, "must be true or false")
        if self.align and self.face_detector not in LANDMARK_DETECTORS:
            raise ConfigError(
                f"data.align=true needs face landmarks, which data.face_detector={self.face_detector} does not "
                f"give: set data.face_detector={' or '.join(LANDMARK_DETECTORS)}, or data.align=false"
            )
        check(
            self.detect_device in DETECT_DEVICES,
            "data.detect_device",
            self.detect_device,
            "choose auto (CUDA when available, else the CPU), cpu or cuda",
        )

    def pixel_settings(self) -> dict:
        """The settings that change the crops' pixels: what the cache key hashes."""
        return {
            _KEYED_AS.get(k, k): v
            for k, v in asdict(self).items()
            if k != "detect_device" and not (k in _KEYED_WHEN_CHANGED and v == _KEYED_WHEN_CHANGED[k])
        }


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class CacheEntry:
    """The files of one built entry, fixed when a run looked it up: it stays readable for the whole run,
    even if the video is touched (which changes the key) meanwhile. Picklable, for DataLoader workers."""

    video: str
    crops_file: Path
    meta_file: Path

    def load(self) -> tuple[np.ndarray, dict]:
        """(crops (N, S, S, 3) uint8, memory-mapped; metadata, its `landmarks` an (N, 5, 2) float array of the
        detected landmarks in crop pixels, NaN where none: frames without a detection, detectors without
        landmarks, entries built before landmarks were stored). CacheEntryError names video and file."""
        try:
            meta = json.loads(self.meta_file.read_text())
            frames = len(meta["frame_indices"])
            meta["landmarks"] = landmarks_from_json(meta.get("landmarks"), frames)
        except FileNotFoundError:
            raise self._gone(self.meta_file) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise self._corrupt(self.meta_file, error) from None
        try:
            crops = np.load(self.crops_file, mmap_mode="r")
        except FileNotFoundError:
            raise self._gone(self.crops_file) from None
        except (OSError, ValueError, EOFError) as error:  # a truncated .npy: "mmap length is greater ..."
            raise self._corrupt(self.crops_file, error) from None
        if crops.ndim != 4 or crops.shape[0] != frames or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise self._corrupt(self.crops_file, f"{crops.dtype} {crops.shape} for {frames} frames")
        return crops, meta

    def _gone(self, file: Path) -> CacheEntryError:
        return CacheEntryError(
            f"the cache entry {file} of {self.video} is gone (deleted while in use?); rerun to rebuild it"
        )

    def _corrupt(self, file: Path, error) -> CacheEntryError:
        reason = f"{type(error).__name__}: {error}" if isinstance(error, Exception) else error
        return CacheEntryError(
            f"the cache entry {file} of {self.video} is corrupt ({reason}); delete it and rerun to rebuild it"
        )


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
    def detector(self) -> FaceDetector:
        """The detector the settings name, on this cache's device."""
        s = self.settings
        return build_detector(s.face_detector, s.detect_max_side, s.yunet_model, device=self.device)

    def detector_key(self) -> str:
        if self._detector_key is None:
            s = self.settings
            self._detector_key = build_detector(s.face_detector, s.detect_max_side, s.yunet_model).cache_key
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
            for position, result in build_isolated(self, jobs, max(1, min(workers, len(todo)))):
                result.path = str(videos[position])
                reports[position] = result
                bar.update()
            bar.close()
            report.num_built = len(todo)
        report.videos = reports
        return report

    def build_one(self, video: Path, detector: FaceDetector) -> VideoReport:
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

    def _write_entry(
        self, video: Path, crops_file: Path, meta_file: Path, crops: np.ndarray, meta: str
    ) -> None:
        """Crops, then metadata, each written atomically. A failed write is the cache folder's problem
        (CacheWriteError), not the video's."""
        try:
            crops_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(crops_file) as handle:
                np.save(handle, crops)
            atomic_write_text(meta_file, meta)
        except OSError as error:
            raise self._write_error(video, error) from error

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
            atomic_write_text(error_file, json.dumps({"report": asdict(report)}))
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


def extract_face_crops(
    video: Path, settings: CropSettings, detector: FaceDetector
) -> tuple[np.ndarray, dict]:
    """Decode, detect and crop one video: (crops (N, S, S, 3) uint8, its entry's metadata with its VideoReport).

    The detector runs on every `settings.detect_every`-th sampled frame (batched), the boxes (and landmarks)
    of the others interpolated between.
    """
    frames, indices = read_frames(video, settings.frames_per_video, settings.frame_sampling)
    faces, searched = detect_faces(frames, detector, settings.detect_every)
    made = make_crops(frames, faces, searched, settings.crop_size, settings.face_margin, settings.align)
    crops, track = made.crops, made.track
    report = VideoReport(
        str(video),
        ok=True,
        num_frames=len(frames),
        num_detected=int(track.detected.sum()),
        num_filled=track.num_filled,
        centre_fallback=track.centre_fallback,
        num_searched=track.num_searched,
    )
    if len(frames) < settings.frames_per_video:
        report.reason = f"short video: {len(frames)} of {settings.frames_per_video} frames"
    meta = {
        "report": asdict(report),
        "frame_indices": indices.tolist(),
        "boxes": track.boxes.tolist(),
        "detected": track.detected.tolist(),
        "searched": track.searched.tolist(),
        "landmarks": landmarks_to_json(made.landmarks),  # crop pixels (read back by CacheEntry.load)
        "frame_shape": list(frames.shape[1:3]),
        "settings": asdict(settings),
    }
    return crops, meta

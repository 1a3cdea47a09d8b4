"""DeepfakeDataModule: a dataset (Celeb-DF, FaceForensics++, the embedded synthetic set) as batches of face crops.

It is composed from the dataset's indexer (a Hydra spec, `data.index`) and one settings object per concern:
`SplitSettings` (folds), `CropSettings` (how face crops are made; `src.data.cache`), `LoaderSettings`,
`InputContract` (the model's input, `model.input`) and `Transforms` (training augmentation, test-time
perturbation). Users type flat keys (`data.fold`, `data.face_detector`, ...); each settings field names its
key, so `build_datamodule(cfg.data)` reads it from there and every error names it. Checkpoints store each
settings object as a plain dict (`weights_only=True` loads them; `DeepfakeDataModule(**hparams)` rebuilds).

Frame mode (MesoNet): training items are single crops. Clip mode (LSTM models): items are
`frames_per_clip` crops of one video in order. Validation, test and prediction items are always whole
videos (every sampled frame, or the clip), so video-level scores come straight out of a batch.
Batches carry uint8 HWC pixels; they are normalized after the transfer to the device, which
moves 4x fewer bytes through worker queues and lands in channels_last layout for free.

Every indexed video is either used or reported as skipped with its reason (per split), matched to
its cache report by position, never by how its path is spelled. The cache entries a run looked up
are pinned for the whole run: touching a video mid-run does not make its crops unreadable.
`setup_predict(videos)` scores arbitrary video files through the same datasets and transforms.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from src.data.augment import (
    TRAIN_LEVELS,
    augment_clip,
    build_test_transform,
    build_train_transform,
    stable_seed,
)
from src.data.cache import BuildReport, CacheEntry, CropSettings, FaceCropCache, VideoReport
from src.data.index import CelebDFIndex, VideoRecord, index_celebdf, split_folds
from src.data.logs import ONCE_PER_SWEEP
from src.data.schema import check, key_of, setting

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)
SPLITS = ("train", "val", "test")
UNKNOWN_LABEL = -1  # the label of a predicted video file outside any index
MOSTLY_UNDETECTED = 0.5  # a video with a face detected in fewer of its frames is flagged in the data report
IDENTITY_SPLITS = ("official", "strict")
# the splits a stage needs, each with both classes (None: every split)
_STAGE_SPLITS = {"fit": SPLITS, "validate": ("val",), "test": ("test",), "predict": ("test",), None: SPLITS}


class TooManyBadVideos(ValueError):
    pass


class _CachedVideos(Dataset):
    """Base: the pinned cache entries of `records`, opened lazily, once per worker process."""

    def __init__(self, entries: list[CacheEntry], records: list[VideoRecord]):
        if len(entries) != len(records):
            raise ValueError(f"{len(entries)} cache entries for {len(records)} videos")
        self.entries, self.records = entries, records
        self._crops: dict[int, np.ndarray] = {}

    def crops(self, video_index: int) -> np.ndarray:
        if video_index not in self._crops:
            self._crops[video_index] = self.entries[video_index].load()[0]
        return self._crops[video_index]

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records])


class FrameDataset(_CachedVideos):
    """Single training crops: (crop (S, S, 3) uint8, label, video index).

    An epoch draws `frames_per_epoch` random cached frames of every video (all of them, in
    order, when None): consecutive frames are near-duplicates, so a few per video and more
    epochs see more variety per second of compute than every frame every epoch.
    """

    def __init__(self, entries, records, frame_counts: list[int], transform, frames_per_epoch: int | None):
        super().__init__(entries, records)
        self.transform, self.frame_counts = transform, frame_counts
        self.per_video = frames_per_epoch
        if frames_per_epoch is None:
            self.items = [(v, f) for v, n in enumerate(frame_counts) for f in range(n)]
        else:
            self.items = [(v, None) for v in range(len(records)) for _ in range(frames_per_epoch)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        video, frame = self.items[i]
        if frame is None:  # torch RNG: seeded per worker by Lightning, so runs are reproducible
            frame = int(torch.randint(self.frame_counts[video], ()))
        crop = np.asarray(self.crops(video)[frame : frame + 1])
        pixels = augment_clip(self.transform, crop, int(torch.randint(2**31 - 1, ())))[0]
        return torch.from_numpy(pixels), self.records[video].label, video

    def item_labels(self) -> np.ndarray:
        return np.array([self.records[v].label for v, _ in self.items])


class VideoDataset(_CachedVideos):
    """Whole videos: (crops (T, S, S, 3) uint8, label, id), `num_frames` evenly spaced; the id is the
    video's position in `records` unless `ids` are given.

    Every frame of a video gets the same augmentation parameters; with `seed` set they depend only
    on (seed, the video's path relative to the dataset root), so every job of a sweep perturbs a video
    identically, whatever other videos are in the list (a video that fails to decode changes nothing).
    """

    def __init__(self, entries, records, num_frames: int, transform, seed: int | None, ids: list[int] | None = None):
        super().__init__(entries, records)
        self.num_frames, self.transform, self.seed = num_frames, transform, seed
        self.ids = list(range(len(records))) if ids is None else list(ids)

    def __len__(self) -> int:
        return len(self.records)

    def video_seed(self, video: int) -> int | None:
        return None if self.seed is None else stable_seed(self.seed, self.records[video].path)

    def __getitem__(self, video: int):
        seed = self.video_seed(video)
        seed = int(torch.randint(2**31 - 1, ())) if seed is None else seed
        pixels = self.prepare(self.crops(video), self.num_frames, self.transform, seed)
        return pixels, self.records[video].label, self.ids[video]

    @staticmethod
    def prepare(crops: np.ndarray, num_frames: int, transform, seed: int | None) -> torch.Tensor:
        """`num_frames` evenly spaced crops, augmented alike: (T, S, S, 3) uint8.

        A short video repeats frames so every item has the same length.
        """
        picks = np.linspace(0, len(crops) - 1, num_frames).round().astype(int)
        return torch.from_numpy(augment_clip(transform, np.asarray(crops[picks]), seed))

    def item_labels(self) -> np.ndarray:
        return self.labels()


def _announce_synthetic(root: Path, params: dict) -> None:
    """Say where the embedded set goes and how big it is before generating it (a mistyped data.root is
    noticed), and refuse a folder that holds something else instead of writing next to it."""
    from src.data.synthetic import MARKER, PRESETS

    if (root / MARKER).is_file():
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if (root / "Celeb-real").is_dir() or (root / "Celeb-synthesis").is_dir():
            raise ValueError(f"data.root={root} holds a Celeb-DF dataset, not the embedded synthetic one: "
                             f"use data=celebdf data.root={root}")
        raise ValueError(f"data.root={root} exists and holds neither the embedded synthetic set nor a Celeb-DF "
                         "layout: give data=synthetic a new folder, or use data=celebdf / data=ffpp for a real dataset")
    knobs = {**PRESETS.get(params.get("preset", "v2"), {}), **params}
    videos = knobs["num_identities"] * knobs["real_per_identity"] * (1 + knobs["fakes_per_real"]) + knobs["youtube_real"]
    megabytes = videos * knobs["num_frames"] * knobs["width"] * knobs["height"] * 0.06 / 1e6  # ~0.06 B/pixel
    log.warning("generating the embedded synthetic Celeb-DF (preset %s) into %s: %d videos of %d frames, "
                "about %.0f MB; this happens once", knobs.get("preset", "v2"), root, videos, knobs["num_frames"],
                megabytes)


def _torch_device(accelerator: str) -> str:
    """The trainer's accelerator as a device for the face detector: the GPU when there is one."""
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


# -- the settings the data module is composed from, one concern each ----------------------------------------
# Each field names the key users type for it (`setting`): build_datamodule reads it from there, errors name it.
@dataclass(frozen=True)
class SplitSettings:
    """Which train/val videos validate: fold `fold` of `folds` identity-disjoint folds."""

    folds: int = setting("data.folds", 5)
    fold: int = setting("data.fold", 0)
    split_seed: int = setting("data.split_seed", 0)
    identity_split: str = setting("data.identity_split", "official")

    def __post_init__(self):
        check(_is_int(self.folds) and self.folds >= 2, self, "folds", "k-fold cross-validation needs an integer >= 2")
        check(_is_int(self.fold) and 0 <= self.fold < self.folds, self, "fold",
              f"must be an integer in 0..{self.folds - 1}")
        check(_is_int(self.split_seed), self, "split_seed", "must be an integer")
        check(self.identity_split in IDENTITY_SPLITS, self, "identity_split", "choose official or strict")


@dataclass(frozen=True)
class LoaderSettings:
    """How the cache is built and read: batches, worker processes, sampling, tolerated decode failures."""

    batch_size: int = setting("data.batch_size", 32)
    num_workers: int = setting("data.num_workers", 2)
    build_workers: int = setting("data.build_workers", 2)
    balanced_sampling: bool = setting("data.balanced_sampling", False)
    train_frames_per_video: int | None = setting("data.train_frames_per_video", None)  # None: every cached frame
    max_bad_fraction: float = setting("data.max_bad_fraction", 0.2)

    def __post_init__(self):
        check(self.train_frames_per_video is None or (_is_int(self.train_frames_per_video)
                                                      and self.train_frames_per_video >= 1),
              self, "train_frames_per_video", "must be null (all) or an integer >= 1")
        check(_is_int(self.build_workers) and self.build_workers >= 1, self, "build_workers", "must be >= 1")
        check(_is_int(self.num_workers) and self.num_workers >= 0, self, "num_workers", "must be >= 0")
        check(_is_int(self.batch_size) and self.batch_size >= 1, self, "batch_size", "must be >= 1")
        check(isinstance(self.balanced_sampling, bool), self, "balanced_sampling", "must be true or false")
        check(isinstance(self.max_bad_fraction, Real) and not isinstance(self.max_bad_fraction, bool)
              and 0 <= self.max_bad_fraction <= 1, self, "max_bad_fraction", "must be a fraction in [0, 1]")


@dataclass(frozen=True)
class InputContract:
    """The model's input (`model.input`): frames or clips, their size, normalization and clip length."""

    kind: str = setting("model.input.kind", "frame")  # frame: items are single crops; clip: frames_per_clip crops
    size: int = setting("model.input.size", 256)
    mean: tuple[float, ...] = setting("model.input.mean", (0.0, 0.0, 0.0))
    std: tuple[float, ...] = setting("model.input.std", (1.0, 1.0, 1.0))
    frames_per_clip: int = setting("model.input.frames_per_clip", 1)

    def __post_init__(self):
        check(self.kind in ("frame", "clip"), self, "kind", "must be frame or clip")
        check(_is_int(self.frames_per_clip) and self.frames_per_clip >= 1, self, "frames_per_clip", "must be >= 1")
        check(_is_int(self.size), self, "size", "must be an integer")
        for name in ("mean", "std"):  # stored as tuples: the contract is a value, hashable and immutable
            values = getattr(self, name)
            ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 3
            check(ok and all(isinstance(v, Real) for v in values), self, name, "must be 3 numbers (R, G, B)")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        check(all(v > 0 for v in self.std), self, "std", "must be 3 numbers > 0")

    @classmethod
    def from_mapping(cls, values: Mapping) -> InputContract:
        """From `model.input`; its other keys (e.g. fixed_size) concern the model, not the data."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(frozen=True)
class Transforms:
    """The training augmentation level, and the test-time perturbation with the seed that makes it the same
    for a video in every job of a sweep."""

    train: str = setting("data.train_augment", "weak")  # train_augment=weak|strong
    test: str | Mapping = setting("data.test_augment", "none")  # augment=<level>: its transform spec, or a level name
    seed: int | None = setting("data.augment_seed", 0)

    def __post_init__(self):
        check(self.train in TRAIN_LEVELS, self, "train", f"choose one of {', '.join(TRAIN_LEVELS)}")
        check(isinstance(self.test, str) or (isinstance(self.test, Mapping) and "_target_" in self.test), self, "test",
              "must be a level name or a transform spec with _target_")
        check(self.seed is None or _is_int(self.seed), self, "seed", "must be an integer or null")


# the data module's own keys: the dataset, where it and its cache live, and the settings above
DATASET_KEYS = ("_target_", "name", "root", "index", "cache_dir", "synthetic", "model_input")
DATA_SETTINGS = {"split": SplitSettings, "crops": CropSettings, "loaders": LoaderSettings, "transforms": Transforms}


def _settings_from(settings_class, data: Mapping):
    """A settings object from the flat `data` config: each field from the `data.*` key it names."""
    return settings_class(**{
        f.name: data[key_of(settings_class, f.name).removeprefix("data.")]
        for f in fields(settings_class)
        if key_of(settings_class, f.name).removeprefix("data.") in data
    })


def _plain(value):
    """Hydra/OmegaConf values as plain containers (checkpoints stay loadable with weights_only=True)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _as(settings_class, value):
    """A settings object given as itself or as its plain fields (a checkpoint's hyperparameters)."""
    return value if isinstance(value, settings_class) else settings_class(**value)


class DeepfakeDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        root: str | None,
        index: Mapping | None,
        cache_dir: str,
        split: SplitSettings | Mapping,
        crops: CropSettings | Mapping,
        loaders: LoaderSettings | Mapping,
        model_input: InputContract | Mapping,
        transforms: Transforms | Mapping,
        synthetic: Mapping | None = None,
    ):
        """A dataset (`name`, its indexer spec `index`, its `root`; `synthetic`: the generator's parameters
        for the embedded set) read as face crops cached under `cache_dir`, composed from one settings object
        per concern: the `split`, the face `crops`, the `loaders`, the model's input contract and the two
        `transforms`. Each may be given as its plain fields (as a checkpoint stores them);
        `build_datamodule(cfg.data)` builds them from the flat `data.*` keys users type.

        `root` may be None for prediction only (`setup_predict`). Every value is checked here, before any
        video is touched; a bad one is a ValueError naming its `data.*` / `model.*` key. The indexer and the
        test-time perturbation arrive as Hydra specs (plain dicts with `_target_`) and are built on use."""
        super().__init__()
        self.split, self.crops = _as(SplitSettings, split), _as(CropSettings, crops)
        self.loaders, self.transforms = _as(LoaderSettings, loaders), _as(Transforms, transforms)
        self.input = _as(InputContract, model_input)
        contract, crop_size, frames_per_video = self.input, self.crops.crop_size, self.crops.num_frames
        if contract.kind == "clip" and contract.frames_per_clip > frames_per_video:
            raise ValueError(
                f"model.input.frames_per_clip={contract.frames_per_clip} exceeds data.frames_per_video="
                f"{frames_per_video}: a clip cannot have more frames than are cached per video"
            )
        if contract.size > 2 * crop_size or contract.size < 16:
            raise ValueError(f"model.input.size={contract.size} does not fit data.crop_size={crop_size}")
        if index is not None and not (isinstance(index, Mapping) and "_target_" in index):
            raise ValueError(f"data.index={index!r}: must be an indexer spec with _target_")
        if root not in (None, "") and synthetic is None and not Path(root).expanduser().is_dir():
            title = {"celebdf": "Celeb-DF", "ffpp": "FaceForensics++"}.get(name, name)
            raise FileNotFoundError(f"{title} root not found: {Path(root).expanduser()} (data.root); point data.root "
                                    "at the dataset folder")
        # what a checkpoint stores: plain containers only, one per settings object
        self.save_hyperparameters(_plain({
            "name": name, "root": root, "index": index, "cache_dir": str(cache_dir), "synthetic": synthetic,
            "split": asdict(self.split), "crops": asdict(self.crops), "loaders": asdict(self.loaders),
            "model_input": asdict(self.input), "transforms": asdict(self.transforms),
        }), logger=False)
        self.name, self.index_spec, self.synthetic = name, _plain(index), _plain(synthetic)
        self.root = None if root in (None, "") else Path(root).expanduser()
        self.cache = FaceCropCache(cache_dir, self.crops, root=self.root, device=_torch_device(self.crops.device))
        self.index: CelebDFIndex | None = None
        self.build_report: BuildReport | None = None
        self.splits: dict[str, list[VideoRecord]] = {}  # the videos each split uses
        self.indexed_splits: dict[str, list[VideoRecord]] = {}  # ... and the skipped ones too
        self.video_reports: dict[str, VideoReport] = {}  # record path -> its cache report
        self.entries: dict[str, CacheEntry] = {}  # record path -> its cache entry, pinned for the run
        self.frame_counts: dict[str, int] = {}
        self.predict_reports: list[VideoReport] | None = None  # set by setup_predict, one per video given
        self._predict: tuple[list[CacheEntry], list[VideoRecord], list[int]] | None = None
        # the model's normalization, applied to uint8 pixels after the transfer to the device
        self.mean = torch.tensor(contract.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(contract.std, dtype=torch.float32).view(1, 3, 1, 1) * 255

    def _require_root(self) -> Path:
        if self.root is None:
            raise ValueError(
                "data.root is not set: point it at a Celeb-DF folder (data.root=/path/to/Celeb-DF-v2); "
                "scoring single video files (evaluate.py video=...) works without it"
            )
        return self.root

    # -- preparation ----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic set if needed, index it and build the face-crop cache."""
        if self.build_report is not None or self._predict is not None:
            return
        root = self._require_root()
        if self.synthetic is not None:
            from src.data.synthetic import generate_synthetic_celebdf

            _announce_synthetic(root, self.synthetic)
            generate_synthetic_celebdf(root, **self.synthetic)
        self._build(self._make_index())

    def _build(self, index: CelebDFIndex) -> BuildReport:
        report = self.cache.build([index.root / r.path for r in index.records], self.loaders.build_workers)
        if len(report.videos) != len(index.records):  # one report per video, by position
            raise RuntimeError(f"the cache reported {len(report.videos)} videos for {len(index.records)} indexed")
        self.index, self.build_report = index, report
        self.video_reports = {r.path: v for r, v in zip(index.records, report.videos, strict=True)}
        self.entries = {
            r.path: self.cache.entry(index.root / r.path, key=v.key or None)
            for r, v in zip(index.records, report.videos, strict=True)
            if v.ok
        }
        for video in report.failed:
            log.warning("skipped video %s: %s", video.path, video.reason)
        for video in report.videos:
            if video.ok and (video.degraded or video.reason):
                log.info("degraded video %s: %s", video.path, "; ".join(filter(None, [video.reason, video.degraded])))
        log.info("face-crop cache %s: %s", self.cache.cache_dir, report.summary())
        bad = len(report.failed) / max(len(report.videos), 1)
        if bad > self.loaders.max_bad_fraction:
            raise TooManyBadVideos(
                f"{len(report.failed)} of {len(report.videos)} videos under {index.root} could not be decoded "
                f"({bad:.0%} > data.max_bad_fraction={self.loaders.max_bad_fraction}); first: "
                + "; ".join(f"{v.path}: {v.reason}" for v in report.failed[:3])
            )
        return report

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self._predict is not None:
            return  # video files given to setup_predict: no index needed
        if not self.splits:
            self._make_splits()
        for split in _STAGE_SPLITS.get(stage, SPLITS):
            self._check_both_classes(split)

    def _make_splits(self) -> None:
        if self.build_report is None:
            self._build(self._make_index())
        split, index = self.split, self.index
        usable = {path for path, report in self.video_reports.items() if report.ok}
        self.frame_counts = {path: self.video_reports[path].num_frames for path in usable}
        # folds come from every indexed video, so a video that fails to decode moves no other video
        train, val = split_folds(index.train_val(), split.folds, split.fold, split.split_seed,
                                 identity_split=split.identity_split)
        self.indexed_splits = {"train": train, "val": val, "test": index.test()}
        self.splits = {name: [r for r in part if r.path in usable] for name, part in self.indexed_splits.items()}
        for split, items in self.splits.items():
            fake = sum(r.label for r in items)
            skipped = len(self.indexed_splits[split]) - len(items)
            log.info("%s split: %d videos (%d real, %d fake), %d skipped", split, len(items), len(items) - fake, fake,
                     skipped)

    def _check_both_classes(self, split: str) -> None:
        """A split without both classes is an error here, not a silent AUC of 0.0 (or nan) later."""
        items, settings = self.splits[split], self.split
        real = sum(r.label == 0 for r in items)
        fake = len(items) - real
        if real and fake:
            return
        skipped = len(self.indexed_splits[split]) - len(items)
        counts = f"{real} real and {fake} fake videos" + (f" ({skipped} more skipped)" if skipped else "")
        why = "AUC is undefined" if split != "train" else "a detector cannot be trained on it"
        if split == "test":
            fix = f"the test list of {self.index.root} must name usable videos of both classes"
            where = f"the test split of {self.index.root}"
        else:
            fix = "choose another data.fold/data.folds or data.split_seed"
            where = (f"the {split} split of fold {settings.fold} (data.folds={settings.folds}, "
                     f"data.split_seed={settings.split_seed})")
        raise ValueError(f"{where} has {counts}: {why}; {fix}")

    def setup_predict(self, videos: Sequence[str | Path]) -> list[VideoReport]:
        """Build or reuse the cache entries of arbitrary video files (no index or data.root needed);
        `predict_dataloader()` then yields the usable ones as whole-video items, with the test
        transform, frame choice and batch transfer of test evaluation, each item's id being the video's
        position in `videos`. Returns one report per video, in order (`ok`, `reason`, `num_frames`,
        `num_detected`, `centre_fallback`), also kept as `predict_reports`."""
        videos = [Path(v).expanduser() for v in videos]
        if not videos:
            raise ValueError("no video files to score")
        report = self.cache.build(videos, self.loaders.build_workers, progress=len(videos) > 1)
        entries, records, ids = [], [], []
        for position, (video, result) in enumerate(zip(videos, report.videos, strict=True)):
            if not result.ok:
                log.warning("cannot score %s", result.reason)
                continue
            entries.append(self.cache.entry(video, key=result.key or None))
            # seeded by the canonical path: a video inside data.root is perturbed as in test evaluation
            path = self.cache.canonical_path(video)
            records.append(VideoRecord(path, UNKNOWN_LABEL, identity="", source="", is_test=True))
            ids.append(position)
        self.predict_reports = report.videos
        self._predict = (entries, records, ids)
        return report.videos

    def class_counts(self) -> dict[str, int]:
        return {
            f"{split}_{name}": sum(r.label == label for r in items)
            for split, items in self.splits.items()
            for name, label in (("real", 0), ("fake", 1))
        }

    def data_report(self) -> dict:
        """Counts and per-video problems, for the tracker: per split and class, the indexed, used and
        skipped videos, their frames (detected, filled from a neighbour, centre-crop fallbacks), the
        identity overlap between splits, and the videos whose faces were mostly not found."""
        report = self.build_report
        split_of = {r.path: split for split, part in self.indexed_splits.items() for r in part}
        skipped = [
            {"path": v.path, "video": path, "split": split_of.get(path, ""), "reason": v.reason}
            for path, v in self.video_reports.items()
            if not v.ok
        ]
        per_split = {
            split: {name: self._split_stats([r for r in part if r.label == label]) for name, label in
                    (("real", 0), ("fake", 1))}
            for split, part in self.indexed_splits.items()
        }
        mostly_undetected = [
            {"path": v.path, "video": path, "split": split_of.get(path, ""), "frames": v.num_frames,
             "frames_detected": v.num_detected, "centre_fallback": v.centre_fallback}
            for path, v in self.video_reports.items()
            if v.ok and v.num_detected < MOSTLY_UNDETECTED * v.frames_searched
        ]
        summary = {**report.summary(), "indexed_videos": len(self.video_reports), "skipped_videos": len(skipped),
                   "mostly_undetected_videos": len(mostly_undetected)}
        return {
            "summary": summary,
            "splits": per_split,
            "identity_split": self.split.identity_split,
            "identity_overlap": self._identity_overlap(),
            "skipped_videos": skipped,
            "degraded_videos": [
                {"path": v.path, "reason": "; ".join(filter(None, [v.reason, v.degraded]))}
                for v in report.videos
                if v.ok and (v.reason or v.degraded)
            ],
            "mostly_undetected_videos": mostly_undetected,
            "skipped_index_entries": [{"entry": e, "reason": r} for e, r in self.index.skipped],
            "class_counts": self.class_counts(),
        }

    def _split_stats(self, records: list[VideoRecord]) -> dict[str, int]:
        reports = [self.video_reports[r.path] for r in records]
        used = [v for v in reports if v.ok]
        return {
            "indexed": len(reports),
            "used": len(used),
            "skipped": len(reports) - len(used),
            "frames": sum(v.num_frames for v in used),
            "frames_detected": sum(v.num_detected for v in used),
            "frames_filled": sum(v.num_filled for v in used),  # took a box from neighbouring detections
            "centre_fallback_videos": sum(v.centre_fallback for v in used),
            "centre_fallback_frames": sum(v.num_frames for v in used if v.centre_fallback),
            "mostly_undetected_videos": sum(v.num_detected < MOSTLY_UNDETECTED * v.frames_searched for v in used),
        }

    def _identity_overlap(self) -> dict:
        # imported here: index.py gains it in the same round of changes
        from src.data.index import identity_overlap

        return identity_overlap(self.splits)

    def write_data_report(self, path: Path) -> Path:
        path.write_text(json.dumps(self.data_report(), indent=2))
        return path

    # -- loaders --------------------------------------------------------------------------------
    def _entries(self, records: list[VideoRecord]) -> list[CacheEntry]:
        return [self.entries[r.path] for r in records]

    def train_dataset(self) -> Dataset:
        records = self.splits["train"]
        transform = build_train_transform(self.transforms.train, self.input.size)
        if self.input.kind == "frame":
            counts = [self.frame_counts[r.path] for r in records]
            return FrameDataset(self._entries(records), records, counts, transform,
                                self.loaders.train_frames_per_video)
        return VideoDataset(self._entries(records), records, self.input.frames_per_clip, transform, seed=None)

    def _make_index(self) -> CelebDFIndex:
        root, spec = self._require_root(), self.index_spec
        if spec is None:
            return index_celebdf(root)
        import hydra

        return hydra.utils.instantiate(spec)

    def eval_transform(self, level: str | Mapping = "none"):
        """A built-in level by name, or a perturbation spec (conf/augment/<level>.yaml `transform`)."""
        if isinstance(level, Mapping):
            import hydra

            return hydra.utils.instantiate(level)(size=self.input.size)
        return build_test_transform(level, self.input.size)

    def _eval_frames(self) -> int:
        return self.crops.num_frames if self.input.kind == "frame" else self.input.frames_per_clip

    def eval_dataset(self, split: str, level: str = "none") -> VideoDataset:
        records = self.splits[split]
        return VideoDataset(
            self._entries(records), records, self._eval_frames(), self.eval_transform(level), self.transforms.seed
        )

    def predict_dataset(self) -> VideoDataset:
        """The usable videos given to setup_predict, under the test-time augmentation."""
        if self._predict is None:
            raise RuntimeError("setup_predict(videos) was not called")
        entries, records, ids = self._predict
        if not records:
            reasons = "; ".join(v.reason for v in self.predict_reports[:3])
            raise ValueError(f"none of the {len(self.predict_reports)} video files can be scored: {reasons}")
        transform = self.eval_transform(self.transforms.test)
        return VideoDataset(entries, records, self._eval_frames(), transform, self.transforms.seed, ids=ids)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        sampler = None
        if train and self.loaders.balanced_sampling:
            labels = dataset.item_labels()
            weights = 1.0 / np.bincount(labels, minlength=2)[labels]
            sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(labels))
        workers = self.loaders.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.loaders.batch_size, train=True)

    def _eval_batch_size(self) -> int:
        # eval items are whole videos: keep about batch_size frames per batch
        batch_size = self.loaders.batch_size
        return max(1, batch_size // self.crops.num_frames) if self.input.kind == "frame" else batch_size

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"), self._eval_batch_size(), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test", self.transforms.test), self._eval_batch_size(), False)

    def predict_dataloader(self) -> DataLoader:
        """The video files given to setup_predict; without it, the test list under the test-time
        augmentation (what evaluate.py scores)."""
        if self._predict is None:
            return self.test_dataloader()
        return self._loader(self.predict_dataset(), self._eval_batch_size(), train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 (..., S, S, 3) -> normalized float (..., 3, S, S), channels_last for frame batches."""
        pixels, labels, videos = batch
        x = pixels.movedim(-1, -3).to(torch.float32, copy=True)  # a fresh tensor: normalized in place below
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        return x.reshape(*lead, *x.shape[-3:]), labels.float(), videos

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name}, root={self.root}, cache={self.cache.cache_dir}, {self.crops})"


CelebDFDataModule = DeepfakeDataModule  # the name it had when Celeb-DF was the only dataset


def datamodule_arguments(data_cfg) -> dict:
    """The data module's arguments from the flat `data` config users type: one settings object per concern,
    each field read from the key it names; a key that no settings object or the dataset's indexer takes is a
    typo, refused in one line naming it."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    if not isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.create(dict(data_cfg))
    if "root" in data_cfg.keys() and OmegaConf.is_missing(data_cfg, "root"):
        raise ValueError("data.root is not set: point it at the dataset folder (data.root=/path/to/dataset)")
    try:
        data = OmegaConf.to_container(data_cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = error.full_key or "a value"
        raise ValueError(f"{key if key.startswith('data.') else 'data.' + key} is not set") from None
    index = data.get("index")
    taken = set(DATASET_KEYS) | {key_of(group, f.name).removeprefix("data.")
                                 for group in DATA_SETTINGS.values() for f in fields(group)}
    unknown = sorted(set(data) - taken - set(index or {}))
    if unknown:  # a dataset's own keys are those its indexer takes; anything else is a typo
        raise ValueError(f"unknown key data.{unknown[0]} (this dataset's own keys: "
                         f"{', '.join(sorted(k for k in (index or {}) if not k.startswith('_'))) or 'none'})")
    if "model_input" not in data:
        raise ValueError("data.model_input is not set: the data config reads the model's input contract "
                         "(model_input: ${model.input})")
    return {
        "name": data.get("name", "celebdf"), "root": data.get("root"), "index": index,
        "cache_dir": data["cache_dir"], "synthetic": data.get("synthetic"),
        **{name: _settings_from(group, data) for name, group in DATA_SETTINGS.items()},
        "model_input": InputContract.from_mapping(data["model_input"]),
    }


def build_datamodule(data_cfg) -> DeepfakeDataModule:
    """The data module a composed `data` config describes (the one way entry points, callbacks,
    benchmarks and tests build it): the class named by `data._target_`, composed from its settings."""
    import hydra

    module_class = hydra.utils.get_class(data_cfg.get("_target_") or "src.data.datamodule.DeepfakeDataModule")
    return module_class(**datamodule_arguments(data_cfg))

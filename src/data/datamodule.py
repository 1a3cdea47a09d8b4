"""DeepfakeDataModule: a dataset (any indexer of `src.data.indexes`) as batches of face crops.

`hydra.utils.instantiate(cfg.data)` builds it from the flat keys users type (`data.fold`, `data.face_detector`,
...), declared once as the fields of the settings objects in `src.data.settings` (split, face crops, loaders).
What belongs to other groups arrives as arguments from the task function that wires them together: the
model's `input_contract` and batch size, the training augmentation and the test-time perturbation (Hydra
partials called with the model's input size) and their seed. Checkpoints store the arguments as plain
data (`weights_only=True` loads them; `DeepfakeDataModule(**hparams)` rebuilds the module).

Every indexed video is either used or reported as skipped with its reason (per split), matched to
its cache report by position, never by how its path is spelled. The cache entries a run looked up
are pinned for the whole run: touching a video mid-run does not make its crops unreadable.
`setup_predict(videos)` scores arbitrary video files through the same datasets and transforms.
Batches carry uint8 HWC pixels, normalized after the transfer to the device (4x fewer bytes through
the worker queues, channels_last layout for free).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from src.data.cache import BuildReport, CacheEntry, FaceCropCache, VideoReport
from src.data.data_report import data_report
from src.data.datasets import FrameDataset, VideoDataset
from src.data.indexes import dataset_title
from src.data.indexes.base import VideoIndex, VideoRecord, split_folds
from src.data.indexes.celebdf import index_celebdf
from src.data.logs import ONCE_PER_SWEEP
from src.data.settings import InputContract, settings_from
from src.data.transforms.batched import collate
from src.data.transforms.perturbations import none as resize_only
from src.data.transforms.pipelines import PAIRS, yields_of
from src.utils.errors import ConfigError

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)
SPLITS = ("train", "val", "test")
UNKNOWN_LABEL = -1  # the label of a predicted video file outside any index
DEFAULT_BATCH_SIZE = 32  # when neither data.batch_size nor the model's batch size is given
# the splits a stage needs, each with both classes (None: every split)
_STAGE_SPLITS = {"fit": SPLITS, "validate": ("val",), "test": ("test",), "predict": ("test",), None: SPLITS}


class TooManyBadVideos(ValueError):
    pass


def _torch_device(name: str) -> str:
    """data.detect_device as a torch device: auto (and gpu, cuda) take the GPU when there is one."""
    return "cuda" if name in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


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


def _creates_root(index: Mapping | None) -> bool:
    """Whether the indexer makes `data.root` itself (it declares `creates_root`: the synthetic set's)."""
    from hydra.utils import get_method

    return index is not None and bool(getattr(get_method(index["_target_"]), "creates_root", False))


def _transform_spec(value, key: str) -> dict | None:
    if value is not None and not (isinstance(value, Mapping) and "_target_" in value):
        raise ConfigError(
            f"{key}={value!r}: must be a transform spec with _target_ (a partial called with size=)"
        )
    return _plain(value)


class DeepfakeDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str = "celebdf",
        root: str | None = None,
        index: Mapping | None = None,
        cache_dir: str = "data/face-cache",
        input_contract: InputContract | Mapping | None = None,
        train_augment: Mapping | None = None,
        test_augment: Mapping | None = None,
        augment_seed: int | None = 0,
        **keys,
    ):
        """A dataset read as face crops cached under `cache_dir`.

        `root` may be None for prediction only (`setup_predict`). Every value is checked here, before any
        video is touched; a bad one is a ConfigError naming its key.

        Args:
            name: the dataset's name in the registry (`src.data.indexes`).
            root: its folder (`data.root`).
            index: the indexer's spec (`data.index`; None: Celeb-DF's); its arguments are `data.*` keys.
            cache_dir: the face-crop cache.
            input_contract: the model's input (size, normalization, frames per clip).
            train_augment: the training transform's spec, a partial called with size=; None: resize only.
            test_augment: the test-time perturbation's spec, likewise.
            augment_seed: makes a video's perturbation the same in every job of a sweep.
            **keys: the flat `data.*` keys of the settings (`src.data.settings`) and the dataset's own.
        """
        super().__init__()
        index = _plain(index)
        if index is not None and not (isinstance(index, Mapping) and "_target_" in index):
            raise ConfigError(f"data.index={index!r}: must be an indexer spec with _target_")
        dataset_keys = [
            k for k in (index or {}) if not k.startswith("_") and k != "root"
        ]  # e.g. FF++'s methods
        settings = settings_from(keys, dataset_keys)
        self.split, self.crops, self.loaders = settings["split"], settings["crops"], settings["loaders"]
        self.input = contract = InputContract.of(_plain(input_contract))
        self.train_augment = _transform_spec(train_augment, "train_augment.transform")
        self.test_augment = _transform_spec(test_augment, "augment.transform")
        if not (augment_seed is None or isinstance(augment_seed, int)):
            raise ConfigError(f"seed={augment_seed!r}: must be an integer or null")
        self.augment_seed = augment_seed
        if contract.kind == "clip" and contract.frames_per_clip > self.crops.frames_per_video:
            raise ConfigError(
                f"model.input.frames_per_clip={contract.frames_per_clip} > data.frames_per_video="
                f"{self.crops.frames_per_video}: a clip cannot have more frames than are cached per video"
            )
        if contract.size > 2 * self.crops.crop_size:
            raise ConfigError(
                f"model.input.size={contract.size} does not fit data.crop_size={self.crops.crop_size}"
            )
        if root not in (None, "") and not _creates_root(index) and not Path(root).expanduser().is_dir():
            raise FileNotFoundError(
                f"{dataset_title(name)} root not found: {Path(root).expanduser()} "
                "(data.root); point data.root at the dataset folder"
            )
        # what a checkpoint stores: plain data only, enough to rebuild the module
        self.save_hyperparameters(
            _plain(
                {
                    "name": name,
                    "root": root,
                    "index": index,
                    "cache_dir": str(cache_dir),
                    "input_contract": asdict(contract),
                    "train_augment": self.train_augment,
                    "test_augment": self.test_augment,
                    "augment_seed": augment_seed,
                    **{k: v for group in settings.values() for k, v in asdict(group).items()},
                }
            ),
            logger=False,
        )
        self.name, self.index_spec, self._indexed = name, index, None
        self.root = None if root in (None, "") else Path(root).expanduser()
        self.cache = FaceCropCache(
            cache_dir, self.crops, root=self.root, device=_torch_device(self.crops.detect_device)
        )
        self.batch_size = self.loaders.batch_size or DEFAULT_BATCH_SIZE
        self.index: VideoIndex | None = None
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
                "scoring video files (predict.py) works without it"
            )
        return self.root

    # -- preparation ----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Index the dataset (its indexer may generate it first) and build the face-crop cache."""
        if self.build_report is not None or self._predict is not None:
            return
        self._build(self.dataset_index())

    def dataset_index(self) -> VideoIndex:
        """The dataset's index, made once (its indexer may generate the set first); no face crop is cached here."""
        if self._indexed is None:
            root, spec = self._require_root(), self.index_spec
            import hydra

            self._indexed = index_celebdf(root) if spec is None else hydra.utils.instantiate(spec)
        return self._indexed

    def _build(self, index: VideoIndex) -> BuildReport:
        report = self.cache.build([index.root / r.path for r in index.records], self.loaders.build_workers)
        if len(report.videos) != len(index.records):  # one report per video, by position
            raise RuntimeError(
                f"the cache reported {len(report.videos)} videos for {len(index.records)} indexed"
            )
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
                log.info(
                    "degraded video %s: %s",
                    video.path,
                    "; ".join(filter(None, [video.reason, video.degraded])),
                )
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
            self._build(self.dataset_index())
        split, index = self.split, self.index
        usable = {path for path, report in self.video_reports.items() if report.ok}
        self.frame_counts = {path: self.video_reports[path].num_frames for path in usable}
        # folds come from every indexed video, so a video that fails to decode moves no other video
        folding = (split.folds, split.fold, split.split_seed, split.identity_split)
        # a test-only index (DFD, UADFV) has no train/val videos to fold
        train, val = ([], []) if index.test_only else split_folds(index.train_val(), *folding)
        if split.train_classes == "real":  # after folding: validation keeps its fakes
            train = [r for r in train if r.label == 0]
        self.indexed_splits = {"train": train, "val": val, "test": index.test()}
        self.splits = {
            name: [r for r in part if r.path in usable] for name, part in self.indexed_splits.items()
        }
        for split, items in self.splits.items():
            fake = sum(r.label for r in items)
            skipped = len(self.indexed_splits[split]) - len(items)
            log.info(
                "%s split: %d videos (%d real, %d fake), %d skipped",
                split,
                len(items),
                len(items) - fake,
                fake,
                skipped,
            )

    def _check_both_classes(self, split: str) -> None:
        """A split without both classes is an error here, not a silent AUC of 0.0 (or nan) later."""
        if split != "test" and self.index.test_only:
            raise ValueError(
                f"{dataset_title(self.name)} ({self.index.root}) is test-only: it has no {split} "
                f"videos; evaluate on it (evaluate.py data={self.name}) or see conf/data/{self.name}.yaml"
            )
        items, settings = self.splits[split], self.split
        real = sum(r.label == 0 for r in items)
        fake = len(items) - real
        if split == "train" and settings.train_classes == "real":
            if yields_of(self.train_transform()) != PAIRS:
                raise ConfigError(
                    "data.train_classes=real trains on real videos only: it needs a training augmentation "
                    "that makes fakes from them (train_augment=sbi)"
                )
            fake = real  # every real item comes with its self-blend
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
            where = (
                f"the {split} split of fold {settings.fold} (data.folds={settings.folds}, "
                f"data.split_seed={settings.split_seed})"
            )
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
        """Counts and per-video problems, for the tracker (`src.data.data_report`)."""
        return data_report(self)

    # -- loaders --------------------------------------------------------------------------------
    def _entries(self, records: list[VideoRecord]) -> list[CacheEntry]:
        return [self.entries[r.path] for r in records]

    def train_dataset(self) -> Dataset:
        records = self.splits["train"]
        transform = self.train_transform()
        if self.input.kind == "frame":
            counts = [self.frame_counts[r.path] for r in records]
            return FrameDataset(
                self._entries(records), records, counts, transform, self.loaders.train_frames_per_video
            )
        return VideoDataset(self._entries(records), records, self.input.frames_per_clip, transform, seed=None)

    def _transform(self, spec: Mapping | None):
        """A transform spec (a partial of the model input size) built for this model; None: resize only."""
        if spec is None:
            return resize_only(self.input.size)
        import hydra

        return hydra.utils.instantiate(spec)(size=self.input.size)

    def train_transform(self):
        """The training augmentation (conf/train_augment/<level>.yaml `transform`); None: resize only."""
        return self._transform(self.train_augment)

    def eval_transform(self, spec: Mapping | None = None):
        """The test-time perturbation `spec` (conf/augment/<level>.yaml `transform`); None: none."""
        return self._transform(spec)

    def _eval_frames(self) -> int:
        return self.crops.frames_per_video if self.input.kind == "frame" else self.input.frames_per_clip

    def eval_dataset(self, split: str, perturbation: Mapping | None = None) -> VideoDataset:
        records = self.splits[split]
        return VideoDataset(
            self._entries(records),
            records,
            self._eval_frames(),
            self.eval_transform(perturbation),
            self.augment_seed,
        )

    def predict_dataset(self) -> VideoDataset:
        """The usable videos given to setup_predict, under the test-time augmentation."""
        if self._predict is None:
            raise RuntimeError("setup_predict(videos) was not called")
        entries, records, ids = self._predict
        if not records:
            reasons = "; ".join(v.reason for v in self.predict_reports[:3])
            raise ValueError(f"none of the {len(self.predict_reports)} video files can be scored: {reasons}")
        transform = self.eval_transform(self.test_augment)
        return VideoDataset(entries, records, self._eval_frames(), transform, self.augment_seed, ids=ids)

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
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.batch_size, train=True)

    def _eval_batch_size(self) -> int:
        # eval items are whole videos: keep about batch_size frames per batch
        batch_size = self.batch_size
        return max(1, batch_size // self.crops.frames_per_video) if self.input.kind == "frame" else batch_size

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"), self._eval_batch_size(), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test", self.test_augment), self._eval_batch_size(), False)

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

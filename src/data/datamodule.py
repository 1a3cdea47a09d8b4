"""CelebDFDataModule: a Celeb-DF folder (real or the embedded synthetic one) as batches of face crops.

Frame mode (MesoNet): training items are single crops. Clip mode (LSTM models): items are
`clip_frames` crops of one video in order. Validation and test items are always whole videos
(every sampled frame, or the clip), so video-level scores come straight out of a batch.
Batches carry uint8 HWC pixels; they are normalized after the transfer to the device, which
moves 4x fewer bytes through worker queues and lands in channels_last layout for free.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from src.data.augment import augment_clip, build_test_transform, build_train_transform
from src.data.cache import BuildReport, CropSettings, FaceCropCache
from src.data.index import CelebDFIndex, VideoRecord, index_celebdf, split_folds

log = logging.getLogger(__name__)


class TooManyBadVideos(ValueError):
    pass


class _CachedVideos(Dataset):
    """Base: opens the cached crops of `records` lazily, once per worker process."""

    def __init__(self, cache: FaceCropCache, root: Path, records: list[VideoRecord]):
        self.cache, self.root, self.records = cache, root, records
        self._crops: dict[int, np.ndarray] = {}

    def crops(self, video_index: int) -> np.ndarray:
        if video_index not in self._crops:
            self._crops[video_index] = self.cache.load(self.root / self.records[video_index].path)[0]
        return self._crops[video_index]

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records])


class FrameDataset(_CachedVideos):
    """Single training crops: (crop (S, S, 3) uint8, label, video index).

    An epoch draws `frames_per_epoch` random cached frames of every video (all of them, in
    order, when None): consecutive frames are near-duplicates, so a few per video and more
    epochs see more variety per second of compute than every frame every epoch.
    """

    def __init__(self, cache, root, records, frame_counts: list[int], transform, frames_per_epoch: int | None):
        super().__init__(cache, root, records)
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
    """Whole videos: (crops (T, S, S, 3) uint8, label, video index), `num_frames` evenly spaced.

    Every frame of a video gets the same augmentation parameters; with `seed` set they depend only
    on (seed, video), so every job of a sweep perturbs a video identically.
    """

    def __init__(self, cache, root, records, num_frames: int, transform, seed: int | None):
        super().__init__(cache, root, records)
        self.num_frames, self.transform, self.seed = num_frames, transform, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, video: int):
        seed = int(torch.randint(2**31 - 1, ())) if self.seed is None else self.seed * 1_000_003 + video
        pixels = self.prepare(self.crops(video), self.num_frames, self.transform, seed)
        return pixels, self.records[video].label, video

    @staticmethod
    def prepare(crops: np.ndarray, num_frames: int, transform, seed: int | None) -> torch.Tensor:
        """`num_frames` evenly spaced crops, augmented alike: (T, S, S, 3) uint8.

        A short video repeats frames so every item has the same length.
        """
        picks = np.linspace(0, len(crops) - 1, num_frames).round().astype(int)
        return torch.from_numpy(augment_clip(transform, np.asarray(crops[picks]), seed))

    def item_labels(self) -> np.ndarray:
        return self.labels()


class CelebDFDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str,
        cache_dir: str,
        name: str = "celebdf",
        synthetic: dict | None = None,
        folds: int = 5,
        fold: int = 0,
        split_seed: int = 0,
        frames_per_video: int = 20,
        train_frames_per_video: int | None = None,
        face_detector: str = "haar",
        yunet_model: str | None = None,
        face_margin: float = 1.3,
        crop_size: int = 256,
        detect_max_side: int = 320,
        build_workers: int = 2,
        num_workers: int = 2,
        batch_size: int = 32,
        balanced_sampling: bool = False,
        max_bad_fraction: float = 0.2,
        input_size: int = 256,
        mean: tuple[float, ...] = (0.0, 0.0, 0.0),
        std: tuple[float, ...] = (1.0, 1.0, 1.0),
        clip_frames: int = 1,
        input_kind: str = "frame",
        train_augment: str = "weak",
        test_augment: str = "none",
        augment_seed: int = 0,
    ):
        super().__init__()
        if input_kind not in ("frame", "clip"):
            raise ValueError(f"model.input.kind={input_kind!r}: must be frame or clip")
        if input_kind == "clip" and clip_frames > frames_per_video:
            raise ValueError(
                f"model.input.frames_per_clip={clip_frames} exceeds data.frames_per_video={frames_per_video}: "
                "a clip cannot have more frames than are cached per video"
            )
        if input_size > 2 * crop_size or input_size < 16:
            raise ValueError(f"model.input.size={input_size} does not fit data.crop_size={crop_size}")
        self.save_hyperparameters(logger=False)
        self.root = Path(root).expanduser()
        self.cache = FaceCropCache(
            Path(cache_dir).expanduser(),
            CropSettings(frames_per_video, face_margin, crop_size, face_detector, detect_max_side, yunet_model),
        )
        self.index: CelebDFIndex | None = None
        self.build_report: BuildReport | None = None
        self.splits: dict[str, list[VideoRecord]] = {}
        self.frame_counts: dict[str, int] = {}
        # the model's normalization, applied to uint8 pixels after the transfer to the device
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255

    # -- preparation ----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic set if needed, index it and build the face-crop cache."""
        if self.build_report is not None:
            return
        if self.hparams.synthetic is not None:
            from src.data.synthetic import generate_synthetic_celebdf

            generate_synthetic_celebdf(self.root, **dict(self.hparams.synthetic))
        index = index_celebdf(self.root)
        self._build(index)

    def _build(self, index: CelebDFIndex) -> BuildReport:
        report = self.cache.build([index.root / r.path for r in index.records], self.hparams.build_workers)
        self.index, self.build_report = index, report
        for video in report.failed:
            log.warning("skipped video %s: %s", video.path, video.reason)
        for video in report.videos:
            if video.ok and (video.degraded or video.reason):
                log.info("degraded video %s: %s", video.path, "; ".join(filter(None, [video.reason, video.degraded])))
        log.info("face-crop cache %s: %s", self.cache.cache_dir, report.summary())
        bad = len(report.failed) / max(len(report.videos), 1)
        if bad > self.hparams.max_bad_fraction:
            raise TooManyBadVideos(
                f"{len(report.failed)} of {len(report.videos)} videos under {self.root} could not be decoded "
                f"({bad:.0%} > data.max_bad_fraction={self.hparams.max_bad_fraction}); first: "
                + "; ".join(f"{v.path}: {v.reason}" for v in report.failed[:3])
            )
        return report

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        report = self.build_report or self._build(index_celebdf(self.root))
        usable = {v.path: v for v in report.videos if v.ok}
        index = self.index
        records = [r for r in index.records if str(index.root / r.path) in usable]
        self.frame_counts = {r.path: usable[str(index.root / r.path)].num_frames for r in records}
        train_val = [r for r in records if not r.is_test]
        train, val = split_folds(train_val, self.hparams.folds, self.hparams.fold, self.hparams.split_seed)
        self.splits = {"train": train, "val": val, "test": [r for r in records if r.is_test]}
        for split, items in self.splits.items():
            fake = sum(r.label for r in items)
            log.info("%s split: %d videos (%d real, %d fake)", split, len(items), len(items) - fake, fake)
        for split in ("train", "val", "test"):
            if not self.splits[split]:
                raise ValueError(f"the {split} split of {self.root} is empty")

    def class_counts(self) -> dict[str, int]:
        return {
            f"{split}_{name}": sum(r.label == label for r in items)
            for split, items in self.splits.items()
            for name, label in (("real", 0), ("fake", 1))
        }

    def data_report(self) -> dict:
        """Counts and per-video problems, for the tracker."""
        report = self.build_report
        return {
            "summary": report.summary(),
            "skipped_videos": [{"path": v.path, "reason": v.reason} for v in report.failed],
            "degraded_videos": [
                {"path": v.path, "reason": "; ".join(filter(None, [v.reason, v.degraded]))}
                for v in report.videos
                if v.ok and (v.reason or v.degraded)
            ],
            "skipped_index_entries": [{"entry": e, "reason": r} for e, r in self.index.skipped],
            "class_counts": self.class_counts(),
        }

    def write_data_report(self, path: Path) -> Path:
        path.write_text(json.dumps(self.data_report(), indent=2))
        return path

    # -- loaders --------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        hp, records = self.hparams, self.splits["train"]
        transform = build_train_transform(hp.train_augment, hp.input_size)
        if hp.input_kind == "frame":
            counts = [self.frame_counts[r.path] for r in records]
            return FrameDataset(self.cache, self.root, records, counts, transform, hp.train_frames_per_video)
        return VideoDataset(self.cache, self.root, records, hp.clip_frames, transform, seed=None)

    def eval_transform(self, level: str = "none"):
        return build_test_transform(level, self.hparams.input_size)

    def eval_dataset(self, split: str, level: str = "none") -> VideoDataset:
        hp = self.hparams
        frames = hp.frames_per_video if hp.input_kind == "frame" else hp.clip_frames
        return VideoDataset(self.cache, self.root, self.splits[split], frames, self.eval_transform(level), hp.augment_seed)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        sampler = None
        if train and self.hparams.balanced_sampling:
            labels = dataset.item_labels()
            weights = 1.0 / np.bincount(labels, minlength=2)[labels]
            sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(labels))
        workers = self.hparams.num_workers
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
        return self._loader(self.train_dataset(), self.hparams.batch_size, train=True)

    def _eval_batch_size(self) -> int:
        # eval items are whole videos: keep about batch_size frames per batch
        hp = self.hparams
        per_item = hp.frames_per_video if hp.input_kind == "frame" else 1
        return max(1, hp.batch_size // per_item) if hp.input_kind == "frame" else hp.batch_size

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"), self._eval_batch_size(), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test", self.hparams.test_augment), self._eval_batch_size(), False)

    def predict_dataloader(self) -> DataLoader:
        """The test list under the test-time augmentation: what evaluate.py scores."""
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 (..., S, S, 3) -> normalized float (..., 3, S, S), channels_last for frame batches."""
        pixels, labels, videos = batch
        x = pixels.movedim(-1, -3).float()
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.reshape(*lead, *x.shape[-3:]), labels.float(), videos

    def __repr__(self) -> str:
        return f"CelebDFDataModule(root={self.root}, cache={self.cache.cache_dir}, {asdict(self.cache.settings)})"

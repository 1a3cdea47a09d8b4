"""The datasets a data module hands to its loaders: cached face crops of indexed videos.

Frame mode (MesoNet): training items are single crops. Clip mode (LSTM models): items are
`frames_per_clip` crops of one video in order. Validation, test and prediction items are always whole
videos (every sampled frame, or the clip), so video-level scores come straight out of a batch. Items carry
uint8 HWC pixels; the data module normalizes them after the transfer to the device.

What a transform declares (`src.data.transforms.pipelines`) decides the path: one that declares a batched
form (`train_augment=weak`, `augment=none`) reads a whole batch in one go (`__getitems__`, which the DataLoader
calls with a batch's indices; `src.data.transforms.batched`): the crops copied from the memory-mapped cache
into one array, flipped and resized on the way, exactly as albumentations would. One that yields pairs
(`train_augment=sbi`, `src.data.transforms.sbi`) turns a real item into its crop and a fake made from it, both
in the batch or one of them; `dataset[i]` always gives one sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.cache import CacheEntry
from src.data.indexes.base import VideoRecord
from src.data.transforms.batched import Collated, empty_batch
from src.data.transforms.pipelines import PAIRS, augment_clip, batch_form_of, stable_seed, yields_of


class _CachedVideos(Dataset):
    """Base: the pinned cache entries of `records`, opened lazily, once per worker process."""

    def __init__(self, entries: list[CacheEntry], records: list[VideoRecord], transform):
        if len(entries) != len(records):
            raise ValueError(f"{len(entries)} cache entries for {len(records)} videos")
        self.entries, self.records, self.transform = entries, records, transform
        self.batched = batch_form_of(transform)  # declared by flips-and-resize pipelines: a batch in one go
        self.pairs = (
            yields_of(transform) == PAIRS
        )  # real/fake samples made from each item, with its landmarks
        self._loaded: dict[int, tuple[np.ndarray, dict]] = {}

    def _load(self, video_index: int) -> tuple[np.ndarray, dict]:
        if video_index not in self._loaded:
            self._loaded[video_index] = self.entries[video_index].load()
        return self._loaded[video_index]

    def crops(self, video_index: int) -> np.ndarray:
        return self._load(video_index)[0]

    def landmarks(self, video_index: int) -> np.ndarray:
        """(N, 5, 2) landmarks in crop pixels, NaN where none (`CacheEntry.load`)."""
        crops, meta = self._load(video_index)
        stored = meta.get("landmarks")
        return np.full((len(crops), 5, 2), np.nan) if stored is None else np.asarray(stored)

    def __getitems__(self, indices: list[int]) -> list | Collated:
        """A batch's samples: under a pairs transform, each real item's crop and the fake made from it; under a
        transform with a batched form, the assembled batch (`src.data.transforms.batched`).

        Args:
            indices: the batch's item positions.
        """
        if self.batched is not None and self.batchable():
            return self.read_batch(indices)
        return [sample for i in indices for sample in self.samples(i, pairs=None)]

    def batchable(self) -> bool:
        return True

    def read_batch(self, indices: list[int]) -> Collated:
        """(pixels (B, ..., S, S, 3) uint8, labels, ids): each item's frames copied from the cache once, flipped
        and resized on the way. One seed per batch from the torch RNG (seeded per worker by Lightning)."""
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, ())))
        picks = [self.pick(i, rng) for i in indices]
        flips = self.batched.draw(len(picks), rng)
        crops = self.crops(picks[0][0])  # an item's shape without reading it: (frames,) of a clip, then H x W
        side = self.batched.output_side(crops.shape[-2])
        batch = empty_batch((len(picks), *np.shape(picks[0][1]), side, side, 3))
        pixels = batch.numpy()
        for k, (video, frame_picks) in enumerate(picks):
            self.batched.apply(self.crops(video)[frame_picks], flips[k], pixels[k])
        labels = torch.tensor([self.records[video].label for video, _ in picks])
        return Collated((batch, labels, torch.tensor([self.item_id(video) for video, _ in picks])))

    def item_id(self, video: int) -> int:
        return video

    def __getitem__(self, i):
        return self.samples(i, pairs=False)[0]

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records])


class FrameDataset(_CachedVideos):
    """Single training crops: (crop (S, S, 3) uint8, label, video index).

    An epoch draws `frames_per_epoch` random cached frames of every video (all of them, in
    order, when None): consecutive frames are near-duplicates, so a few per video and more
    epochs see more variety per second of compute than every frame every epoch.
    """

    def __init__(self, entries, records, frame_counts: list[int], transform, frames_per_epoch: int | None):
        super().__init__(entries, records, transform)
        self.frame_counts = frame_counts
        self.per_video = frames_per_epoch
        if frames_per_epoch is None:
            self.items = [(v, f) for v, n in enumerate(frame_counts) for f in range(n)]
        else:
            self.items = [(v, None) for v in range(len(records)) for _ in range(frames_per_epoch)]

    def __len__(self) -> int:
        return len(self.items)

    def samples(self, i: int, pairs: bool | None) -> list:
        video, frame = self.items[i]
        if frame is None:  # torch RNG: seeded per worker by Lightning, so runs are reproducible
            frame = int(torch.randint(self.frame_counts[video], ()))
        crop = np.asarray(self.crops(video)[frame : frame + 1])
        seed, label = int(torch.randint(2**31 - 1, ())), self.records[video].label
        if self.pairs:
            return self.transform.samples(crop[0], self.landmarks(video)[frame], label, video, seed, pairs)
        pixels = augment_clip(self.transform, crop, seed)[0]
        return [(torch.from_numpy(pixels), label, video)]

    def pick(self, i: int, rng: np.random.Generator) -> tuple[int, int]:
        video, frame = self.items[i]
        return video, int(rng.integers(self.frame_counts[video])) if frame is None else frame

    def item_labels(self) -> np.ndarray:
        return np.array([self.records[v].label for v, _ in self.items])


class VideoDataset(_CachedVideos):
    """Whole videos: (crops (T, S, S, 3) uint8, label, id), `num_frames` evenly spaced; the id is the
    video's position in `records` unless `ids` are given.

    Every frame of a video gets the same augmentation parameters; with `seed` set they depend only
    on (seed, the video's path relative to the dataset root), so every job of a sweep perturbs a video
    identically, whatever other videos are in the list (a video that fails to decode changes nothing).
    """

    def __init__(
        self, entries, records, num_frames: int, transform, seed: int | None, ids: list[int] | None = None
    ):
        super().__init__(entries, records, transform)
        self.num_frames, self.seed = num_frames, seed
        self.ids = list(range(len(records))) if ids is None else list(ids)

    def __len__(self) -> int:
        return len(self.records)

    def batchable(self) -> bool:
        # random flips would be drawn per batch, not per video: only a deterministic pipeline when seeded
        return self.seed is None or self.batched.deterministic

    def pick(self, i: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        return i, self.frame_picks(len(self.crops(i)), self.num_frames)

    def item_id(self, video: int) -> int:
        return self.ids[video]

    def video_seed(self, video: int) -> int | None:
        return None if self.seed is None else stable_seed(self.seed, self.records[video].path)

    def samples(self, video: int, pairs: bool | None) -> list:
        seed = self.video_seed(video)
        seed = int(torch.randint(2**31 - 1, ())) if seed is None else seed
        label, item = self.records[video].label, self.ids[video]
        if self.pairs:  # training clips: one blend draw per clip
            picks = self.frame_picks(len(self.crops(video)), self.num_frames)
            crops, landmarks = np.asarray(self.crops(video)[picks]), self.landmarks(video)[picks]
            return self.transform.samples(crops, landmarks, label, item, seed, pairs)
        return [(self.prepare(self.crops(video), self.num_frames, self.transform, seed), label, item)]

    @staticmethod
    def frame_picks(frames: int, num_frames: int) -> np.ndarray:
        """`num_frames` evenly spaced frame positions out of `frames` (repeated where there are fewer)."""
        return np.linspace(0, frames - 1, num_frames).round().astype(int)

    @staticmethod
    def prepare(crops: np.ndarray, num_frames: int, transform, seed: int | None) -> torch.Tensor:
        """`num_frames` evenly spaced crops, augmented alike: (T, S, S, 3) uint8.

        A short video repeats frames so every item has the same length.
        """
        picks = VideoDataset.frame_picks(len(crops), num_frames)
        return torch.from_numpy(augment_clip(transform, np.asarray(crops[picks]), seed))

    def item_labels(self) -> np.ndarray:
        return self.labels()

"""Training data loading: the framework's cached crops (`FrameDataset` through `DeepfakeDataModule`'s
DataLoader) against per-frame JPEG files (what reference implementations write) read back with PIL,
with the same augmentation and resize, through an otherwise identical DataLoader."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Measurement, Plan, compose, fresh_dir, median, ratio, release, rnd
from benchmarks.naive import write_jpegs
from src.data.augment import augment_clip
from src.experiments.wiring import build_datamodule


class JpegFrameDataset(Dataset):
    """`FrameDataset` over per-frame JPEG files: (crop (S, S, 3) uint8, label, video index)."""

    def __init__(
        self,
        folders: list[Path],
        labels: list[int],
        frame_counts: list[int],
        transform,
        frames_per_epoch: int | None,
    ):
        from PIL import Image  # noqa: F401 - fail at construction if Pillow is missing

        self.folders, self.labels_, self.frame_counts = folders, labels, frame_counts
        self.transform = transform
        if frames_per_epoch is None:
            self.items = [(v, f) for v, n in enumerate(frame_counts) for f in range(n)]
        else:
            self.items = [(v, None) for v in range(len(folders)) for _ in range(frames_per_epoch)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        video, frame = self.items[i]
        if frame is None:
            frame = int(torch.randint(self.frame_counts[video], ()))
        with Image.open(self.folders[video] / f"{frame:04d}.jpg") as image:
            crop = np.asarray(image.convert("RGB"))
        pixels = augment_clip(self.transform, crop[None], int(torch.randint(2**31 - 1, ())))[0]
        return torch.from_numpy(pixels), self.labels_[video], video


def jpeg_twin(dm, folder: Path, frames_per_epoch: int | None) -> JpegFrameDataset:
    """The training split of `dm` as one JPEG per cached crop, read like `FrameDataset` reads the cache."""
    records = dm.splits["train"]
    folders = []
    for record in records:
        crops, _ = dm.cache.load(dm.root / record.path)
        target = folder / Path(record.path).with_suffix("")
        write_jpegs(target, np.asarray(crops))
        folders.append(target)
    counts = [dm.frame_counts[r.path] for r in records]
    transform = dm.train_transform()
    return JpegFrameDataset(folders, [r.label for r in records], counts, transform, frames_per_epoch)


def same_loader(dm, dataset) -> DataLoader:
    """A DataLoader with the settings of `dm.train_dataloader()` (DeepfakeDataModule._loader, train=True)."""
    workers = dm.loaders.num_workers
    return DataLoader(
        dataset,
        batch_size=dm.batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def _epoch(loader, passes: int = 1) -> tuple[int, float]:
    """(samples, seconds) of `passes` full passes over a loader."""
    start, samples = time.perf_counter(), 0
    for _ in range(passes):
        for pixels, _, _ in loader:
            samples += len(pixels)
    return samples, time.perf_counter() - start


def _in_process(dataset, count: int) -> float:
    """Seconds per sample of `dataset[i]` in this process (no workers, no collation)."""
    torch.manual_seed(0)
    start = time.perf_counter()
    for i in range(count):
        dataset[i % len(dataset)]
    return (time.perf_counter() - start) / count


def _decode_jpeg(folder: Path, frame: int) -> np.ndarray:
    from PIL import Image

    with Image.open(folder / f"{frame:04d}.jpg") as image:
        return np.asarray(image.convert("RGB"))


def _read_only(read, dataset, count: int = 200) -> float:
    """Seconds per sample of reading the pixels alone (no augmentation)."""
    start = time.perf_counter()
    for i in range(count):
        video = i % len(dataset.records)
        read(video, i % dataset.frame_counts[video])
    return (time.perf_counter() - start) / count


def _augment_costs(dataset, count: int = 200) -> dict[str, float]:
    """Seconds per sample of the training augmentation and of cheaper equivalents, on a cached crop."""
    import albumentations as A

    crop = np.asarray(dataset.crops(0)[0:1])
    flip_only = A.Compose([A.HorizontalFlip(p=0.5)])
    candidates = {
        "augment: train transform via augment_clip": lambda i: augment_clip(dataset.transform, crop, i),
        "augment: flip only via augment_clip": lambda i: augment_clip(flip_only, crop, i),
        "augment: cv2.flip": lambda i: cv2.flip(crop[0], 1) if i % 2 else crop[0].copy(),
    }
    costs = {}
    for name, fn in candidates.items():
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        costs[name] = (time.perf_counter() - start) / count
    return costs


def bench_loading(plan: Plan, work: Path, overrides: list[str]) -> list[Measurement]:
    cfg = compose(
        [*overrides, "model=mesonet", f"data.train_frames_per_video={plan.loader_frames_per_video}"]
    )
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    cached = dm.train_dataset()
    jpeg = jpeg_twin(dm, fresh_dir(work / "scratch" / "jpeg"), plan.loader_frames_per_video)
    assert len(cached) == len(jpeg), "the two datasets must have the same items"

    per_sample = {"cache": [], "jpeg": [], "cache read only": [], "jpeg decode only": []}
    for _ in range(3):
        for name, dataset in (("cache", cached), ("jpeg", jpeg)):
            per_sample[name].append(_in_process(dataset, 200))
        per_sample["cache read only"].append(
            _read_only(lambda v, f: np.asarray(cached.crops(v)[f : f + 1]), cached)
        )
        per_sample["jpeg decode only"].append(
            _read_only(lambda v, f: _decode_jpeg(jpeg.folders[v], f), cached)
        )
        for name, seconds in _augment_costs(cached).items():
            per_sample.setdefault(name, []).append(seconds)

    loaders = {"cache": dm.train_dataloader(), "jpeg": same_loader(dm, jpeg)}
    startup = {name: _epoch(loader)[1] for name, loader in loaders.items()}  # first pass: worker start-up
    repeat = -(-plan.loader_samples // len(cached))  # passes per timing
    passes = {"cache": [], "jpeg": []}
    for r in range(plan.loader_rounds):
        for name in ("cache", "jpeg") if r % 2 == 0 else ("jpeg", "cache"):
            passes[name].append(_epoch(loaders[name], repeat))
    del loaders
    release()

    rate = {name: sum(s for s, _ in runs) / sum(t for _, t in runs) for name, runs in passes.items()}
    round_ratios = [
        (c[0] / c[1]) / (j[0] / j[1]) for c, j in zip(passes["cache"], passes["jpeg"], strict=True)
    ]
    in_process = {name: median(v) for name, v in per_sample.items()}
    hp = dm.loaders
    notes = (
        f"{len(cached)} samples/pass ({len(dm.splits['train'])} train videos x "
        f"{plan.loader_frames_per_video} random frames), {repeat} passes per timing, batch {dm.batch_size}, "
        f"num_workers={hp.num_workers}, persistent workers, "
        f"{cfg.train_augment.level} train augmentation, resize {dm.crops.crop_size}->{dm.input.size}; "
        f"{plan.loader_rounds} interleaved passes each; per-round ratios {[rnd(x, 2) for x in round_ratios]}; "
        f"in one process: cache {in_process['cache'] * 1e3:.2f} ms/sample "
        f"(read {in_process['cache read only'] * 1e3:.3f}), JPEG {in_process['jpeg'] * 1e3:.2f} ms/sample "
        f"(decode {in_process['jpeg decode only'] * 1e3:.2f}), {in_process['jpeg'] / in_process['cache']:.2f}x"
    )
    details = {
        "passes": {k: [[s, rnd(t, 4)] for s, t in v] for k, v in passes.items()},
        "first_pass_seconds_with_worker_startup": {k: rnd(v, 3) for k, v in startup.items()},
        "in_process_ms_per_sample": {k: rnd(v * 1e3, 4) for k, v in in_process.items()},
    }
    return [
        Measurement(
            "training data loading: cache vs per-frame JPEG",
            rnd(rate["cache"], 1),
            "samples/s",
            rnd(rate["jpeg"], 1),
            rnd(ratio(rate["cache"], rate["jpeg"])),
            ">= 5x",
            ratio(rate["cache"], rate["jpeg"]) >= 5,
            notes,
            "2 data loading",
            details,
        )
    ]

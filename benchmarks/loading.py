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

from benchmarks.common import Measurement, Plan, compose, fresh_dir, median, release, rnd
from benchmarks.naive import write_jpegs
from src.data.transforms.batched import Collated, collate, empty_batch
from src.data.transforms.pipelines import augment_clip
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
        collate_fn=collate,
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


class EmptyBatches(Dataset):
    """Batches of the right shape that cost nothing to make: what the DataLoader's worker transport alone
    delivers (a fresh shared-memory tensor per batch, passed to the main process)."""

    def __init__(self, items: int, side: int):
        self.items, self.side = items, side

    def __len__(self) -> int:
        return self.items

    def __getitems__(self, indices):
        pixels = empty_batch((len(indices), self.side, self.side, 3))
        return Collated((pixels, torch.zeros(len(indices)), torch.zeros(len(indices))))


def _rates(loaders: dict, passes_per_timing: int, rounds: int) -> tuple[dict, dict, list]:
    """samples/s of each loader over `rounds` interleaved timings (order reversed every other round), its
    first pass (worker start-up) untimed; also the raw passes and the per-round ratios of the first two."""
    startup = {name: _epoch(loader)[1] for name, loader in loaders.items()}
    passes = {name: [] for name in loaders}
    names = list(loaders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            passes[name].append(_epoch(loaders[name], passes_per_timing))
    rate = {name: sum(s for s, _ in runs) / sum(t for _, t in runs) for name, runs in passes.items()}
    a, b = names[:2]
    round_ratios = [(x[0] / x[1]) / (y[0] / y[1]) for x, y in zip(passes[a], passes[b], strict=True)]
    return rate, {"passes": passes, "startup": startup}, round_ratios


def bench_loading(plan: Plan, work: Path, overrides: list[str]) -> list[Measurement]:
    base = [*overrides, "model=mesonet", f"data.train_frames_per_video={plan.loader_frames_per_video}"]
    dm = build_datamodule(compose(base))
    dm.prepare_data()
    dm.setup("fit")
    cached = dm.train_dataset()
    jpeg = jpeg_twin(dm, fresh_dir(work / "scratch" / "jpeg"), plan.loader_frames_per_video)
    assert len(cached) == len(jpeg), "the two datasets must have the same items"
    in_main = build_datamodule(
        compose([*base, "data.num_workers=0"])
    )  # the same data, read in the main process
    in_main.setup("fit")

    per_sample = {"cache": [], "jpeg": [], "cache read only": [], "jpeg decode only": []}
    batch = list(range(min(dm.batch_size, len(cached))))
    for _ in range(3):
        for name, dataset in (("cache", cached), ("jpeg", jpeg)):
            per_sample[name].append(_in_process(dataset, 200))
        start = time.perf_counter()
        for _ in range(10):
            cached.read_batch(batch)
        per_sample.setdefault("cache batch read", []).append(
            (time.perf_counter() - start) / (10 * len(batch))
        )
        per_sample["cache read only"].append(
            _read_only(lambda v, f: np.asarray(cached.crops(v)[f : f + 1]), cached)
        )
        per_sample["jpeg decode only"].append(
            _read_only(lambda v, f: _decode_jpeg(jpeg.folders[v], f), cached)
        )
        for name, seconds in _augment_costs(cached).items():
            per_sample.setdefault(name, []).append(seconds)

    repeat = -(-plan.loader_samples // len(cached))  # passes per timing
    workers = dm.loaders.num_workers
    side = cached.batched.output_side(dm.crops.crop_size) if cached.batched else dm.input.size
    with_workers = {
        "cache": dm.train_dataloader(),
        "jpeg": same_loader(dm, jpeg),
        "transport": same_loader(dm, EmptyBatches(len(cached), side)),
    }
    rate, raw, round_ratios = _rates(with_workers, repeat, plan.loader_rounds)
    del with_workers
    main_rate, main_raw, main_ratios = _rates(
        {"cache": in_main.train_dataloader(), "jpeg": same_loader(in_main, jpeg)}, repeat, plan.loader_rounds
    )
    release()

    in_process = {name: median(v) for name, v in per_sample.items()}
    hp = dm.loaders
    ceiling = rate["transport"] / rate["jpeg"]
    limit = (
        f", so with {workers} workers on this machine no storage can reach 5x: the ceiling is the DataLoader's "
        "shared-memory hand-over of each batch, not the cache"
        if ceiling < 5
        else ""
    )
    common = (
        f"{len(cached)} samples/pass ({len(dm.splits['train'])} train videos x "
        f"{plan.loader_frames_per_video} random frames), {repeat} passes per timing, batch {dm.batch_size}, "
        f"{cfg_level(dm)} train augmentation, resize {dm.crops.crop_size}->{dm.input.size}; "
        f"the baseline augments each sample with albumentations as reference pipelines do, the cache reads a "
        f"batch in one go (`src.data.transforms.batched`); {plan.loader_rounds} interleaved timings each"
    )
    notes = (
        f"{common}; num_workers={hp.num_workers}, persistent workers; per-round ratios "
        f"{[rnd(x, 2) for x in round_ratios]}; the worker transport alone (empty batches of the same shape "
        f"through the same DataLoader) delivers {rate['transport']:.0f} samples/s = {ceiling:.2f}x the JPEG "
        f"loader{limit}; in one process: cache "
        f"{in_process['cache batch read'] * 1e3:.3f} ms/sample in a batch read (per sample "
        f"{in_process['cache'] * 1e3:.2f}, read {in_process['cache read only'] * 1e3:.3f}), JPEG "
        f"{in_process['jpeg'] * 1e3:.2f} ms/sample (decode {in_process['jpeg decode only'] * 1e3:.2f})"
    )
    main_notes = (
        f"{common}; data.num_workers=0 on both sides (the reading runs in the training process: the choice on "
        f"a CPU with few cores); per-round ratios {[rnd(x, 2) for x in main_ratios]}"
    )

    def _raw(measured: dict) -> dict:
        return {
            "passes": {k: [[s, rnd(t, 4)] for s, t in v] for k, v in measured["passes"].items()},
            "first_pass_seconds_with_worker_startup": {k: rnd(v, 3) for k, v in measured["startup"].items()},
        }

    details = {**_raw(raw), "in_process_ms_per_sample": {k: rnd(v * 1e3, 4) for k, v in in_process.items()}}
    return [
        Measurement.at_least(
            f"training data loading: cache vs per-frame JPEG, {workers} workers",
            rate["cache"],
            rate["jpeg"],
            "samples/s",
            5,
            notes,
            "2 data loading",
            details,
            digits=1,
        ),
        Measurement.at_least(
            "training data loading: cache vs per-frame JPEG, in the training process (num_workers=0)",
            main_rate["cache"],
            main_rate["jpeg"],
            "samples/s",
            5,
            main_notes,
            "2 data loading",
            _raw(main_raw),
            digits=1,
        ),
    ]


def cfg_level(dm) -> str:
    spec = dm.train_augment or {}
    return str(spec.get("_target_", "resize only")).rsplit(".", 1)[-1]

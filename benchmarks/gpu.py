"""The GPU path, measured in one short run: `python -m benchmarks.run --only gpu` (results.json: `gpu`).

On a machine with CUDA it measures, with the framework's own data module, model and Trainer:

1. training throughput (images/s) and the data-wait share of a step for MesoInception4 at batch 256 and for
   EfficientNet-B1+LSTM with its default loader (trainer=gpu: 16-bit autocast, one GPU; data.num_workers =
   the machine's cores, at most 16), with the GPU utilization sampled by nvidia-smi while they train;
2. the face-crop cache build with MTCNN on the GPU against the same build on the CPU, in videos/s.

Without CUDA the section says "not measured" and claims nothing. `measure(..., device="cpu")` runs the same
code on the CPU with small sizes; the tests use it to keep this script working between GPU sessions.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path

import torch

GOAL_DATA_WAIT = 0.10  # issue 25: data wait under 10 % of a step on one GPU with 16 CPU cores


class UtilizationSampler:
    """GPU utilization (%) sampled every `interval` s by nvidia-smi while the block runs (empty without it)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        smi = shutil.which("nvidia-smi")
        while smi and not self._stop.wait(self.interval):
            query = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (subprocess.SubprocessError, ValueError, IndexError):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_utilization_mean_pct": None, "gpu_utilization_samples": 0}
        return {
            "gpu_utilization_mean_pct": round(sum(self.samples) / len(self.samples), 1),
            "gpu_utilization_samples": len(self.samples),
        }


def not_measured(reason: str) -> dict:
    return {"status": "not measured", "reason": reason, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _training(overrides: list[str], model: str, extra: list[str], steps: int, device: str) -> dict:
    from benchmarks.common import rnd
    from benchmarks.training import configure, lightning_run, prepared_datamodule

    trainer = ["trainer=gpu"] if device == "cuda" else ["trainer.precision=bf16-mixed"]
    cfg = configure(overrides, model, (*trainer, *extra))
    dm = prepared_datamodule(cfg)
    with UtilizationSampler() as sampler:
        result, _, _ = lightning_run(cfg, dm, steps, store=None)
    return {
        "model": model,
        "batch_size": dm.batch_size,
        "num_workers": cfg.data.num_workers,
        "precision": str(cfg.trainer.precision),
        "steps": result["steps"],
        "images_per_s": rnd(result["samples_per_s"] * _frames_per_sample(cfg), 4),
        "samples_per_s": rnd(result["samples_per_s"], 4),
        "data_wait_share": rnd(result["data_wait_s"] / result["window_s"], 4),
        "seconds_per_step": rnd(result["seconds_per_step"], 4),
        "goal_data_wait_met": result["data_wait_s"] / result["window_s"] < GOAL_DATA_WAIT,
        **sampler.summary(),
    }


def _frames_per_sample(cfg) -> int:
    """A clip model's sample is a clip of frames_per_clip images; a frame model's is one image."""
    return int(cfg.model.input.frames_per_clip) if cfg.model.input.kind == "clip" else 1


def _cache_build(root: Path, work: Path, cfg, videos: int, device: str) -> dict:
    """Videos/s of the cache build with MTCNN on `device` against MTCNN on the CPU (same videos, fresh
    cache folders, one build worker each so the comparison is of the detector's device)."""
    from dataclasses import replace

    from benchmarks.cache_bench import all_videos, crop_settings, spread
    from benchmarks.common import fresh_dir, rnd
    from src.data.cache import FaceCropCache

    chosen = spread(all_videos(root), videos)
    base = replace(crop_settings(cfg), face_detector="mtcnn")
    rates = {}
    for name in dict.fromkeys([device, "cpu"]):
        folder = fresh_dir(work / "scratch" / f"gpu-build-{name}")
        cache = FaceCropCache(folder, base, root=root, device=name)
        start = time.perf_counter()
        report = cache.build(chosen, 1)
        rates[name] = len(chosen) / (time.perf_counter() - start)
        if report.failed:
            raise RuntimeError(f"cache build on {name}: {len(report.failed)} of {len(chosen)} videos failed")
    return {
        "videos": len(chosen),
        f"{device}_videos_per_s": rnd(rates[device], 4),
        "cpu_videos_per_s": rnd(rates["cpu"], 4),
        "speedup": rnd(rates[device] / rates["cpu"], 4),
    }


def measure(root: Path, work: Path, overrides: list[str], device: str = "cuda", small: bool = False) -> dict:
    """The gpu section: device, the two training rows, the cache-build row and the goal's verdict."""
    from benchmarks.common import compose

    workers = min(os.cpu_count() or 1, 16)
    steps = 3 if small else 40
    meso_batch = 8 if small else 256
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    section = {
        "status": "measured" if device == "cuda" else "cpu dry run (not a GPU measurement)",
        "device": name,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    loader = [f"data.num_workers={0 if small else workers}"]
    section["mesonet_batch256"] = _training(
        overrides, "mesonet", [*loader, f"data.batch_size={meso_batch}"], steps, device
    )
    lstm_extra = loader + (["data.batch_size=1", "model.input.frames_per_clip=2"] if small else [])
    section["efficientnet_lstm_default"] = _training(
        overrides, "efficientnet_lstm", lstm_extra, max(2, steps // 4), device
    )
    section["cache_build_mtcnn"] = _cache_build(root, work, compose(overrides), 2 if small else 24, device)
    section["goal"] = (
        f"data wait < {GOAL_DATA_WAIT:.0%} of a step on one GPU with 16 CPU cores: "
        + ", ".join(
            f"{row['model']} {row['data_wait_share']:.1%}"
            for row in (section["mesonet_batch256"], section["efficientnet_lstm_default"])
        )
    )
    return section


def bench_gpu(root: Path, work: Path, overrides: list[str]) -> dict:
    if not torch.cuda.is_available():
        return not_measured(f"no CUDA device on this machine ({platform.node()}, {os.cpu_count()} CPUs)")
    return measure(root, work, overrides, "cuda")

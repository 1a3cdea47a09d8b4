"""How cache build and training time grow with the number of videos (synthetic sets of growing size)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.cache_bench import all_videos, crop_settings
from benchmarks.common import (
    Measurement,
    Plan,
    cpu_seconds,
    data_overrides,
    fresh_dir,
    linear_fit,
    make_dataset,
    ratio,
    rnd,
)
from benchmarks.training import configure, lightning_run, prepared_datamodule
from src.data.cache import FaceCropCache

LINEAR = (0.75, 1.33)


def _slope(sizes, seconds, i: int, j: int) -> float | None:
    return (seconds[j] - seconds[i]) / (sizes[j] - sizes[i]) if sizes[j] != sizes[i] else None


def _row(name: str, sizes: list[int], seconds: list[float], what: str) -> Measurement:
    """Time per video at the largest size against the smallest: 1.0 when growth is linear through 0."""
    a, b, r2 = linear_fit(sizes, seconds)
    per_video = [s / n for s, n in zip(seconds, sizes, strict=True)]
    marginal = [_slope(sizes, seconds, i, i + 1) for i in range(len(sizes) - 1)]
    r = ratio(per_video[-1], per_video[0])
    return Measurement(
        name,
        rnd(per_video[-1], 4),
        f"s/video at {sizes[-1]}",
        rnd(per_video[0], 4),
        rnd(r),
        f"{LINEAR[0]}-{LINEAR[1]}x (linear)",
        r is not None and LINEAR[0] <= r <= LINEAR[1],
        f"{what}; {'train ' if 'train' in name else ''}videos {sizes}: {[rnd(s, 1) for s in seconds]} s, per video "
        f"{[rnd(p, 3) for p in per_video]} s, marginal {[rnd(m, 3) for m in marginal]} s/video; "
        f"fit t = {a:.2f} s + {b:.4f} s x videos, R^2 = {r2:.3f}",
        "7 scaling",
        {
            "videos": sizes,
            "seconds": [rnd(s, 3) for s in seconds],
            "intercept_s": rnd(a),
            "slope_s": rnd(b, 5),
            "r2": rnd(r2, 4),
        },
    )


def bench_scaling(plan: Plan, work: Path, cfg) -> list[Measurement]:
    settings = crop_settings(cfg)
    sizes, build_s, train_s, train_videos, build_cpu, train_cpu = [], [], [], [], [], []
    for params in plan.scaling:
        root = make_dataset(work, params)
        videos = all_videos(root)
        cache_dir = fresh_dir(work / "scratch" / "scaling-cache")
        start, cpu = time.perf_counter(), cpu_seconds()
        FaceCropCache(cache_dir, settings, root=root).build(videos, workers=1, progress=False)
        build_s.append(time.perf_counter() - start)
        build_cpu.append(cpu_seconds() - cpu)
        sizes.append(len(videos))

        run_cfg = configure(
            data_overrides(root, cache_dir, params, folds=2),
            "mesonet",
            (f"data.train_frames_per_video={plan.scaling_train_frames}",),
        )
        dm = prepared_datamodule(run_cfg)
        _, timer, _ = lightning_run(run_cfg, dm, 0, None, epochs=3)
        # epochs 2 and 3 (persistent DataLoader workers already started); the faster one, as other jobs'
        # bursts only ever slow an epoch down
        train_s.append(min(timer.epoch_seconds[1:]))
        train_cpu.append(min(timer.epoch_cpu_seconds[1:]))
        train_videos.append(len(dm.splits["train"]))
    train_note = (
        f"MesoInception4 under Lightning, the faster of epochs 2 and 3 (persistent workers), "
        f"data.train_frames_per_video={plan.scaling_train_frames}, datasets of {sizes} videos"
    )
    cpu_note = "CPU time of this process (a second view, less disturbed by other jobs than wall time)"
    return [
        _row(
            "scaling: cache build time per video",
            sizes,
            build_s,
            "FaceCropCache.build, 1 worker, fresh cache",
        ),
        _row(
            "scaling: cache build CPU time per video",
            sizes,
            build_cpu,
            "the same builds; CPU time of this process and its reaped build worker (less disturbed by other "
            "jobs than wall time)",
        ),
        _row("scaling: training epoch time per train video", train_videos, train_s, train_note),
        _row(
            "scaling: training epoch CPU time per train video",
            train_videos,
            train_cpu,
            f"{train_note}; {cpu_note}, DataLoader workers excluded",
        ),
    ]

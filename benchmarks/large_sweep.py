"""An evaluation sweep at a real test-list size: `evaluate.py -m augment=none,flip,heavy,none,flip,heavy` on a
synthetic set whose test list holds as many videos as Celeb-DF v2's (518), against the work its jobs cannot
avoid: each job's test-time perturbation of its videos, the input normalisation and the forward passes over
the perturbed test videos and the unperturbed validation videos (which pick the decision threshold), all
measured in this process without a loader, Lightning or MLflow.

What a sweep can share is shared: the jobs run in one process (the basic launcher), so imports are paid
once, and the crops are read from the memory-mapped cache, whose pages the first job brings into memory for
all the others."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from benchmarks.common import (
    Measurement,
    compose,
    data_overrides,
    dataset_name,
    fresh_dir,
    make_dataset,
    median,
    ratio,
    release,
    rnd,
)
from benchmarks.evaluation import _collate, _import_seconds
from src.experiments.config import PROJECT_ROOT
from src.experiments.wiring import build_datamodule

LEVELS = ("none", "flip", "heavy")
TARGET = 1.3


def _scored_seconds(dm, module, dataset) -> tuple[float, float, int]:
    """(perturbation and normalisation seconds, forward seconds, frames) of one pass over `dataset`, in
    batches of the data module's eval batch size, as a job scores them (fp32, inference mode)."""
    size = dm._eval_batch_size()
    prepare = forward = 0.0
    frames = 0
    for first in range(0, len(dataset), size):
        start = time.perf_counter()
        items = [dataset[i] for i in range(first, min(first + size, len(dataset)))]
        x, _, _ = dm.on_after_batch_transfer(_collate(items), 0)
        middle = time.perf_counter()
        with torch.inference_mode():
            module.video_scores(x)
        forward += time.perf_counter() - middle
        prepare += middle - start
        frames += x.shape[0] * x.shape[1]
    return prepare, forward, frames


def job_work(overrides: list[str], level: str) -> dict:
    """The unavoidable work of one job of the sweep at `level`, in seconds."""
    cfg = compose([*overrides, "weights=scratch", f"augment={level}"], "evaluate")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    torch.manual_seed(0)
    module = instantiate(cfg.model).eval()
    with torch.inference_mode():  # oneDNN builds its primitives on the first call: not part of the work
        module.video_scores(dm.on_after_batch_transfer(_collate([dm.eval_dataset("val")[0]]), 0)[0])
    test = _scored_seconds(dm, module, dm.eval_dataset("test", dm.test_augment))
    val = _scored_seconds(dm, module, dm.eval_dataset("val"))
    result = {
        "perturb_s": test[0] + val[0],
        "forward_s": test[1] + val[1],
        "test_videos": len(dm.splits["test"]),
        "val_videos": len(dm.splits["val"]),
        "frames": test[2] + val[2],
    }
    del dm, module
    release()
    return result


def bench_large_sweep(work: Path, params: dict, folds: int, frames_per_video: int) -> list[Measurement]:
    root = make_dataset(work, params)
    overrides = [
        *data_overrides(root, work / "cache" / dataset_name(params), params, folds),
        f"data.frames_per_video={frames_per_video}",
    ]
    build_start = time.perf_counter()
    dm = build_datamodule(compose([*overrides, "weights=scratch"], "evaluate"))
    dm.prepare_data()  # the cache, built once, as train.py would have built it
    build_s = time.perf_counter() - build_start
    del dm

    scratch = fresh_dir(work / "scratch" / "large-sweep")
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    command = [
        sys.executable,
        "evaluate.py",
        "-m",
        f"augment={','.join(LEVELS * 2)}",
        "weights=scratch",
        *overrides,
        f"hydra.sweep.dir={scratch / 'multirun'}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    sweep_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"evaluate sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    from src.experiments.tracking import client, experiment_id

    store = client(uri)
    runs = sorted(store.search_runs([experiment_id(store, uri, "evaluate")]), key=lambda r: r.info.start_time)
    durations = [(r.info.end_time - r.info.start_time) / 1e3 for r in runs]

    work_by_level = {level: job_work(overrides, level) for level in LEVELS}
    per_job = {level: w["perturb_s"] + w["forward_s"] for level, w in work_by_level.items()}
    baseline = 2 * sum(per_job.values())  # each level twice, as the sweep runs it
    imports = _import_seconds()
    first = work_by_level["none"]
    r = ratio(sweep_s, baseline)
    notes = (
        f"{first['test_videos']} test videos and {first['val_videos']} validation videos x {frames_per_video} "
        f"frames ({first['frames']} frames per job), MesoInception4 weights=scratch, fp32, augment="
        f"{','.join(LEVELS * 2)}, basic launcher (one process), default loader settings; the jobs' own work per "
        "level (perturbation + normalisation / forward passes): "
        + ", ".join(
            f"{level} {w['perturb_s']:.1f} / {w['forward_s']:.1f} s" for level, w in work_by_level.items()
        )
        + f"; the jobs' MLflow runs took {', '.join(f'{d:.1f}' for d in durations)} s; outside them "
        f"{sweep_s - sum(durations):.1f} s (imports alone {imports:.1f} s); the cache build before the sweep "
        f"{build_s:.0f} s, not counted"
    )
    return [
        Measurement(
            f"evaluation sweep at a real size: 6 jobs x {first['test_videos']} test videos vs their own work",
            rnd(sweep_s, 1),
            "s",
            rnd(baseline, 1),
            rnd(r),
            f"<= {TARGET}x",
            r <= TARGET,
            notes,
            "6 evaluation grid",
            {
                "run_durations_s": [rnd(d, 2) for d in durations],
                "median_run_s": rnd(median(durations), 2),
                "work_by_level_s": {
                    k: {n: rnd(v, 3) for n, v in w.items()} for k, w in work_by_level.items()
                },
                "imports_s": rnd(imports, 2),
                "cache_build_s_not_counted": rnd(build_s, 1),
            },
        )
    ]

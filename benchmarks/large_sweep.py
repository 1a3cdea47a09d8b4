"""An evaluation sweep at a real test-list size: `evaluate.py -m augment=none,flip,heavy,none,flip,heavy` on a
synthetic set whose test list holds as many videos as Celeb-DF v2's (518), against the work its jobs cannot
avoid: reading and perturbing the crops, normalising them, and the forward passes over the perturbed test videos
and the unperturbed validation videos (which pick the decision threshold).

That work is timed inside the sweep's own jobs, by a Lightning profiler passed as `trainer.profiler`
(`WorkProfiler`: the prediction loop's batch fetch, the transfer with its normalisation, and the predict step),
so it is measured at the same moments as the sweep's wall time: this shared machine's speed moves by up to 2x
from one minute to the next (two identical in-process passes took 52.7 s and 26.0 s), which would swamp a
baseline timed separately. The jobs read in the training process (`data.num_workers=0`, the faster choice on
2 cores), so the fetch time is the reading and the perturbation themselves.

What a sweep can share is shared: the jobs run in one process (the basic launcher), so imports are paid
once, and the crops are read from the memory-mapped cache, whose pages the first job brings into memory for
all the others."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lightning.pytorch.profilers import SimpleProfiler

from benchmarks.common import (
    Measurement,
    compose,
    data_overrides,
    dataset_name,
    fresh_dir,
    make_dataset,
    median,
    ratio,
    rnd,
)
from benchmarks.evaluation import import_seconds, run_sweep
from src.experiments.wiring import build_datamodule

LEVELS = ("none", "flip", "heavy")
TARGET = 1.3
# the prediction loop's actions that are the jobs' own work (Lightning's profiler names)
WORK = {
    "[_PredictionLoop].predict_next": "read + perturb",
    "[Strategy]SingleDeviceStrategy.batch_to_device": "normalise",
    "[Strategy]SingleDeviceStrategy.predict_step": "forward",
}


class WorkProfiler(SimpleProfiler):
    """Lightning's simple profiler, appending each trainer's action totals as one JSON line to `path` instead
    of printing its table (the totals since its last report: a trainer's profiler accumulates over its calls)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._reported: dict[str, float] = {}

    def summary(self) -> str:
        totals = {action: sum(durations) for action, durations in self.recorded_durations.items()}
        if any(totals.get(action, 0.0) < seconds for action, seconds in self._reported.items()):
            self._reported = {}  # the durations were reset: all of them are new
        delta = {action: seconds - self._reported.get(action, 0.0) for action, seconds in totals.items()}
        self._reported = totals
        with open(self.path, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "end": time.time(), "seconds": delta}) + "\n")
        return ""


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
    dm.setup("test")
    videos = len(dm.splits["test"])
    del dm

    scratch = fresh_dir(work / "scratch" / "large-sweep")
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    report = scratch / "work.jsonl"
    profiler = f"trainer.profiler={{_target_:benchmarks.large_sweep.WorkProfiler,path:'{report}'}}"
    arguments = [
        f"augment={','.join(LEVELS * 2)}",
        "weights=scratch",
        *overrides,
        "data.num_workers=0",
        profiler,
    ]
    sweep_s, runs = run_sweep(arguments, scratch, uri)
    durations = [(r.info.end_time - r.info.start_time) / 1e3 for r in runs]
    reports = [json.loads(line) for line in report.read_text().splitlines()]
    parts = {name: sum(r["seconds"].get(action, 0.0) for r in reports) for action, name in WORK.items()}
    own_work = sum(parts.values())
    imports = import_seconds()
    r = ratio(sweep_s, own_work)
    notes = (
        f"{videos} test videos x {frames_per_video} frames, MesoInception4 weights=scratch, fp32, augment="
        f"{','.join(LEVELS * 2)}, basic launcher (one process), data.num_workers=0; the jobs' own work, timed "
        f"inside them by Lightning's profiler ({len(reports)} prediction passes: test and validation per job): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in parts.items())
        + f"; the jobs' MLflow runs took {', '.join(f'{d:.1f}' for d in durations)} s (their work "
        f"{own_work / max(len(runs), 1):.1f} s each on average); outside the runs {sweep_s - sum(durations):.1f} s "
        f"(imports alone {imports:.1f} s); the cache build before the sweep {build_s:.0f} s, not counted"
    )
    return [
        Measurement(
            f"evaluation sweep at a real size: 6 jobs x {videos} test videos vs their own work",
            rnd(sweep_s, 1),
            "s",
            rnd(own_work, 1),
            rnd(r),
            f"<= {TARGET}x",
            r <= TARGET,
            notes,
            "6 evaluation grid",
            {
                "run_durations_s": [rnd(d, 2) for d in durations],
                "median_run_s": rnd(median(durations), 2),
                "own_work_s": {name: rnd(seconds, 2) for name, seconds in parts.items()},
                "prediction_passes": len(reports),
                "imports_s": rnd(imports, 2),
                "cache_build_s_not_counted": rnd(build_s, 1),
            },
        )
    ]

"""Batch prediction: `predict.py videos=<folder>` (one start-up) against one `predict.py video=<file>` per
video, both as a user types them, on the same videos with a warm face-crop cache (so the ratio is the
start-up and per-process cost that batch prediction saves, not decoding)."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.common import Measurement, fresh_dir, run_entry_point


def bench_prediction(root: Path, work: Path, count: int) -> list[Measurement]:
    videos = sorted(root.glob("Celeb-*/*.mp4"))[:count]
    folder = fresh_dir(work / "scratch" / "predict-videos")
    for video in videos:
        (folder / video.name).symlink_to(video)
    cache, outputs = work / "scratch" / "predict-cache", fresh_dir(work / "scratch" / "predict-out")
    env = {**os.environ, "DEEPFAKE_NUM_WORKERS": "0", "MLFLOW_TRACKING_URI": f"sqlite:///{outputs}/mlflow.db"}
    common = [
        "weights=scratch",
        "logger=none",
        "data=celebdf",
        f"data.cache_dir={cache}",
        "data.face_detector=haar",
        "data.detect_max_side=320",
        "data.detect_every=1",
        f"hydra.run.dir={outputs}/hydra",
    ]
    run_entry_point(
        "predict.py", [*common, f"videos={folder}", f"output={outputs}/warm.csv"], env
    )  # builds the cache entries
    batch = run_entry_point("predict.py", [*common, f"videos={folder}", f"output={outputs}/batch.csv"], env)
    single = sum(
        run_entry_point("predict.py", [*common, f"video={video}"], env) for video in sorted(folder.iterdir())
    )
    ratio = single / batch
    return [
        Measurement(
            f"batch prediction, {len(videos)} videos: videos=<folder> vs one video= per file (s per video)",
            batch / len(videos),
            "s/video",
            single / len(videos),
            ratio,
            ">= 5x",
            ratio >= 5,
            notes=f"{len(videos)} synthetic videos, warm cache, MesoInception4 from scratch weights, logger=none; "
            f"one process: {batch:.1f} s in all; {len(videos)} processes: {single:.1f} s",
            section="predict",
        )
    ]

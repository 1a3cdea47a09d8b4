"""The evaluation grid: a 6-job `evaluate.py -m` sweep in a subprocess against 6x the pure model inference
of one job, and the per-job fixed costs around the inference."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from benchmarks.common import Measurement, compose, fresh_dir, median, ratio, release, rnd, run_entry_point
from src.experiments.config import PROJECT_ROOT
from src.experiments.wiring import build_datamodule

LEVELS = "none,flip,heavy,none,flip,heavy"


def import_seconds() -> float:
    code = (
        "import time; t = time.perf_counter(); import torch, lightning, mlflow, hydra; "
        "import src.experiments.evaluate; print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _collate(items):
    return (
        torch.stack([x for x, _, _ in items]),
        torch.tensor([y for _, y, _ in items]),
        torch.tensor([v for _, _, v in items]),
    )


def pure_inference(cfg, dm, batch_sizes: list[int], passes: int) -> dict[int, dict]:
    """Seconds of forward passes alone over the prepared test crops (no decoding, no loader), for each
    eval batch size (videos per batch), passes interleaved across the sizes."""
    module = instantiate(cfg.model)
    module.eval()
    dataset = dm.eval_dataset("test", dm.test_augment)
    items = [dataset[i] for i in range(len(dataset))]
    batched = {
        n: [dm.on_after_batch_transfer(_collate(items[i : i + n]), 0) for i in range(0, len(items), n)]
        for n in batch_sizes
    }
    bf16 = cfg.trainer.precision == "bf16-mixed"
    times: dict[int, list[float]] = {n: [] for n in batch_sizes}
    for r in range(passes + 1):  # pass 0 creates the oneDNN primitives
        for n in batch_sizes if r % 2 == 0 else batch_sizes[::-1]:
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for x, _, _ in batched[n]:
                    module.video_scores(x)
            times[n].append(time.perf_counter() - start)
    frames = sum(x.shape[0] * x.shape[1] for x, _, _ in batched[batch_sizes[0]])
    return {
        n: {
            "warm_s": median(t[1:]),
            "first_s": t[0],
            "frames": frames,
            "videos": len(items),
            "frames_per_s": frames / median(t[1:]),
        }
        for n, t in times.items()
    }


def first_batch_seconds(dm) -> tuple[float, float]:
    """(seconds to the first batch of a fresh predict DataLoader, seconds for the whole pass)."""
    start = time.perf_counter()
    loader = dm.predict_dataloader()
    first = None
    for _ in loader:
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    del loader
    release()
    return first, total


def mlflow_run_seconds(uri: str, cfg, artifacts: Path) -> float:
    """One evaluate run's MLflow bookkeeping through `tracking.Run`, as evaluate.py records it (start, params,
    config, metrics, files, end), in experiment bench-eval of the store at `uri`."""
    from omegaconf import OmegaConf

    from src.experiments.tracking import Run, client, experiment_id, flat_params

    experiment_id(client(uri), uri, "bench-eval")  # an existing experiment, as for every job after the first
    logger = OmegaConf.merge(cfg.logger, {"experiment_name": "bench-eval", "tracking_uri": uri})
    start = time.perf_counter()
    run = Run.start(logger, name="bench-eval")
    with run.state():
        run.log_params(flat_params(cfg))
        run.log_config(cfg)
        run.log_metrics({f"test/m{i}": 0.5 for i in range(10)})
        run.log_folder(artifacts)
    return time.perf_counter() - start


def pictures_seconds(folder: Path, cfg, dm) -> float:
    """The pictures an evaluate run draws, drawn by evaluate's own code on random scores of the test list."""
    import numpy as np

    from src.experiments.evaluation.plots import draw_evaluation_pictures
    from src.experiments.evaluation.scores import score

    records = dm.splits["test"]
    labels = np.array([r.label for r in records])
    p_fake = np.random.default_rng(0).random(len(records))
    metrics = score(p_fake, labels)  # the interval the ROC's title shows
    start = time.perf_counter()
    draw_evaluation_pictures(
        cfg,
        folder,
        metrics,
        p_fake,
        labels,
        records,
        list(range(len(records))),
        dm.eval_dataset("test", dm.test_augment),
    )
    return time.perf_counter() - start


def prepare_seconds(cfg) -> float:
    """A fresh DataModule's prepare_data + setup on the already built cache (what every job repeats)."""
    start = time.perf_counter()
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    return time.perf_counter() - start


def predict_seconds(overrides: list[str], level: str) -> float:
    """`Trainer.predict` as evaluate.py runs it (DataLoader workers, test-time augmentation, inference)."""
    cfg = compose([*overrides, "weights=scratch", f"augment={level}"], "evaluate")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    module = instantiate(cfg.model)
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.predict(module, datamodule=dm)
    seconds = time.perf_counter() - start
    del trainer, dm
    release()
    return seconds


def run_sweep(arguments: list[str], scratch: Path, uri: str) -> tuple[float, list]:
    """Seconds of `python evaluate.py -m <arguments>` in a subprocess, its MLflow store at `uri` and its sweep
    folder under `scratch`, and its evaluate runs in the order they started."""
    from src.experiments.tracking import client, experiment_id

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "1"}
    seconds = run_entry_point(
        "evaluate.py", ["-m", *arguments, f"hydra.sweep.dir={scratch / 'multirun'}"], env
    )
    store = client(uri)
    runs = store.search_runs([experiment_id(store, uri, "evaluate")])
    return seconds, sorted(runs, key=lambda r: r.info.start_time)


def bench_eval_grid(work: Path, overrides: list[str], passes: int) -> list[Measurement]:
    from src.experiments.tracking import client, experiment_id

    scratch = fresh_dir(work / "scratch" / "eval")
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    start = time.perf_counter()
    experiment_id(client(uri), uri, "evaluate")  # an existing store, as after train.py
    store_s = time.perf_counter() - start

    cfg = compose([*overrides, "weights=scratch"], "evaluate")
    dm = build_datamodule(cfg)
    dm.prepare_data()  # the sweep reuses this cache, as it would reuse the one train.py built
    dm.setup("test")

    launched = time.time()
    sweep_s, runs = run_sweep([f"augment={LEVELS}", "weights=scratch", *overrides], scratch, uri)
    spans = [((r.info.start_time / 1e3) - launched, (r.info.end_time / 1e3) - launched) for r in runs]

    batch_videos = dm._eval_batch_size()
    sizes = [batch_videos, *sorted({1, 4} - {batch_videos})]
    inference = pure_inference(cfg, dm, sizes, passes)
    infer = inference[batch_videos]
    bigger = {n: inference[n]["frames_per_s"] for n in sizes[1:]}
    first, loader_pass = first_batch_seconds(dm)
    prepare_s = prepare_seconds(cfg)
    predict_s = {level: predict_seconds(overrides, level) for level in ("none", "heavy")}
    mlflow_s = mlflow_run_seconds(uri, cfg, scratch / "multirun")
    pictures_s = pictures_seconds(scratch, cfg, dm)
    imports = import_seconds()
    release()

    durations = [b - a for a, b in spans]
    gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
    baseline = 6 * infer["warm_s"]
    r = ratio(sweep_s, baseline)
    fixed = {
        "imports_torch_lightning_mlflow_hydra_s": imports,
        "launch_to_first_run_start_s": spans[0][0] if spans else None,
        "run_durations_s": durations,
        "between_runs_s": gaps,
        "last_run_end_to_exit_s": sweep_s - spans[-1][1] if spans else None,
        "predict_loader_first_batch_s": first,
        "predict_loader_full_pass_s": loader_pass,
        "mlflow_bookkeeping_per_run_s": mlflow_s,
        "pictures_s_first_call": pictures_s,
        "store_creation_s_not_counted": store_s,
        "pure_inference_first_pass_s": infer["first_s"],
        "datamodule_prepare_setup_s": prepare_s,
        "trainer_predict_none_s": predict_s["none"],
        "trainer_predict_heavy_s": predict_s["heavy"],
    }
    inside = median(durations) - infer["warm_s"] if durations else float("nan")
    notes = (
        f"mesonet weights=scratch, augment={LEVELS}, basic launcher (jobs in one process); test set "
        f"{infer['videos']} videos x {infer['frames'] // max(infer['videos'], 1)} frames, eval batch "
        f"{batch_videos} video(s); pure inference {infer['warm_s']:.2f} s/job "
        f"({infer['frames_per_s']:.0f} frames/s); per-job fixed costs: imports {imports:.1f} s (once), "
        f"launch->first run {fixed['launch_to_first_run_start_s']:.1f} s, median run {median(durations):.1f} s "
        f"of which ~{inside:.1f} s is not inference (DataModule prepare+setup {prepare_s:.2f} s, predict loader "
        f"first batch {first:.2f} s, Trainer.predict {predict_s['none']:.2f} s for augment=none and "
        f"{predict_s['heavy']:.2f} s for heavy vs {infer['warm_s']:.2f} s of forward passes, MLflow bookkeeping "
        f"{mlflow_s:.2f} s, the four pictures {pictures_s:.2f} s), gaps between runs {median(gaps):.2f} s; "
        f"inference frames/s at other eval batch sizes (videos/batch, interleaved passes): "
        + ", ".join(f"{n}: {v:.0f}" for n, v in bigger.items())
    )
    del dm
    one_time = (fixed["launch_to_first_run_start_s"] or 0.0) + (fixed["last_run_end_to_exit_s"] or 0.0)
    per_job = Measurement(
        "evaluation grid: median job vs its pure inference",
        rnd(median(durations), 2),
        "s",
        rnd(infer["warm_s"], 2),
        rnd(ratio(median(durations), infer["warm_s"])),
        "",
        None,
        f"one MLflow run from its start to its end (data set-up, weights, Trainer.predict, metrics and intervals, "
        f"pictures, files) against the forward passes alone; the sweep's one-time costs outside the jobs "
        f"(process start-up and imports, composing, the store check, exit) are {one_time:.1f} s",
        "6 evaluation grid",
    )
    return [
        per_job,
        Measurement(
            "evaluation grid: 6-job sweep vs 6x pure inference",
            rnd(sweep_s, 2),
            "s",
            rnd(baseline, 2),
            rnd(r),
            "<= 1.5x",
            r <= 1.5,
            notes,
            "6 evaluation grid",
            {k: ([rnd(x) for x in v] if isinstance(v, list) else rnd(v)) for k, v in fixed.items()}
            | {
                "eval_batch_frames_per_s": {
                    str(batch_videos): rnd(infer["frames_per_s"], 1),
                    **{str(n): rnd(v, 1) for n, v in bigger.items()},
                }
            },
        ),
    ]

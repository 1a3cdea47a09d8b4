"""Is the embedded synthetic set learnable, and not solved at once? (issue 12)

    python -m benchmarks.learnability [--epochs 20] [--root DIR] [--out FILE] [-- extra train.py overrides]

1. Generates the default synthetic set into a fresh folder and builds its face-crop cache, timed
   separately (DEEPFAKE_BUILD_WORKERS, default 2). Target: both together under 120 s on the
   project's 2-core machine.
2. Runs ``python train.py`` (MesoInception4 from the original weights, ``trainer.max_epochs``) on it,
   in a temporary MLflow store, and reads ``val/video_auc`` per epoch back from the store.
   Targets: the best val video AUC >= 0.85, the one after the first epoch < 0.95.

Prints a small table and writes JSON (default ``reports/learnability.json``). Training is
CPU-heavy (minutes); the load average before and after is recorded next to the times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import compose, run_entry_point
from src.experiments.config import PROJECT_ROOT
from src.experiments.wiring import build_datamodule

SHARED_WEIGHTS = PROJECT_ROOT.parent / "shared" / "mesonet" / "weights"
BUILD_TARGET_S = 120.0
FINAL_TARGET, FIRST_EPOCH_LIMIT = 0.85, 0.95


def prepare(root: Path, data_overrides: list[str]) -> dict:
    """Generate the set and build its cache, timing each; the detection summary of the build."""

    from src.data.synthetic import generate_synthetic_celebdf

    cfg = compose([f"data.root={root}", *data_overrides])
    start = time.perf_counter()
    generate_synthetic_celebdf(root, **dict(cfg.data.synthetic))
    generated = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    built = time.perf_counter()
    summary = datamodule.build_report.summary()
    marker = json.loads((root / ".synthetic.json").read_text())
    return {
        "generation_s": round(generated - start, 1),
        "cache_build_s": round(built - generated, 1),
        "total_s": round(built - start, 1),
        "build_workers": int(cfg.data.build_workers),
        "videos": summary["videos"],
        "frame_detection_rate": summary["frame_detection_rate"],
        "centre_fallback_videos": summary["centre_fallback_videos"],
        "codec": marker.get("codec", "mpeg4"),
    }


def train(root: Path, work: Path, epochs: int, extra: list[str]) -> dict:
    """``python train.py`` in its own MLflow store; val/video_auc per epoch read back from the store."""
    from src.experiments.tracking import client

    uri = f"sqlite:///{work}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DEEPFAKE_NUM_WORKERS": "0", "HYDRA_FULL_ERROR": "1"}
    if "DEEPFAKE_WEIGHTS_DIR" not in os.environ and SHARED_WEIGHTS.is_dir():
        env["DEEPFAKE_WEIGHTS_DIR"] = str(SHARED_WEIGHTS)
    arguments = [
        f"data.root={root}",
        f"trainer.max_epochs={epochs}",
        f"paths.checkpoint_dir={work}/checkpoints",
        f"hydra.run.dir={work}/hydra",
        *extra,
    ]
    seconds = run_entry_point("train.py", arguments, env)
    store = client(uri)
    experiment = store.get_experiment_by_name("train")
    run = store.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]

    def per_epoch(metric: str) -> list[float]:
        history = sorted(store.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        return [round(m.value, 4) for m in history]

    aucs = per_epoch("val/video_auc")
    return {
        "command": " ".join(["train.py", *arguments]),
        "train_s": round(seconds, 1),
        "val_video_auc_per_epoch": aucs,
        "val_frame_auc_per_epoch": per_epoch("val/frame_auc"),
        "train_loss_per_epoch": per_epoch("train/loss_epoch"),
        "first_epoch_val_auc": aucs[0] if aucs else None,
        "best_val_auc": max(aucs) if aucs else None,
        "epochs_run": len(aucs),
        "test_video_auc": run.data.metrics.get("test/video_auc"),
        "run_id": run.info.run_id,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--root", type=Path, help="dataset folder (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "reports" / "learnability.json")
    parser.add_argument("--skip-train", action="store_true", help="only time generation and cache build")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for data and train.py")
    args = parser.parse_args(argv)
    os.environ.setdefault("DEEPFAKE_BUILD_WORKERS", "2")
    data_overrides = [o for o in args.overrides if o.lstrip("+").startswith("data.")]

    work = Path(tempfile.mkdtemp(prefix="learnability-"))
    root = args.root or work / "synthetic-celebdf"
    record: dict = {"load_before": list(os.getloadavg()), "overrides": args.overrides}
    try:
        record["prepare"] = prepare(root, data_overrides)
        if not args.skip_train:
            record["train"] = train(root, work, args.epochs, args.overrides)
    finally:
        record["load_after"] = list(os.getloadavg())
        if args.root is None:
            shutil.rmtree(work, ignore_errors=True)
    prep = record["prepare"]
    checks = {
        f"generation + cache build < {BUILD_TARGET_S:g} s": prep["total_s"] < BUILD_TARGET_S,
    }
    rows = [
        ("generation", f"{prep['generation_s']} s", ""),
        (f"face-crop cache ({prep['build_workers']} workers)", f"{prep['cache_build_s']} s", ""),
        ("generation + cache", f"{prep['total_s']} s", f"< {BUILD_TARGET_S:g} s"),
        ("frame detection rate (Haar)", f"{prep['frame_detection_rate']:.4f}", ""),
    ]
    if "train" in record:
        tr = record["train"]
        checks[f"best val video AUC >= {FINAL_TARGET}"] = (tr["best_val_auc"] or 0) >= FINAL_TARGET
        checks[f"val video AUC after epoch 1 < {FIRST_EPOCH_LIMIT}"] = (
            tr["first_epoch_val_auc"] or 1
        ) < FIRST_EPOCH_LIMIT
        rows += [
            ("val video AUC after epoch 1", f"{tr['first_epoch_val_auc']}", f"< {FIRST_EPOCH_LIMIT}"),
            (
                f"best val video AUC ({tr['epochs_run']} epochs)",
                f"{tr['best_val_auc']}",
                f">= {FINAL_TARGET}",
            ),
            ("val video AUC per epoch", " ".join(f"{a:.2f}" for a in tr["val_video_auc_per_epoch"]), ""),
            ("val frame AUC per epoch", " ".join(f"{a:.2f}" for a in tr["val_frame_auc_per_epoch"]), ""),
            ("training run", f"{tr['train_s']} s", ""),
        ]
    record["checks"] = checks
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'measurement'.ljust(width)}value  (target)")
    for name, value, target in rows:
        print(f"{name.ljust(width)}{value}" + (f"  ({target})" if target else ""))
    print(f"load average before {record['load_before'][0]:.1f}, after {record['load_after'][0]:.1f}")
    for check, met in checks.items():
        print(f"{'met ' if met else 'MISSED'} {check}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()

"""What `python predict.py` runs: P(fake) of video files, through the same face crops, cache, transforms and
weights as evaluation, with one start-up. `video=<file>` prints one video's score and its frames' scores;
`videos=<folder|glob|list file> [output=<csv>]` writes a CSV row per video and records a run (experiment
`predict`) unless logger=none. `explain=true` adds `<video stem>_cam.png` per scored video (class-activation
maps of its crops, src/experiments/evaluation/explain.py) beside the CSV, or for `video=` in the Hydra output folder.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from src.experiments.cli import TaskRuns, task_wrapper
from src.experiments.tracking import (
    check_tracking_store,
    run_tags,
    tracking_uri,
    unique_name,
    uses_mlflow,
)
from src.experiments.wiring import build_datamodule, build_model, load_weights
from src.utils.errors import ConfigError

log = logging.getLogger(__name__)


@task_wrapper
def predict(cfg: DictConfig, runs: TaskRuns) -> list[dict] | dict:
    """`video=` or `videos=`: score video files (see the module's docstring)."""
    L.seed_everything(cfg.seed, workers=True)
    if bool(cfg.get("video")) == bool(cfg.get("videos")):
        raise ConfigError(
            "give video=<file> (one video) or videos=<folder|glob|list file> (many), not both and not neither"
        )
    if cfg.get("video"):
        return predict_video(cfg, Path(cfg.video))
    return predict_videos(cfg, runs)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def resolve_videos(spec: str) -> list[Path]:
    """`videos=`: a folder (its video files, recursively), a glob pattern, or a list file (one path per
    line, relative to the list's folder; blank lines and # comments skipped), or a single video file."""
    import glob

    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        where = f"folder {path} (looked for {', '.join(VIDEO_SUFFIXES)})"
    elif any(c in spec for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        where = f"pattern {spec}"
    elif path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        found = [(path.parent / line).expanduser() for line in lines if line and not line.startswith("#")]
        where = f"list file {path}"
    elif path.exists():
        found, where = [path], str(path)
    else:
        raise FileNotFoundError(f"videos={spec}: no such folder, file or matching pattern")
    if not found:
        raise ValueError(f"videos={spec}: no video files in {where}")
    return found


def predict_files(cfg: DictConfig, videos: list[Path], cam_dir: Path | None = None) -> list[dict]:
    """Score video files with one start-up: through the same cache, dataset, transform and batch transfer
    as test evaluation. One row per input, failed ones included (with the reason); with `cam_dir`, each
    scored video's maps go there (row["cam"])."""
    if OmegaConf.is_missing(cfg.data, "root"):  # prediction needs no dataset
        OmegaConf.update(cfg, "data.root", None)
    datamodule = build_datamodule(cfg)
    reports = datamodule.setup_predict(videos)
    module = build_model(cfg)
    provenance = load_weights(cfg, module)
    rows = [
        {
            "path": str(video),
            "p_fake": "",
            "logit": "",
            "frames": report.num_frames,
            "frames_with_face": report.num_detected,
            "fallback": _fallback(report),
            "error": report.reason if not report.ok else "",
            "frame_p_fake": [],
        }
        for video, report in zip(videos, reports, strict=True)
    ]
    if any(report.ok for report in reports):
        trainer = hydra.utils.instantiate(
            cfg.trainer,
            logger=False,
            enable_checkpointing=False,
            callbacks=[L.pytorch.callbacks.TQDMProgressBar()],
        )
        for output in trainer.predict(module, datamodule=datamodule):
            frame_logits = output["frame_logits"].double()
            logits = (
                module.video_logit_from_frames(frame_logits)
                if module.input_kind == "frame"
                else output["video_logit"].double()
            )
            for position, logit, frames in zip(output["video"].tolist(), logits, frame_logits, strict=True):
                row = rows[position]
                row["logit"], row["p_fake"] = float(logit), float(torch.sigmoid(logit))
                row["frame_p_fake"] = torch.sigmoid(frames).tolist() if module.input_kind == "frame" else []
        if cam_dir is not None:
            _write_maps(module, datamodule, rows, cam_dir, trainer.strategy.root_device)
    for row in rows:
        row["weights"] = provenance.initial_weights
    return rows


def _write_maps(module, datamodule, rows: list[dict], folder: Path, device) -> None:
    """explain=true: `<video stem>_cam.png` in `folder` per scored video (`<parent>_<stem>_cam.png` where
    two inputs share a stem), from the crops it was scored on; computed after scoring, with gradients."""
    from src.experiments.evaluation import explain

    stems = Counter(Path(row["path"]).stem for row in rows)
    dataset = datamodule.predict_dataloader().dataset
    with explain.on_device(module, device):
        for item in range(len(dataset)):
            pixels, _, position = dataset[item]
            row, video = rows[position], Path(rows[position]["path"])
            name = video.stem if stems[video.stem] == 1 else f"{video.parent.name}_{video.stem}"
            title = f"{video}: P(fake) = {row['p_fake']:.3f}  ({module.title})"
            row["cam"] = explain.write_video_map(
                module, datamodule, pixels, title, folder / f"{name}_cam.png"
            )


def _run_dir() -> Path:
    """The Hydra run's output folder (the working directory outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()


def _fallback(report) -> str:
    if not report.ok:
        return ""
    if report.centre_fallback:
        return "centre crop (no face found)"
    return f"nearest box for {report.num_filled} frames" if report.num_filled else ""


PREDICTION_COLUMNS = ("path", "p_fake", "logit", "frames", "frames_with_face", "fallback", "error")


def predict_videos(cfg: DictConfig, runs: TaskRuns) -> list[dict]:
    """`predict.py videos=<folder|glob|list> [output=<csv>]`: a CSV row per video and a summary; logged
    to MLflow (experiment `predict`) unless logger=none."""
    videos = resolve_videos(str(cfg.videos))
    output = Path(cfg.get("output") or _run_dir() / "predictions.csv").expanduser()
    _check_output(output)
    logged = uses_mlflow(cfg.get("logger"))
    if logged:
        check_tracking_store(tracking_uri(cfg))
    rows = predict_files(cfg, videos, output.parent if cfg.get("explain") else None)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for row in rows:
            writer.writerow(
                [repr(row[c]) if isinstance(row[c], float) else row[c] for c in PREDICTION_COLUMNS]
            )
    scored = [r for r in rows if r["p_fake"] != ""]
    fake = sum(r["p_fake"] >= 0.5 for r in scored)
    nothing = (
        None
        if scored
        else ValueError(
            f"none of the {len(rows)} videos of videos={cfg.videos} could be scored; the reasons are in {output} "
            f"(first: {rows[0]['error']})"
        )
    )
    scored_line = (
        f"Scored {len(scored)} of {len(rows)} videos with {cfg.model.name} ({rows[0]['weights']}): "
        f"{fake} look fake (P(fake) >= 0.5), {len(scored) - fake} real"
        + (
            f"; {len(rows) - len(scored)} could not be scored (see the error column)"
            if len(scored) < len(rows)
            else ""
        )
    )
    maps = [Path(row["cam"]) for row in rows if row.get("cam")]
    if maps:
        scored_line += f"; class-activation maps: {len(maps)} <video>_cam.png files in {output.parent}"
    if not logged:
        print("\n".join([scored_line, f"Wrote {output}"]))
        if nothing:
            raise nothing
        return rows
    name = unique_name(f"predict-{cfg.model.name}-{cfg.weights.source}-{len(rows)}-videos")
    run = runs.start(cfg.logger, name=name, tags={**run_tags(cfg), "videos": str(cfg.videos)[:5000]})
    run.log_file(output)
    for picture in maps:
        run.log_file(picture, "explanations")
    run.log_metrics(
        {"predict/videos": len(rows), "predict/scored_videos": len(scored), "predict/fake_videos": fake}
    )
    if nothing:
        print("\n".join([scored_line, f"Wrote {output}"]))
        raise nothing  # the run ends FAILED with the reason; the CSV stays
    run.print_summary("predict", [scored_line], {"output": output})
    return rows


def _check_output(output: Path) -> None:
    """Before any scoring: `output=` must name a CSV file that can be written."""
    if output.is_dir():
        raise ConfigError(
            f"output={output} is a folder: give a file name, e.g. output={output / 'predictions.csv'}"
        )
    blocker = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"output={output}: {blocker} is a file, not a folder")
    existing = next(p for p in (output.parent, *output.parents) if p.exists())
    if not os.access(existing, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ConfigError(f"output={output} is not writable: choose another path")


def predict_video(cfg: DictConfig, video: Path) -> dict:
    """`predict.py video=<file>`: the score of one video, printed with its per-frame scores."""
    (row,) = predict_files(cfg, [video], _run_dir() if cfg.get("explain") else None)
    if row["error"]:
        raise ValueError(f"cannot score {row['error']}")  # the reason starts with the path
    print(f"{video}: P(fake) = {row['p_fake']:.4f}  ({cfg.model.name}, {row['weights']})")
    print(
        f"faces detected in {row['frames_with_face']} of {row['frames']} frames"
        + (f"; {row['fallback']}" if row["fallback"] else "")
    )
    if row["frame_p_fake"]:
        print("per-frame P(fake):", " ".join(f"{p:.3f}" for p in row["frame_p_fake"]))
    if row.get("cam"):
        print(f"class-activation maps: {row['cam']}")
    return row

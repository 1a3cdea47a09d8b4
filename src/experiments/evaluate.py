"""What `python evaluate.py` runs: a model with its weights on the test list under a test-time
perturbation, logged as one MLflow run; or, with `video=<file>`, the score of a single video."""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path

import hydra
import lightning as L
import mlflow
import torch
from omegaconf import DictConfig

from src.experiments.config import check_config
from src.experiments.tracking import (
    EVALUATE_EXPERIMENT,
    experiment_id,
    flat_params,
    log_config,
    run_tags,
    tracking_uri,
)
from src.models.metrics import detection_metrics
from src.models.weights import apply_weights

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float] | dict:
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("video"):
        return predict_video(cfg, Path(cfg.video))
    client = mlflow.MlflowClient(tracking_uri(cfg))
    experiment_name = cfg.logger.get("experiment_name") or EVALUATE_EXPERIMENT
    experiment = experiment_id(client, tracking_uri(cfg), experiment_name)
    run = client.create_run(experiment, tags=run_tags(cfg), run_name=_run_name(cfg))
    run_id = run.info.run_id
    try:
        log_config(client, run_id, cfg)
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in flat_params(cfg).items()])
        metrics = _evaluate_into(client, run_id, cfg)
    except BaseException as error:
        client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    log.info("evaluate run %s: %s", run_id, {k: round(v, 4) for k, v in metrics.items() if "video" in k})
    return metrics


def _evaluate_into(client, run_id: str, cfg: DictConfig) -> dict[str, float]:
    module = hydra.utils.instantiate(cfg.model)
    origin = apply_weights(module, cfg)
    client.set_tag(run_id, "initial_weights", origin)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    outputs = trainer.predict(module, datamodule=datamodule)
    video_probs = torch.cat([o["video_prob"] for o in outputs]).float()
    frame_probs = torch.cat([o["frame_probs"] for o in outputs]).float()
    labels = torch.cat([o["label"] for o in outputs]).long()
    videos = torch.cat([o["video"] for o in outputs]).tolist()

    metrics = score(video_probs, frame_probs, labels)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()])
    summary = datamodule.data_report()["summary"]
    client.log_metric(run_id, "data/skipped_videos", summary["failed_videos"])
    client.log_metric(run_id, "data/degraded_videos", summary["degraded_videos"])
    client.log_metric(run_id, "data/centre_fallback_videos", summary["centre_fallback_videos"])
    client.log_metric(run_id, "data/frame_detection_rate", summary["frame_detection_rate"])
    records = datamodule.splits["test"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_scores_csv(folder / "video_scores.csv", [records[v].path for v in videos], labels, video_probs, frame_probs)
        plot_roc(video_probs, labels, folder / "roc_curve.png", title=f"{cfg.model.name} {cfg.weights.source} {cfg.augment.level}")
        datamodule.write_data_report(folder / "data_report.json")
        client.log_artifacts(run_id, str(folder))
    return metrics


def score(video_probs: torch.Tensor, frame_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """test/video_* and test/frame_* metrics of fake probabilities."""
    video = detection_metrics("test/video_")(video_probs, labels)
    frame = detection_metrics("test/frame_")(frame_probs.flatten(), labels[:, None].expand_as(frame_probs).flatten())
    return {k: float(v) for k, v in {**video, **frame}.items()}


def plot_roc(probs: torch.Tensor, labels: torch.Tensor, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    fpr, tpr, _ = binary_roc(probs, labels)
    auc = float(binary_auroc(probs, labels))
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(fpr.numpy(), tpr.numpy(), label=f"video AUC {auc:.3f}")
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _write_scores_csv(path: Path, names: list[str], labels, video_probs, frame_probs) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", "fake_probability", "frame_probabilities"])
        for name, label, prob, frames in zip(names, labels.tolist(), video_probs.tolist(), frame_probs.tolist(), strict=True):
            writer.writerow([name, label, f"{prob:.6f}", " ".join(f"{p:.4f}" for p in frames)])


def _run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.name}-{cfg.weights.source}-{cfg.augment.level}"


def predict_video(cfg: DictConfig, video: Path) -> dict:
    """Score one video file: probability of fake, per-frame scores and face detections."""
    from src.data.cache import CropSettings, FaceCropCache
    from src.data.datamodule import VideoDataset

    data = cfg.data
    settings = CropSettings(
        data.frames_per_video, data.face_margin, data.crop_size, data.face_detector, data.detect_max_side, data.yunet_model
    )
    # through the cache: decoding runs isolated in a worker, and a second prediction is instant
    cache = FaceCropCache(Path(data.cache_dir).expanduser(), settings)
    (report,) = cache.build([video], workers=1, progress=False).videos
    if not report.ok:
        raise ValueError(f"cannot score {video}: {report.reason}")
    crops, _ = cache.load(video)
    datamodule = hydra.utils.instantiate(cfg.data)
    frames = data.frames_per_video if cfg.model.input.kind == "frame" else cfg.model.input.frames_per_clip
    item = VideoDataset.prepare(crops, frames, datamodule.eval_transform(cfg.augment.level), cfg.seed)
    batch = datamodule.on_after_batch_transfer((item[None], torch.zeros(1), torch.zeros(1)), 0)
    module = hydra.utils.instantiate(cfg.model)
    origin = apply_weights(module, cfg)
    module.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed"):
        video_prob, frame_probs = module.video_scores(batch[0])
    result = {
        "video": str(video),
        "weights": origin,
        "fake_probability": float(video_prob[0]),
        "frame_probabilities": [round(float(p), 4) for p in frame_probs[0]],
        "frames": report.num_frames,
        "frames_with_face": report.num_detected,
    }
    print(f"{video}: P(fake) = {result['fake_probability']:.4f}  ({cfg.model.name}, {origin})")
    print(f"faces detected in {result['frames_with_face']} of {result['frames']} frames"
          + ("; no face found: centre crops" if report.centre_fallback else ""))
    print("per-frame P(fake):", " ".join(f"{p:.3f}" for p in result["frame_probabilities"]))
    return result

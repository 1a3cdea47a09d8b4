"""What `python train.py` runs: data, model, weights, callbacks and MLflow logger; fit, then test."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import hydra
import lightning as L
import mlflow
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from src.experiments.config import check_config, selected_options
from src.experiments.tracking import (
    TRAIN_EXPERIMENT,
    experiment_id,
    flat_params,
    log_config,
    log_file_as,
    run_tags,
    tracking_uri,
)
from src.models.weights import apply_weights

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def run_folder(cfg: DictConfig) -> Path:
    """Checkpoint folder of this run: a new one, or for ckpt_path=last the latest of this configuration."""
    options = selected_options(cfg)
    family = Path(cfg.paths.checkpoint_dir) / f"{options['model']}-{options['weights']}-{options['data']}-fold{cfg.data.fold}"
    if cfg.ckpt_path == "last":
        candidates = sorted(family.glob("run-*/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"ckpt_path=last: no last.ckpt of this configuration under {family}")
        return candidates[-1].parent
    return family / f"run-{_run_stamp()}"


def _run_stamp() -> str:
    """The Hydra job's output folder (a timestamp, plus the job number in a sweep): the same in every
    DDP process of one run, since Lightning relaunches them with the same hydra.run.dir."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    output = Path(HydraConfig.get().runtime.output_dir).resolve()
    digest = hashlib.sha1(str(output).encode()).hexdigest()[:6]
    return f"{output.parent.name}-{output.name}-{digest}"


def make_logger(cfg: DictConfig, folder: Path):
    if cfg.logger.name == "csv":
        return CSVLogger(cfg.logger.save_dir, name=cfg.logger.experiment_name)
    run_id_file = folder / RUN_ID_FILE
    # only a resumed run continues the MLflow run recorded next to its checkpoints
    run_id = run_id_file.read_text().strip() if cfg.ckpt_path and run_id_file.is_file() else None
    if rank_zero_only.rank != 0:  # DDP workers log nothing themselves; Lightning routes it via rank 0
        return MLFlowLogger(experiment_name=cfg.logger.experiment_name or TRAIN_EXPERIMENT, run_id=run_id)
    uri, name = tracking_uri(cfg), cfg.logger.experiment_name or TRAIN_EXPERIMENT
    experiment_id(mlflow.MlflowClient(uri), uri, name)  # created with its artifacts next to the store
    logger = MLFlowLogger(
        experiment_name=name,
        tracking_uri=uri,
        tags=run_tags(cfg),
        run_id=run_id,
        log_model=False,
    )
    run_id_file.write_text(logger.run_id)  # creates the run now, so a resumed process finds it
    return logger


def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = hydra.utils.instantiate(cfg.model)
    origin = apply_weights(module, cfg)  # before the data, so missing weights fail at once
    log.info("initial weights of %s: %s", cfg.model.name, origin)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cfg.model.pos_weight == "auto":
        counts = datamodule.class_counts()
        module.set_pos_weight(counts["train_real"] / max(counts["train_fake"], 1))

    folder = run_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg, folder)
    callbacks = {name: hydra.utils.instantiate(c) for name, c in cfg.callbacks.items()}
    callbacks["model_checkpoint"].dirpath = str(folder)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=list(callbacks.values()), logger=logger)

    resuming = cfg.ckpt_path is not None
    if trainer.is_global_zero and isinstance(logger, MLFlowLogger):
        client, run_id = logger.experiment, logger.run_id
        if resuming:  # MLflow params are immutable: the resumed run keeps its first config
            client.set_tag(run_id, "resumed_from", str(cfg.ckpt_path))
        else:
            logger.log_hyperparams(flat_params(cfg))
            client.set_tag(run_id, "initial_weights", origin)
            log_config(client, run_id, cfg)
        report = datamodule.write_data_report(folder / "data_report.json")
        client.log_artifact(run_id, str(report))
        summary = datamodule.data_report()["summary"]
        client.log_metric(run_id, "data/skipped_videos", summary["failed_videos"])
        client.log_metric(run_id, "data/degraded_videos", summary["degraded_videos"])
        client.log_metric(run_id, "data/centre_fallback_videos", summary["centre_fallback_videos"])
        client.log_metric(run_id, "data/frame_detection_rate", summary["frame_detection_rate"])
        if not resuming:
            for key, value in datamodule.class_counts().items():
                client.log_param(run_id, f"count.{key}", value)

    ckpt_path = str(folder / "last.ckpt") if cfg.ckpt_path == "last" else cfg.ckpt_path
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best = callbacks["model_checkpoint"].best_model_path
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test_after_fit:
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(tested[0] if tested else {})
    if trainer.is_global_zero and isinstance(logger, MLFlowLogger) and best:
        log_file_as(logger.experiment, logger.run_id, Path(best), "checkpoints", "best.ckpt")
        logger.experiment.set_tag(logger.run_id, "best_checkpoint", best)
        logger.experiment.set_terminated(logger.run_id, "FINISHED")
    log.info("best checkpoint: %s", best)
    return metrics

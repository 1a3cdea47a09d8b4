"""What `python train.py` runs: data, model, weights, callbacks and MLflow logger; fit, then test.

Every run gets its own checkpoint folder `<checkpoint_dir>/<model>-<weights>-<data>-fold<k>/run-<stamp>-<id>`
holding `run.json` (its MLflow run and the configuration it trains). `ckpt_path=last` resumes the newest
folder whose recorded configuration is this one, into its MLflow run; a folder of another configuration
is refused with the differences named.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.data.datamodule import build_datamodule
from src.experiments.checkpointing import AtomicCheckpointIO
from src.experiments.config import check_config, selected_options, tidy_output
from src.experiments.tracking import (
    build_logger,
    check_tracking_store,
    data_fingerprint,
    flat_params,
    log_config,
    log_data_report,
    log_dataset,
    log_file_as,
    run_name,
    run_state,
    run_tags,
    run_url,
    tracking_uri,
    uses_mlflow,
)
from src.models.weights import apply_weights

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
# rank 0 hands its run folder to the DDP processes Lightning starts (they inherit the environment)
FOLDER_ENV = "DEEPFAKE_RUN_FOLDER"
# what defines the training a checkpoint continues; everything else (trainer length, workers, where
# outputs and weights live, logging) may change on resume
RESUME_GROUPS = ("data", "model", "weights", "train_augment", "seed")
NOT_RESUME_KEYS = {"data": ("build_workers", "num_workers", "cache_dir"), "weights": ("tracking_uri",)}


class ResumeMismatch(ValueError):
    pass


def resume_key(cfg: DictConfig) -> dict:
    """The resolved configuration a resumed run must share with the run that wrote the checkpoint."""
    container = OmegaConf.to_container(cfg, resolve=True)
    key = {group: container.get(group) for group in RESUME_GROUPS}
    for group, names in NOT_RESUME_KEYS.items():
        if isinstance(key.get(group), dict):
            key[group] = {k: v for k, v in key[group].items() if k not in names}
    return json.loads(json.dumps(key, default=str))


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{name}.")
        elif a.get(key) != b.get(key):
            out.append(f"{name}: {b.get(key)!r} (checkpoint) vs {a.get(key)!r} (now)")
    return out


def run_folder(cfg: DictConfig) -> tuple[Path, dict | None]:
    """(checkpoint folder of this run, its recorded run.json when resuming)."""
    if rank_zero_only.rank != 0 and os.environ.get(FOLDER_ENV):
        folder = Path(os.environ[FOLDER_ENV])
        return folder, json.loads((folder / RUN_FILE).read_text())
    options = selected_options(cfg)
    family = Path(cfg.paths.checkpoint_dir) / f"{options['model']}-{options['weights']}-{options['data']}-fold{cfg.data.fold}"
    if cfg.ckpt_path is None:
        return family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}", None
    key = resume_key(cfg)
    if cfg.ckpt_path == "last":
        folders = sorted((p.parent for p in family.glob(f"run-*/{RUN_FILE}")), key=lambda p: p.stat().st_mtime)
        if not folders:
            raise FileNotFoundError(f"ckpt_path=last: no run of this configuration under {family}")
        for folder in reversed(folders):
            recorded = json.loads((folder / RUN_FILE).read_text())
            if recorded.get("resume_key") == key:
                return folder, recorded
        recorded = json.loads((folders[-1] / RUN_FILE).read_text())
        raise ResumeMismatch(
            f"ckpt_path=last: no run under {family} has this configuration; the newest ({folders[-1].name}) differs in "
            + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5]))
    folder = Path(cfg.ckpt_path).expanduser().resolve().parent
    record = folder / RUN_FILE
    if not record.is_file():
        return family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}", None  # a foreign checkpoint
    recorded = json.loads(record.read_text())
    if recorded.get("resume_key") != key:
        raise ResumeMismatch(f"ckpt_path={cfg.ckpt_path}: the checkpoint's run trained another configuration: "
                             + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5]))
    return folder, recorded


def resume_checkpoint(folder: Path, wanted: Path) -> Path:
    """`wanted`, or when it is unreadable (a kill mid-write on another filesystem, a full disk), the newest
    checkpoint in its folder that loads, with a warning."""
    candidates = [wanted] + sorted((p for p in folder.glob("*.ckpt") if p != wanted), key=lambda p: -p.stat().st_mtime)
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            torch.load(candidate, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # truncated zip, not a checkpoint
            log.warning("checkpoint %s is unreadable (%s: %s); trying an older one", candidate, type(error).__name__, error)
            continue
        if candidate != wanted:
            log.warning("resuming from %s instead of the unreadable %s", candidate.name, wanted.name)
        return candidate
    raise FileNotFoundError(f"no readable checkpoint in {folder} to resume from (tried {', '.join(c.name for c in candidates)})")


def make_logger(cfg: DictConfig, recorded: dict | None):
    """The configured Lightning logger; an MLflow one resumes the recorded run or starts a uniquely named one."""
    if not uses_mlflow(cfg):
        return build_logger(cfg)
    run_id = recorded.get("mlflow_run_id") if recorded else None
    if rank_zero_only.rank != 0:  # DDP workers log nothing themselves; Lightning routes it via rank 0
        return hydra.utils.instantiate(cfg.logger, run_id=run_id)
    return build_logger(cfg, tags=run_tags(cfg), run_id=run_id, run_name=None if run_id else run_name(cfg))


def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    tidy_output()
    if uses_mlflow(cfg):
        check_tracking_store(tracking_uri(cfg))  # in seconds, before any data or weights
    folder, recorded = run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = hydra.utils.instantiate(cfg.model)
    provenance = apply_weights(module, cfg)  # before the data, so missing weights fail at once
    log.info("initial weights of %s: %s", cfg.model.name, provenance.initial_weights)
    # the data before the run: a dataset that cannot be used leaves no run behind, only its one-line error
    datamodule = build_datamodule(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    folder.mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg, recorded)
    if not isinstance(logger, MLFlowLogger) or not rank_zero_only.rank == 0:
        metrics = _train(cfg, module, datamodule, folder, recorded, logger, provenance)
        if rank_zero_only.rank == 0:
            _print_summary(cfg, logger, metrics, folder)
        return metrics
    client, run_id = logger.experiment, logger.run_id
    if recorded is None:
        (folder / RUN_FILE).write_text(json.dumps({"mlflow_run_id": run_id, "resume_key": resume_key(cfg)}, indent=1))
    os.environ[FOLDER_ENV] = str(folder)
    with run_state(client, run_id):
        metrics = _train(cfg, module, datamodule, folder, recorded, logger, provenance)
    _print_summary(cfg, logger, metrics, folder)
    return metrics


def _train(cfg, module, datamodule, folder: Path, recorded: dict | None, logger, provenance) -> dict[str, float]:
    if cfg.model.pos_weight == "auto":
        counts = datamodule.class_counts()
        module.set_pos_weight(counts["train_real"] / max(counts["train_fake"], 1))

    callbacks = {name: hydra.utils.instantiate(c) for name, c in cfg.callbacks.items()}
    callbacks["model_checkpoint"].dirpath = str(folder)
    if logger is None:  # logger=none: nothing to record learning rates into (Lightning would refuse)
        callbacks = {k: c for k, c in callbacks.items() if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)}
    # logger=False, not None: Lightning would otherwise pick a default logger of its own
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=list(callbacks.values()), logger=logger if logger is not None else False,
                                      plugins=[AtomicCheckpointIO()])
    resuming = recorded is not None
    mlflow_run = trainer.is_global_zero and isinstance(logger, MLFlowLogger)
    if mlflow_run:
        client, run_id = logger.experiment, logger.run_id
        if resuming:  # MLflow params are immutable: the resumed run keeps its first config
            client.set_tag(run_id, "resumed_from", str(cfg.ckpt_path))
        else:
            logger.log_hyperparams(flat_params(cfg))
            for key, value in provenance.tags().items():
                client.set_tag(run_id, key, value)
            log_config(client, run_id, cfg)
            for key, value in datamodule.class_counts().items():
                client.log_param(run_id, f"count.{key}", value)
        if fingerprint := data_fingerprint(datamodule):
            client.set_tag(run_id, "data_fingerprint", fingerprint)
        if not resuming:
            log_dataset(client, run_id, cfg, datamodule, "train")
        log_data_report(client, run_id, datamodule, folder)

    ckpt_path = None
    if cfg.ckpt_path is not None:
        wanted = folder / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path).expanduser()
        ckpt_path = str(resume_checkpoint(wanted.parent, wanted))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = callbacks["model_checkpoint"]
    best = checkpoint.best_model_path
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test_after_fit:
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True,
                              verbose=False)  # the summary prints them to 4 significant digits
        metrics.update(tested[0] if tested else {})
    if mlflow_run and best:
        log_file_as(logger.experiment, logger.run_id, Path(best), "checkpoints", "best.ckpt")
        logger.experiment.set_tag(logger.run_id, "best_checkpoint", best)
    metrics["best_model_score"] = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    metrics["best_checkpoint"] = best  # type: ignore[assignment]
    return metrics


def _hydra_output_dir() -> Path | None:
    """The job's Hydra output folder (its log and .hydra/ config), when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _print_summary(cfg: DictConfig, logger, metrics: dict, folder: Path) -> None:
    best = metrics.get("best_checkpoint") or "none (no validation epoch finished)"
    if isinstance(logger, MLFlowLogger):
        run = logger.experiment.get_run(logger.run_id)
        head = f"train run {run.info.run_name} ({run.info.run_id}) finished"
        where = f"  MLflow: {run_url(tracking_uri(cfg), run.info.experiment_id, run.info.run_id)}  (make ui)"
    else:
        head = "train run finished"
        where = f"  logged by {type(logger).__name__} to {logger.log_dir}" if logger is not None else "  not logged (logger=none)"
    lines = [head, f"  best checkpoint: {best} (val/video_auc {metrics.get('best_model_score', float('nan')):#.4g})"]
    tested = {k.removeprefix("test/video_"): v for k, v in metrics.items() if k.startswith("test/video_")}
    if tested:
        lines.append("  test (video level) of the best checkpoint: "
                     + ", ".join(f"{k.upper()} {tested[k]:#.4g}" for k in ("auc", "ap", "acc", "eer", "loss") if k in tested))
    lines += [where, f"  checkpoints: {folder}"]
    output = _hydra_output_dir()
    if output is not None:
        lines.append(f"  output: {output}")
    print("\n".join(lines))

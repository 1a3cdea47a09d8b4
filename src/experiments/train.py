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
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.experiments.checkpointing import AtomicCheckpointIO
from src.experiments.config import check_config
from src.experiments.hardware import trainer_precision
from src.experiments.runtime import tidy_output
from src.experiments.tracking import (
    Run,
    check_tracking_store,
    data_fingerprint,
    data_report_metrics,
    flat_params,
    run_name,
    run_tags,
    tracking_uri,
    uses_mlflow,
)
from src.experiments.tracking.run import selected_options
from src.experiments.wiring import build_datamodule, build_model, build_weights

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
    family = (
        Path(cfg.paths.checkpoint_dir)
        / f"{options['model']}-{options['weights']}-{options['data']}-fold{cfg.data.fold}"
    )
    if cfg.ckpt_path is None:
        return family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}", None
    key = resume_key(cfg)
    if cfg.ckpt_path == "last":
        folders = sorted(
            (p.parent for p in family.glob(f"run-*/{RUN_FILE}")), key=lambda p: p.stat().st_mtime
        )
        if not folders:
            raise FileNotFoundError(f"ckpt_path=last: no run of this configuration under {family}")
        for folder in reversed(folders):
            recorded = json.loads((folder / RUN_FILE).read_text())
            if recorded.get("resume_key") == key:
                return folder, recorded
        recorded = json.loads((folders[-1] / RUN_FILE).read_text())
        raise ResumeMismatch(
            f"ckpt_path=last: no run under {family} has this configuration; the newest ({folders[-1].name}) differs in "
            + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5])
        )
    folder = Path(cfg.ckpt_path).expanduser().resolve().parent
    record = folder / RUN_FILE
    if not record.is_file():
        return (
            family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
            None,
        )  # a foreign checkpoint
    recorded = json.loads(record.read_text())
    if recorded.get("resume_key") != key:
        raise ResumeMismatch(
            f"ckpt_path={cfg.ckpt_path}: the checkpoint's run trained another configuration: "
            + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5])
        )
    return folder, recorded


def resume_checkpoint(folder: Path, wanted: Path) -> Path:
    """`wanted`, or when it is unreadable (a kill mid-write on another filesystem, a full disk), the newest
    checkpoint in its folder that loads, with a warning."""
    candidates = [wanted] + sorted(
        (p for p in folder.glob("*.ckpt") if p != wanted), key=lambda p: -p.stat().st_mtime
    )
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            torch.load(candidate, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # truncated zip, not a checkpoint
            log.warning(
                "checkpoint %s is unreadable (%s: %s); trying an older one",
                candidate,
                type(error).__name__,
                error,
            )
            continue
        if candidate != wanted:
            log.warning("resuming from %s instead of the unreadable %s", candidate.name, wanted.name)
        return candidate
    raise FileNotFoundError(
        f"no readable checkpoint in {folder} to resume from (tried {', '.join(c.name for c in candidates)})"
    )


def start_run(cfg: DictConfig, recorded: dict | None) -> Run:
    """The run of `logger=`: an MLflow run resumes the recorded one or starts a uniquely named one; DDP
    workers log nothing themselves (Lightning routes it via rank 0)."""
    run_id = recorded.get("mlflow_run_id") if recorded else None
    if rank_zero_only.rank != 0:
        return Run(hydra.utils.instantiate(cfg.logger, run_id=run_id) if uses_mlflow(cfg.logger) else None)
    return Run.start(cfg.get("logger"), name=run_name(cfg), tags=run_tags(cfg), run_id=run_id)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit `cfg.model` on `cfg.data` from `cfg.weights`, select on val/* only, test the selected checkpoint."""
    check_config(cfg)
    tidy_output()
    if uses_mlflow(cfg.get("logger")):
        check_tracking_store(tracking_uri(cfg))  # in seconds, before any data or weights
    folder, recorded = run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = build_model(cfg)
    provenance = build_weights(cfg)(module)  # before the data: missing weights fail at once
    log.info("initial weights of %s: %s", cfg.model.name, provenance.initial_weights)
    # the data before the run: a dataset that cannot be used leaves no run behind, only its one-line error
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    folder.mkdir(parents=True, exist_ok=True)
    run = start_run(cfg, recorded)
    if rank_zero_only.rank != 0:  # a DDP worker: rank 0 owns the run's state and summary
        return _train(cfg, module, datamodule, folder, recorded, run, provenance)
    if run.is_mlflow:
        if recorded is None:
            (folder / RUN_FILE).write_text(
                json.dumps({"mlflow_run_id": run.id, "resume_key": resume_key(cfg)}, indent=1)
            )
        os.environ[FOLDER_ENV] = str(folder)
    with run.state():
        metrics = _train(cfg, module, datamodule, folder, recorded, run, provenance)
    _print_summary(
        run, metrics, folder, bool(cfg.trainer.get("fast_dev_run")), trainer_precision(cfg.trainer)
    )
    return metrics


def _record_start(cfg: DictConfig, run: Run, datamodule, folder: Path, resuming: bool, provenance) -> None:
    """What a training run records before fitting: config, provenance, class counts, dataset, data report."""
    if resuming:  # MLflow params are immutable: the resumed run keeps its first config
        run.set_tags({"resumed_from": str(cfg.ckpt_path)})
    else:
        run.log_params(flat_params(cfg))
        run.set_tags(provenance.tags())
        run.log_config(cfg)
        run.log_params({f"count.{k}": v for k, v in datamodule.class_counts().items()})
        fingerprint = data_fingerprint(datamodule) or "unknown"
        root = getattr(datamodule.index, "root", None) or cfg.data.get("root") or "-"
        run.log_dataset(f"{cfg.data.name}-fold{cfg.data.fold}", fingerprint, str(root), "train")
    if fingerprint := data_fingerprint(datamodule):
        run.set_tags({"data_fingerprint": fingerprint})
    report = datamodule.data_report()
    (folder / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    run.log_file(folder / "data_report.json")
    run.log_metrics(data_report_metrics(report))


def _train(
    cfg, module, datamodule, folder: Path, recorded: dict | None, run: Run, provenance
) -> dict[str, float]:
    if cfg.model.pos_weight == "auto":
        counts = datamodule.class_counts()
        module.set_pos_weight(counts["train_real"] / max(counts["train_fake"], 1))

    callbacks = {name: hydra.utils.instantiate(c) for name, c in cfg.callbacks.items() if c is not None}
    callbacks["model_checkpoint"].dirpath = str(folder)
    if run.logger is None:  # logger=none: nothing to record learning rates into (Lightning would refuse)
        callbacks = {
            k: c for k, c in callbacks.items() if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)
        }
    # logger=False, not None: Lightning would otherwise pick a default logger of its own
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=list(callbacks.values()),
        logger=run.logger or False,
        plugins=[AtomicCheckpointIO()],
    )
    precision = trainer_precision(cfg.trainer)
    if trainer.is_global_zero:
        log.info("training precision %s: %s", precision.precision, precision.reason)
        _record_start(cfg, run, datamodule, folder, recorded is not None, provenance)
        if recorded is None:
            run.log_params({"precision_reason": precision.reason})
    ckpt_path = None
    if cfg.ckpt_path is not None:
        wanted = folder / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path).expanduser()
        ckpt_path = str(resume_checkpoint(wanted.parent, wanted))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    checkpoint = callbacks["model_checkpoint"]
    best = checkpoint.best_model_path
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.test_after_fit:
        tested = trainer.test(
            module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False
        )  # the summary prints them to 4 significant digits
        metrics.update(tested[0] if tested else {})
    if trainer.is_global_zero and best:
        run.log_file(Path(best), "checkpoints", "best.ckpt")
        run.set_tags({"best_checkpoint": best})
    # the monitored value orders epochs (AUC, then loss); what a person reads is the selected epoch's AUC
    selected = (
        torch.load(best, map_location="cpu", weights_only=True, mmap=True).get("validation_metrics", {})
        if best
        else {}
    )
    metrics["best_val_video_auc"] = float(selected.get("val/video_auc", float("nan")))
    metrics["best_checkpoint"] = best  # type: ignore[assignment]
    return metrics


def _hydra_output_dir() -> Path | None:
    """The job's Hydra output folder (its log and .hydra/ config), when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _print_summary(run: Run, metrics: dict, folder: Path, fast_dev_run: bool, precision) -> None:
    nothing_saved = "fast_dev_run saves none: the test scored the last weights" if fast_dev_run else None
    best = metrics.get("best_checkpoint") or f"none ({nothing_saved or 'no validation epoch finished'})"
    lines = [
        f"best checkpoint: {best} (val/video_auc {metrics.get('best_val_video_auc', float('nan')):#.4g})"
    ]
    lines.append(f"trained in {precision.precision}: {precision.reason}")
    tested = {k.removeprefix("test/video_"): v for k, v in metrics.items() if k.startswith("test/video_")}
    if tested:
        lines.append(
            f"test (video level) of the {'last weights' if fast_dev_run else 'best checkpoint'}: "
            + ", ".join(
                f"{k.upper()} {tested[k]:#.4g}" for k in ("auc", "ap", "acc", "eer", "loss") if k in tested
            )
        )
    run.print_summary("train", lines, {"checkpoints": folder, "output": _hydra_output_dir()})

"""What `python train.py` runs: data, model, weights, callbacks and the run; fit, then test.

Model selection uses val/* only (Lightning's ModelCheckpoint and EarlyStopping, conf/callbacks/); where
a run keeps its checkpoints and how it resumes is src/experiments/checkpointing.py's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from src.experiments.checkpointing import (
    AtomicCheckpointIO,
    record_run,
    recorded_validation,
    resume_checkpoint,
    run_folder,
)
from src.experiments.cli import TaskRuns, task_wrapper
from src.experiments.hardware import trainer_precision
from src.experiments.sweeps.trials import trial_tags
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
from src.experiments.wiring import build_datamodule, build_model, load_weights

log = logging.getLogger(__name__)


def start_run(cfg: DictConfig, recorded: dict | None, runs: TaskRuns) -> Run:
    """The run of `logger=`: an MLflow run resumes the recorded one or starts a uniquely named one; DDP
    workers log nothing themselves (Lightning routes it via rank 0), and rank 0 owns the run's state."""
    run_id = recorded.get("mlflow_run_id") if recorded else None
    if rank_zero_only.rank != 0:
        return Run(hydra.utils.instantiate(cfg.logger, run_id=run_id) if uses_mlflow(cfg.logger) else None)
    return runs.start(cfg.get("logger"), name=run_name(cfg), tags=run_tags(cfg) | trial_tags(), run_id=run_id)


@task_wrapper
def train(cfg: DictConfig, runs: TaskRuns) -> dict[str, float]:
    """Fit `cfg.model` on `cfg.data` from `cfg.weights`, select on val/* only, test the selected checkpoint."""
    if uses_mlflow(cfg.get("logger")):
        check_tracking_store(tracking_uri(cfg))  # in seconds, before any data or weights
    folder, recorded = run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module = build_model(cfg)
    datamodule = build_datamodule(cfg)
    provenance = load_weights(cfg, module, datamodule)  # before the data work: missing weights fail at once
    log.info("initial weights of %s: %s", cfg.model.name, provenance.initial_weights)
    # the data before the run: a dataset that cannot be used leaves no run behind, only its one-line error
    datamodule.prepare_data()
    datamodule.setup("fit")
    run = start_run(cfg, recorded, runs)
    if rank_zero_only.rank != 0:  # a DDP worker: rank 0 owns the run's folder, state and summary
        return _train(cfg, module, datamodule, folder, recorded, run, provenance)
    folder.mkdir(parents=True, exist_ok=True)
    if run.is_mlflow and recorded is None:
        record_run(folder, run.id, cfg)
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
    selected = recorded_validation(best) if best else {}
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

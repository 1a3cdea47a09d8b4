"""What a task's run is named and tagged with: the chosen group options, fold, seed, input contract, titles,
sweep and user tags (`run_tags`), a readable unique name (`run_name`), and the config and data facts logged
beside them. Reads only the composed config and Hydra's runtime, so the tracking package needs nothing of the
data or model code to import (an Optuna trial's tags are added by train.py, the one task a search runs)."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def selected_options(cfg: DictConfig) -> dict[str, str]:
    """The chosen option of each tagged config group: the `model`, `weights`, `augment` and `data` tags.

    Args:
        cfg: a composed task config; `augment` is "none" where the task has no test-time perturbation
            (training).
    """
    return {
        "model": str(cfg.model.name),
        "weights": str(cfg.weights.source),
        "augment": str(cfg.augment.level) if cfg.get("augment") else "none",
        "data": str(cfg.data.name),
    }


def sweep_id() -> str | None:
    """The multirun's sweep folder name, shared by every job of one sweep (None for single runs)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        return None
    return Path(hydra_cfg.sweep.dir).name


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags every task's run carries: the chosen group options, fold, seed, the model's input contract,
    display titles (the report reads titles and order from the runs), the sweep, the debug preset and the
    user's `tags=[...]`. An Optuna trial's tags are not among them: train.py adds them.

    Args:
        cfg: the composed task config.
    """
    from src.models.weights import input_contract

    tags = selected_options(cfg)
    tags["fold"] = str(cfg.data.fold)
    tags["seed"] = str(cfg.seed)
    tags["input_contract"] = input_contract(cfg.model.input)
    tags["mlflow.source.name"] = f"{cfg.get('task', 'run')}.py"  # the UI's Source column
    tags["mlflow.source.type"] = "LOCAL"
    if cfg.get("train_augment"):
        tags["train_augment"] = str(cfg.train_augment.level)
    for key in ("title", "axis"):
        if cfg.get("augment") and cfg.augment.get(key) is not None:
            tags[f"augment_{key}"] = str(cfg.augment[key])
    if cfg.model.get("title"):
        tags["model_title"] = str(cfg.model.title)
    if sweep := sweep_id():
        tags["sweep_id"] = sweep
    if debug := _chosen("debug"):
        tags["debug"] = debug  # reports leave debugging runs out
    if cfg.get("tags"):
        tags["tags"] = ", ".join(str(t) for t in cfg.tags)
        tags.update({f"tag.{t}": "true" for t in cfg.tags})  # searchable: tags.`tag.baseline` = 'true'
    return tags


def _chosen(group: str) -> str | None:
    """The option of a config group chosen on the command line or in the defaults (Hydra's runtime
    choices), when run through Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return None if choice in (None, "null") else str(choice)


def run_name(cfg: DictConfig) -> str:
    """<model>-<weights>-<data>-<augment>-f<fold>-s<seed>-<4 random hex>: readable and unique (MLflow's own
    random names come from the seeded RNG, so every seeded run got the same one).

    Args:
        cfg: the composed task config.
    """
    o = selected_options(cfg)
    return unique_name(f"{o['model']}-{o['weights']}-{o['data']}-{o['augment']}-f{cfg.data.fold}-s{cfg.seed}")


def unique_name(readable: str) -> str:
    """`readable` with 4 random hex digits: two runs of the same command get different names.

    Args:
        readable: the name's readable part.
    """
    return f"{readable}-{secrets.token_hex(2)}"


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b.c` params (MLflow params are strings of at most 6000 chars).

    Args:
        cfg: the composed config.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = str(value)[:6000]

    walk("", container)
    return flat


def data_fingerprint(datamodule) -> str | None:
    """The index fingerprint (root and split files) of a prepared datamodule, for lineage tags.

    Args:
        datamodule: a prepared data module (None where it has no index with a fingerprint).
    """
    fingerprint = getattr(getattr(datamodule, "index", None), "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


def data_report_metrics(report: dict) -> dict[str, float]:
    """The headline counts of the data package's report on the face crops (failed, degraded and
    centre-fallback videos, detection rate) as `data/*` metrics.

    Args:
        report: that report, with its `summary`.
    """
    summary = report["summary"]
    return {
        f"data/{metric}": float(summary[key])
        for metric, key in (
            ("skipped_videos", "failed_videos"),
            ("degraded_videos", "degraded_videos"),
            ("centre_fallback_videos", "centre_fallback_videos"),
            ("frame_detection_rate", "frame_detection_rate"),
            ("mostly_undetected_videos", "mostly_undetected_videos"),
        )
        if key in summary
    }

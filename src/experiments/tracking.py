"""MLflow tracking: store location, run tags, the resolved config and artifacts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.experiments.config import PROJECT_ROOT, selected_options

TRAIN_EXPERIMENT = "train"
EVALUATE_EXPERIMENT = "evaluate"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """logger.tracking_uri, else MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db."""
    if cfg is not None and cfg.get("logger") is not None and cfg.logger.get("tracking_uri"):
        return str(cfg.logger.tracking_uri)
    return default_tracking_uri()


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
    tags = selected_options(cfg)
    tags["fold"] = str(cfg.data.fold)
    if sweep := sweep_id():
        tags["sweep_id"] = sweep
    return tags


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b.c` params (MLflow params are strings of at most 6000 chars)."""
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


def log_config(client, run_id: str, cfg: DictConfig) -> None:
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_file_as(client, run_id: str, source: Path, artifact_dir: str, name: str) -> None:
    """Log `source` under `artifact_dir/name` (MLflow keeps the file's own name, so copy it first)."""
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        shutil.copyfile(source, target)
        client.log_artifact(run_id, str(target), artifact_dir)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:///<path> URI (SQLAlchemy: sqlite:////abs, sqlite:///relative)."""
    from urllib.parse import unquote

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix):].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def experiment_id(client, uri: str, name: str) -> str:
    """Id of experiment `name`, created if needed. In a sqlite store its artifacts go next to the
    database file (mlruns/), not into whatever directory the command happens to run in."""
    import mlflow

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_file(uri)
    location = (db.resolve().parent / "mlruns").as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # a parallel job created it first
        return client.get_experiment_by_name(name).experiment_id

"""The tracking store: where it is (MLFLOW_TRACKING_URI, logger.tracking_uri, the project's SQLite file),
whether it can be used, its experiments, links into its UI, and reading it. The only place an MLflow client
is constructed (`client`)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.experiments.locations import CONFIG_DIR
from src.utils.errors import UserError

TRAIN_EXPERIMENT = "train"
EVALUATE_EXPERIMENT = "evaluate"
# shown in the MLflow UI's experiment header
DESCRIPTIONS = {
    "train": "Training runs (train.py): per-epoch val/* metrics, test/* of the best checkpoint, "
    "checkpoints/best.ckpt. Tags: model, weights, data, fold, seed, data_fingerprint.",
    "evaluate": "Evaluation runs (evaluate.py): test/video_* metrics with 95 % bootstrap intervals "
    "(_ci_low/_ci_high), per-video scores, ROC. Filter a sweep with tags.sweep_id = '...'.",
    "report": "The tables, paired comparisons and robustness chart of one evaluate sweep (make report).",
    "audit": "Shortcut audits (make audit): real-vs-fake AUC of cheap features per dataset.",
    "predict": "Batch predictions (predict.py videos=...): the CSV of P(fake) per video file, counts of "
    "scored and fake-looking videos. Tags: model, weights, videos.",
}
STORE_TIMEOUT_S = 5.0


class TrackingStoreError(UserError):
    """The MLflow store cannot be used: raised before any work starts."""


def default_tracking_uri() -> str:
    """`paths.tracking_uri` of conf/paths/default.yaml, the one place the default store is defined:
    MLFLOW_TRACKING_URI when set, else sqlite:///<project root>/mlflow.db."""
    paths = OmegaConf.create({"paths": OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")})
    return str(OmegaConf.select(paths, "paths.tracking_uri"))


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """logger.tracking_uri, else MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db."""
    if cfg is not None and cfg.get("logger") is not None and cfg.logger.get("tracking_uri"):
        return str(cfg.logger.tracking_uri)
    return default_tracking_uri()


def client(uri: str):
    """An MLflow client of the store at `uri`, for reading it (searching runs, downloading artifacts)."""
    import mlflow

    return mlflow.MlflowClient(uri)


def download_artifact(uri: str, run_id: str, artifact_path: str, destination: str) -> str:
    """A run's artifact downloaded into `destination`; its local path."""
    import mlflow

    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=destination, tracking_uri=uri
    )


def ui_base(uri: str, port: int | None = None) -> str:
    """The MLflow UI of a store: the server itself for http stores, else `make ui` on 127.0.0.1."""
    return (
        uri.rstrip("/")
        if uri.startswith(("http://", "https://"))
        else f"http://127.0.0.1:{port or os.environ.get('PORT', 5000)}"
    )


# MLflow 3's UI opens on its GenAI pages unless the link picks the classic "Model training" view
UI_VIEW = "workflowType=machine_learning"


def run_url(uri: str, experiment_id: str, run_id: str, port: int | None = None) -> str:
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"


def experiment_url(uri: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}?{UI_VIEW}"


# -- the store ------------------------------------------------------------------------------------
def check_tracking_store(uri: str, timeout: float = STORE_TIMEOUT_S) -> None:
    """Fail in seconds with one line, before any data or weights are touched, when the store cannot be
    used: an unreachable server, a corrupt or read-only SQLite file, an unwritable folder."""
    import sqlite3
    import urllib.error
    import urllib.request

    fix = "set MLFLOW_TRACKING_URI (or logger.tracking_uri=) to a store that works"
    if uri.startswith(("http://", "https://")):
        url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's tracking server
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:  # the server answers (e.g. auth): let MLflow report the details
                return
            raise TrackingStoreError(
                f"MLflow tracking server {uri} answered HTTP {error.code}; {fix}"
            ) from None
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise TrackingStoreError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it (make ui) or {fix}"
            ) from None
    db = sqlite_file(uri)
    if db is not None:
        folder = db.resolve().parent
        if not folder.is_dir():
            raise TrackingStoreError(f"MLflow store {uri}: folder {folder} does not exist; {fix}")
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout) as connection:
                    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as error:
                raise TrackingStoreError(
                    f"MLflow store {db} is not a usable SQLite database ({error}); move it away or {fix}"
                ) from None
            if not os.access(db, os.W_OK):
                raise TrackingStoreError(f"MLflow store {db} is read-only; {fix}")
        if not os.access(folder, os.W_OK):
            raise TrackingStoreError(f"MLflow store {uri}: folder {folder} is not writable; {fix}")
        return
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK):
            raise TrackingStoreError(f"MLflow store {uri} is not writable; {fix}")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:///<path> URI (SQLAlchemy: sqlite:////abs, sqlite:///relative)."""
    from urllib.parse import unquote

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix) :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def experiment_id(client, uri: str, name: str) -> str:
    """Id of experiment `name`, created if needed. In a sqlite store its artifacts go next to the
    database file (mlruns/), not into whatever directory the command happens to run in."""
    import mlflow

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if (
            name in DESCRIPTIONS and "mlflow.note.content" not in experiment.tags
        ):  # a store from an older version
            client.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", DESCRIPTIONS[name])
        return experiment.experiment_id
    db = sqlite_file(uri)
    location = (db.resolve().parent / "mlruns").as_uri() if db is not None else None
    # a classic ML experiment opens on its runs table in the UI, not on the GenAI traces page
    tags = {"mlflow.experimentKind": "custom_model_development"}
    if name in DESCRIPTIONS:
        tags["mlflow.note.content"] = DESCRIPTIONS[name]
    try:
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except mlflow.exceptions.MlflowException:  # a parallel job created it first
        return client.get_experiment_by_name(name).experiment_id

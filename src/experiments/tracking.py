"""MLflow tracking: store location and health, experiments, run names and tags, run states, artifacts."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.experiments.config import CONFIG_DIR, UserError, selected_options, stop_signals

log = logging.getLogger(__name__)

TRAIN_EXPERIMENT = "train"
EVALUATE_EXPERIMENT = "evaluate"
# shown in the MLflow UI's experiment header
DESCRIPTIONS = {
    "train": "Training runs (train.py): per-epoch val/* metrics, test/* of the best checkpoint, "
    "checkpoints/best.ckpt. Tags: model, weights, data, fold, seed, data_fingerprint.",
    "evaluate": "Evaluation runs (evaluate.py): test/video_* metrics with 95 % bootstrap intervals "
    "(_ci_low/_ci_high), per-video scores, ROC. Filter a sweep with tags.sweep_id = '...'.",
    "report": "The seed study's tables and robustness chart for one evaluate sweep (make report).",
    "audit": "Shortcut audits (make audit): real-vs-fake AUC of cheap features per dataset.",
    "predict": "Batch predictions (evaluate.py videos=...): the CSV of P(fake) per video file, counts of "
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


def logger_class(cfg: DictConfig) -> type | None:
    """The Lightning logger class `logger=` names (its `_target_`), or None for logger=none / ~logger."""
    import hydra

    target = OmegaConf.select(cfg, "logger._target_", default=None)
    return hydra.utils.get_class(str(target)) if target else None


def uses_mlflow(cfg: DictConfig) -> bool:
    """Whether the configured logger writes to an MLflow store (MLFlowLogger or a subclass)."""
    from lightning.pytorch.loggers import MLFlowLogger

    cls = logger_class(cfg)
    return cls is not None and issubclass(cls, MLFlowLogger)


def build_logger(cfg: DictConfig, **run):
    """The logger `logger=` configures, built by Hydra from its `_target_`; None for logger=none.

    An MLflow logger writes to `tracking_uri(cfg)`, into an experiment created first (classic ML kind,
    with its description, artifacts next to the store), with the run's `run` arguments (tags, run_name,
    run_id); its run exists when this returns. Other Lightning loggers are built as configured."""
    import hydra

    if logger_class(cfg) is None:
        return None
    if not uses_mlflow(cfg):
        return hydra.utils.instantiate(cfg.logger)
    uri = tracking_uri(cfg)
    experiment_id(_client(uri), uri, str(cfg.logger.experiment_name))
    logger = hydra.utils.instantiate(cfg.logger, tracking_uri=uri, **run)
    logger.run_id  # noqa: B018 - creates the run now, so that it is recorded before any work
    return logger


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


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
    """Tags every run carries: the chosen group options, fold, seed, the model's input contract and
    display titles (the report reads titles and order from the runs), and the sweep."""
    from src.models.weights import input_contract

    tags = selected_options(cfg)
    tags["fold"] = str(cfg.data.fold)
    tags["seed"] = str(cfg.seed)
    tags["input_contract"] = input_contract(cfg.model.input)
    tags["mlflow.source.name"] = f"{cfg.get('task', 'run')}.py"  # the UI's Source column
    tags["mlflow.source.type"] = "LOCAL"
    for key in ("title", "axis"):
        if cfg.augment.get(key) is not None:
            tags[f"augment_{key}"] = str(cfg.augment[key])
    if cfg.model.get("title"):
        tags["model_title"] = str(cfg.model.title)
    if sweep := sweep_id():
        tags["sweep_id"] = sweep
    return tags


def run_name(cfg: DictConfig) -> str:
    """<model>-<weights>-<data>-<augment>-f<fold>-s<seed>-<4 random hex>: readable and unique (MLflow's own
    random names come from the seeded RNG, so every seeded run got the same one)."""
    o = selected_options(cfg)
    return unique_name(f"{o['model']}-{o['weights']}-{o['data']}-{o['augment']}-f{cfg.data.fold}-s{cfg.seed}")


def unique_name(readable: str) -> str:
    """`readable` with 4 random hex digits: two runs of the same command get different names."""
    return f"{readable}-{secrets.token_hex(2)}"


def ui_base(uri: str, port: int | None = None) -> str:
    """The MLflow UI of a store: the server itself for http stores, else `make ui` on 127.0.0.1."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port or os.environ.get('PORT', 5000)}"


# MLflow 3's UI opens on its GenAI pages unless the link picks the classic "Model training" view
UI_VIEW = "workflowType=machine_learning"


def run_url(uri: str, experiment_id: str, run_id: str, port: int | None = None) -> str:
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"


def run_link(uri: str, run_id: str) -> str:
    """The UI link of a run known by its id alone (the store says its experiment)."""
    import mlflow

    return run_url(uri, mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id, run_id)


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
            raise TrackingStoreError(f"MLflow tracking server {uri} answered HTTP {error.code}; {fix}") from None
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise TrackingStoreError(f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                                     f"(make ui) or {fix}") from None
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
                raise TrackingStoreError(f"MLflow store {db} is not a usable SQLite database ({error}); "
                                         f"move it away or {fix}") from None
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


# -- run states -----------------------------------------------------------------------------------
class RunInterrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGINT, SIGHUP): the run ends as KILLED, the process with 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interruptible():
    """Turn SIGTERM, SIGINT and SIGHUP into RunInterrupted in the main thread, so that every layer unwinds
    (Lightning chains this handler after its own); the previous handlers come back afterwards."""
    received: list[int] = []

    def handler(signum, frame):
        if not received:  # the first signal interrupts; a repeat while unwinding is ignored
            received.append(signum)
            raise RunInterrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in stop_signals()}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def run_state(client, run_id: str):
    """End the MLflow run in the state it reached, whatever happens: FINISHED, FAILED with an `error` tag,
    or KILLED on SIGTERM/SIGINT (then the process exits with 128 + signal). Never left RUNNING."""
    with interruptible() as received:
        try:
            yield
        except BaseException as error:
            # the signal as our handler saw it, or as another layer's handler turned it into an exception
            signum = received[0] if received else getattr(error, "signum", None)
            if signum is None and isinstance(error, KeyboardInterrupt):
                signum = signal.SIGINT
            status = "KILLED" if signum is not None else "FAILED"
            message = f"interrupted by {signal.Signals(signum).name}" if signum else f"{type(error).__name__}: {error}"
            _terminate(client, run_id, status, message)
            if signum is not None:
                print(f"Run {run_id} {message}: marked KILLED", file=sys.stderr)
                raise SystemExit(128 + signum) from None
            raise
    _terminate(client, run_id, "FINISHED")


def _terminate(client, run_id: str, status: str, error: str | None = None) -> None:
    """The final status first (a Lightning logger may have written FAILED before), then the error tag;
    a store that fails is tried once more, then named, keeping the original error."""
    for attempt in (1, 2):
        try:
            client.set_terminated(run_id, status)
            if error:
                client.set_tag(run_id, "error", error[:5000])
            return
        except Exception as problem:
            if attempt == 2:
                log.error("could not mark MLflow run %s %s: %s", run_id, status, problem)
            else:
                time.sleep(1.0)


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
        if name in DESCRIPTIONS and "mlflow.note.content" not in experiment.tags:  # a store from an older version
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


def data_fingerprint(datamodule) -> str | None:
    """The index fingerprint (root and split files) of a prepared datamodule, for lineage tags."""
    fingerprint = getattr(getattr(datamodule, "index", None), "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


def write_data_report(datamodule, folder: Path) -> dict:
    """The datamodule's data report as `<folder>/data_report.json`."""
    import json

    report = datamodule.data_report()
    (Path(folder) / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def data_report_metrics(report: dict) -> dict[str, float]:
    """The data report's headline counts as `data/*` metrics."""
    summary = report["summary"]
    return {f"data/{metric}": float(summary[key]) for metric, key in (
        ("skipped_videos", "failed_videos"), ("degraded_videos", "degraded_videos"),
        ("centre_fallback_videos", "centre_fallback_videos"), ("frame_detection_rate", "frame_detection_rate"),
        ("mostly_undetected_videos", "mostly_undetected_videos")) if key in summary}


def log_data_report(client, run_id: str, datamodule, folder: Path) -> dict:
    """The data report as the artifact `data_report.json` and its `data/*` metrics."""
    import mlflow

    report = write_data_report(datamodule, folder)
    client.log_artifact(run_id, str(Path(folder) / "data_report.json"))
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in data_report_metrics(report).items()])
    return report


def log_dataset(client, run_id: str, cfg: DictConfig, datamodule, context: str) -> None:
    """The dataset and fold through MLflow's dataset tracking, so the UI's Dataset column shows them:
    name `<data>-fold<k>`, digest the index fingerprint, source the dataset root; context train / test."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    root = getattr(getattr(datamodule, "index", None), "root", None) or cfg.data.get("root") or "-"
    dataset = MetaDataset(source=LocalArtifactDatasetSource(str(root)), name=f"{cfg.data.name}-fold{cfg.data.fold}",
                          digest=(data_fingerprint(datamodule) or "unknown")[:36])
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     tags=[InputTag("mlflow.data.context", context)])])

"""Runs: the one interface every task (train, evaluate, predict, report, audit) writes its run through.

`Run` wraps the Lightning logger `logger=` builds -- an MLflow run through Lightning's own MLFlowLogger, a
CSVLogger folder, or nothing (logger=none) -- with one set of verbs: tags, params, metrics, files, the
dataset, the run's final state and its summary. What a run is named and tagged with is tags.py's.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.experiments.tracking.store import client, default_tracking_uri, experiment_id, run_url
from src.utils.signals import SignalExit, signals_raise

log = logging.getLogger(__name__)


def uses_mlflow(logger_cfg) -> bool:
    """Whether a `logger` config writes to an MLflow store (Lightning's MLFlowLogger or a subclass)."""
    import hydra
    from lightning.pytorch.loggers import MLFlowLogger

    target = OmegaConf.select(logger_cfg, "_target_", default=None) if logger_cfg is not None else None
    return bool(target) and issubclass(hydra.utils.get_class(str(target)), MLFlowLogger)


# -- the run -----------------------------------------------------------------------------------------
class Run:
    """One task's run, wherever `logger=` sends it: an MLflow run (Lightning's MLFlowLogger), another
    Lightning logger's folder (CSVLogger: tags and params in hparams.yaml, metrics in metrics.csv, files
    beside them), or nowhere (logger=none: the files stay in the task's output folder)."""

    def __init__(self, logger, uri: str | None = None):
        from lightning.pytorch.loggers import MLFlowLogger

        self.logger, self.uri = logger, uri
        self.is_mlflow = isinstance(logger, MLFlowLogger)
        if logger is not None:
            logger.experiment  # noqa: B018 - creates the run (or folder) now, before any work is recorded

    @classmethod
    def start(
        cls,
        logger_cfg,
        *,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> Run:
        """The run of the logger `logger_cfg` configures (`_target_`; None for logger=none). An MLflow run goes
        into its experiment, created first (classic ML kind, with its description, artifacts next to the
        store), named `name` and tagged `tags` -- or continues `run_id`; another logger keeps the tags with its
        params."""
        import hydra

        if logger_cfg is None or not logger_cfg.get("_target_"):
            return cls(None)
        if not uses_mlflow(logger_cfg):
            run = cls(hydra.utils.instantiate(logger_cfg))
            run.set_tags(tags or {})
            return run
        uri = str(logger_cfg.get("tracking_uri") or default_tracking_uri())
        experiment_id(client(uri), uri, str(logger_cfg.experiment_name))
        arguments = {"run_id": run_id} if run_id else {"run_name": name, "tags": tags}
        return cls(hydra.utils.instantiate(logger_cfg, tracking_uri=uri, **arguments), uri)

    # -- what it is ----------------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        return self.logger.run_id if self.is_mlflow else None

    @property
    def store(self):
        """The MLflow client of the run's store (MLflow runs only)."""
        return self.logger.experiment

    @property
    def folder(self) -> Path | None:
        """The logger's own folder for files (CSVLogger), if it has one."""
        log_dir = None if self.is_mlflow or self.logger is None else getattr(self.logger, "log_dir", None)
        return Path(log_dir) if log_dir else None

    def link(self) -> str:
        """Where a person finds the run: the MLflow UI page, the logger's folder, or 'not logged'."""
        if self.is_mlflow:
            info = self.store.get_run(self.id).info
            return f"MLflow: {run_url(self.uri or default_tracking_uri(), info.experiment_id, self.id)}  (make ui)"
        if self.logger is None:
            return "not logged (logger=none)"
        return f"logged by {type(self.logger).__name__} to {self.folder or self.logger.save_dir}"

    def name(self) -> str | None:
        return self.store.get_run(self.id).info.run_name if self.is_mlflow else None

    # -- what it records -----------------------------------------------------------------------------
    def set_tags(self, tags: dict[str, str]) -> None:
        if self.is_mlflow:
            import mlflow

            self.store.log_batch(
                self.id, tags=[mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in tags.items()]
            )
        elif self.logger is not None:
            self.logger.log_hyperparams({f"tags.{k}": v for k, v in tags.items()})

    def log_params(self, params: dict) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams(params)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_file(self, path: Path, artifact_dir: str | None = None, name: str | None = None) -> None:
        """`path` among the run's files, under `artifact_dir/name` (name: the file's own)."""
        path = Path(path)
        if self.is_mlflow:
            with tempfile.TemporaryDirectory() as tmp:  # MLflow keeps a file's own name: copy to rename
                source = path if name in (None, path.name) else Path(shutil.copyfile(path, Path(tmp) / name))
                self.store.log_artifact(self.id, str(source), artifact_dir)
        elif self.folder is not None:
            target = self.folder / (artifact_dir or "") / (name or path.name)
            if target.resolve() != path.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)

    def log_folder(self, folder: Path) -> None:
        """Every file of `folder` among the run's files."""
        if self.is_mlflow:
            self.store.log_artifacts(self.id, str(folder))
        elif self.folder is not None and Path(folder).resolve() != self.folder.resolve():
            shutil.copytree(folder, self.folder, dirs_exist_ok=True)

    def log_text(self, text: str, name: str) -> None:
        if self.is_mlflow:
            self.store.log_text(self.id, text, name)
        elif self.folder is not None:
            (self.folder / name).write_text(text)

    def log_config(self, cfg: DictConfig) -> None:
        """The fully resolved config as `config.yaml`."""
        self.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """The dataset through MLflow's dataset tracking, so the UI's Dataset column shows it (MLflow only)."""
        if not self.is_mlflow:
            return
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        # the entity MLflow's own MetaDataset(LocalArtifactDatasetSource(...)) makes, built with the public API
        dataset = Dataset(name, digest[:36], "local", json.dumps({"uri": source}))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        for attempt in (1, 2):
            try:
                self.store.log_inputs(self.id, datasets=inputs)
                return
            except MlflowException as error:
                # parallel jobs of a sweep log the same dataset: the store checks for it, then inserts it, and
                # the second insert fails on the unique key; by then the row exists and a retry links it
                if attempt == 2 or "UNIQUE constraint failed: datasets" not in str(error):
                    raise
                time.sleep(0.5)

    @contextmanager
    def files(self, name: str) -> Iterator[Path]:
        """A folder for the run's files, logged whole at the end: the logger's own (CSVLogger); else `name/` in
        the job's Hydra output folder (without Hydra's own files); outside Hydra a temporary folder, removed
        afterwards when MLflow keeps the files."""
        from hydra.core.hydra_config import HydraConfig

        if self.folder is not None:
            yield self.folder
        elif HydraConfig.initialized():
            folder = Path(HydraConfig.get().runtime.output_dir) / name
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            self.log_folder(folder)
        elif self.is_mlflow:
            with tempfile.TemporaryDirectory() as tmp:
                yield Path(tmp)
                self.log_folder(Path(tmp))
        else:
            yield Path(tempfile.mkdtemp(prefix=f"{name}-"))

    # -- how it ends -------------------------------------------------------------------------------
    @contextmanager
    def state(self):
        """End the run in the state it reached, whatever happens: FINISHED; FAILED with an `error` tag; or
        KILLED on a stop signal (SignalExit), and the process exits with 128 + signal. Never left RUNNING."""
        with signals_raise():
            try:
                yield self
            except BaseException as error:
                signum = getattr(error, "signum", None)
                if signum is None and isinstance(error, KeyboardInterrupt):
                    signum = 2  # SIGINT
                message = str(SignalExit(signum)) if signum else f"{type(error).__name__}: {error}"
                self._end("KILLED" if signum else "FAILED", message)
                if signum:
                    print(f"Run {self.id or ''} {message}: marked KILLED".replace("  ", " "), file=sys.stderr)
                    raise SystemExit(128 + signum) from None
                raise
        self._end("FINISHED")

    def _end(self, status: str, error: str | None = None) -> None:
        """The final status first (Lightning's logger may have written FAILED before), then the error tag;
        a store that fails is tried once more, then named, keeping the original error."""
        if not self.is_mlflow:
            if self.logger is not None:
                self.logger.finalize("success" if status == "FINISHED" else "failed")
            return
        for attempt in (1, 2):
            try:
                self.store.set_terminated(self.id, status)
                if error:
                    self.store.set_tag(self.id, "error", error[:5000])
                return
            except Exception as problem:
                if attempt == 2:
                    log.error("could not mark MLflow run %s %s: %s", self.id, status, problem)
                else:
                    time.sleep(1.0)

    def print_summary(self, task: str, lines: list[str], folders: dict[str, Path | str | None]) -> None:
        """The one run summary every task ends with: what ran, its numbers, the run's link, its folders."""
        head = f"{task} run {self.name()} ({self.id}) finished" if self.is_mlflow else f"{task} run finished"
        where = [f"  {name}: {folder}" for name, folder in folders.items() if folder is not None]
        print("\n".join([head, *(f"  {line}" for line in lines), f"  {self.link()}", *where]))

"""What happens around a sweep's jobs (Hydra callbacks, configured in conf/hydra/default.yaml): every job's
config checked and the data prepared once before the first job; a table of the jobs after the last."""

from __future__ import annotations

import logging
import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.experiments.config import check_config, config_error_line
from src.experiments.sweeps.trials import is_optuna, trials_table
from src.experiments.runtime import quieter, tidy_output
from src.experiments.tracking import (
    TrackingStoreError,
    check_tracking_store,
    client,
    experiment_id,
    experiment_url,
    tracking_uri,
    uses_mlflow,
)
from src.experiments.wiring import build_datamodule
from src.utils.errors import ConfigError

log = logging.getLogger(__name__)
# the running sweep, for its summary when a job failed: Hydra then raises the first job's error after the
# last job instead of calling on_multirun_end
_SWEEP: dict = {}


class PrepareSweep(Callback):
    """Before a sweep's jobs start: create the MLflow store and experiment, generate the dataset
    and build the face-crop cache, once.

    Parallel jobs then never race to create the SQLite schema or the same cache entries, and a
    sweep decodes each video once whatever the number of jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        tidy_output()
        _SWEEP.clear()
        _SWEEP.update(config=config, failed=[], jobs=0)
        check_jobs(config)  # a bad value in any job: one line now, not after the data work and the first jobs
        if uses_mlflow(config.get("logger")):
            uri = tracking_uri(config)
            try:  # one line and no job started, rather than every job retrying an unusable store
                check_tracking_store(uri)
            except TrackingStoreError as error:
                print(f"Error: {error}", file=sys.stderr)
                raise SystemExit(1) from None
            experiment_id(client(uri), uri, config.logger.experiment_name)
        if config.get("task") in ("predict", "prepare"):  # no index; prepare's jobs build their own shards
            return
        try:  # the first job prints the data summary; progress and warnings stay
            with quieter("src.data"):
                build_datamodule(config).prepare_data()
        except Exception as error:  # each job prepares its own data too, and reports the error there
            log.warning("could not prepare the data before the sweep: %s", error)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        _SWEEP["jobs"] = _SWEEP.get("jobs", 0) + 1
        if job_return.status == JobStatus.FAILED:
            _SWEEP.setdefault("failed", []).append((job_return.overrides, job_return._return_value))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """The sweep's id, a table of its jobs (cell, test video AUC, status) and how to report it; for an
        Optuna search, the study's trials and best parameters."""
        _print_summary(config)
        if is_optuna(config.hydra):
            try:
                print(trials_table(config.hydra))
            except Exception as error:  # a courtesy, as the summary
                log.warning("could not list the Optuna study's trials: %s", error)
        _SWEEP.clear()


def check_jobs(config: DictConfig) -> None:
    """Compose and check the sweep's jobs before any runs: enough of them that every value of every swept key
    is seen once (a grid of 3 x 2 x 2 needs at most 7 of its 12 configs). The Trainer is built too, except
    for a Slurm launcher, whose jobs run on nodes whose hardware this machine may not have."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, OverrideParseException

    task = list(config.hydra.overrides.task)
    common = set(task)
    # as BasicSweeper: the config's sweep, then the command line. An Optuna search's params are ranges the
    # sampler draws from: its first job (the command line alone) is checked
    params = {} if is_optuna(config.hydra) else (config.hydra.sweeper.get("params") or {})
    task = [f"{key}={value}" for key, value in params.items()] + task
    try:
        parsed = OverridesParser.create().parse_overrides(task)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except OverrideParseException:
        return  # Hydra's own sweeper reports it next
    seen: set[str] = set()
    build = "slurm" not in str(config.hydra.launcher.get("_target_", "")).lower()
    for job in jobs:
        if set(job) <= seen:
            continue
        seen.update(job)
        cell = _cell(job, common)
        try:
            check_config(compose(str(config.hydra.job.config_name), overrides=job), build=build)
        except (ConfigCompositionException, OverrideParseException) as error:
            line = config_error_line(error)
        except ConfigError as error:
            line = f"ConfigError: {error}"
        else:
            continue
        print(f"Error: {line}" + (f" (job {cell})" if cell else "") + "; no job was started", file=sys.stderr)
        raise SystemExit(1)


def _cell(job: list[str], common: set[str]) -> str:
    """A job's own overrides: those the command line does not give every job alike."""
    return " ".join(o for o in job if o not in common)


def _print_summary(config: DictConfig) -> None:
    from pathlib import Path

    if not uses_mlflow(config.get("logger")):
        return
    sweep = Path(str(config.hydra.sweep.dir)).name  # the config Hydra passes here carries its hydra node
    try:
        print(sweep_summary(config, sweep))
    except Exception as error:  # the summary is a courtesy: never fail a finished sweep over it
        log.warning("could not summarise sweep %s: %s", sweep, error)


def report_failed_sweep(error: BaseException) -> bool:
    """After a sweep whose jobs failed (Hydra raises the first job's error once all have run): the job table
    anyway, then one line per failed job. False when no sweep of ours was running."""
    if "config" not in _SWEEP or not _SWEEP.get("failed"):
        return False
    failed, jobs = _SWEEP["failed"], _SWEEP.get("jobs", 0)
    _print_summary(_SWEEP["config"])
    common = set(_SWEEP["config"].hydra.overrides.task)
    for overrides, problem in failed:
        cell = _cell(overrides, common) or " ".join(overrides)
        print(
            f"Error: job {cell} failed: {type(problem).__name__}: {problem}".splitlines()[0], file=sys.stderr
        )
    print(f"Error: {len(failed)} of {jobs} jobs failed (their output folders hold the logs)", file=sys.stderr)
    _SWEEP.clear()
    return True


def sweep_summary(config: DictConfig, sweep: str) -> str:
    uri = tracking_uri(config)
    store = client(uri)
    experiment = store.get_experiment_by_name(config.logger.experiment_name)
    runs = (
        []
        if experiment is None
        else store.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.sweep_id = '{sweep}'",
            order_by=["attributes.start_time ASC"],
        )
    )
    lines = [f"Sweep {sweep}: {len(runs)} runs in experiment '{config.logger.experiment_name}' of {uri}"]
    seeds = (
        len({run.data.tags.get("seed") for run in runs}) > 1
    )  # a seed sweep: otherwise its cells look alike
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        cell = (
            "/".join(tags.get(k, "?") for k in ("model", "weights", "data", "augment"))
            + f" fold {tags.get('fold')}"
        )
        cell += f" seed {tags.get('seed')}" if seeds else ""
        auc = metrics.get("test/video_auc")
        value = "–" if auc is None else f"{auc:#.4g}"
        if "test/video_auc_ci_low" in metrics:
            value += f" [{metrics['test/video_auc_ci_low']:.3g}, {metrics['test/video_auc_ci_high']:.3g}]"
        lines.append(f"  {cell:<48} test video AUC {value:<22} {run.info.status}")
    if experiment is not None:
        link = experiment_url(uri, experiment.experiment_id)
        lines.append(f"MLflow: {link}  (make ui), search: tags.sweep_id = '{sweep}'")
    if config.logger.experiment_name == "evaluate":
        lines.append(f"Report: make report SWEEP={sweep}")
    return "\n".join(lines)

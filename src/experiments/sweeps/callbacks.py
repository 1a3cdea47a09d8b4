"""What happens around a sweep's jobs (Hydra callbacks, configured in conf/hydra/default.yaml): every job's
config checked and the data prepared once before the first job; a table of the jobs after the last."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.experiments.config import check_config, config_error_line
from src.experiments.console import quieter, tidy_output
from src.experiments.sweeps.files import CHECKED_JOBS, JOB_ERROR, SWEEP_CONFIG
from src.experiments.sweeps.trials import is_optuna, trials_table
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
# the sweep's summary is printed from its folder's files also when a job failed (Hydra then raises the
# first job's error after the last job instead of calling on_multirun_end)


class PrepareSweep(Callback):
    """Before a sweep's jobs start: create the MLflow store and experiment, generate the dataset
    and build the face-crop cache, once.

    Parallel jobs then never race to create the SQLite schema or the same cache entries, and a
    sweep decodes each video once whatever the number of jobs.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        tidy_output()
        checked = check_jobs(config)  # a bad value in any job: one line now, not after the data work
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_CONFIG).write_text(OmegaConf.to_yaml(_summary_config(config)))
        (sweep_dir / CHECKED_JOBS).write_text(json.dumps(checked))
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

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """The sweep's id, a table of its jobs (cell, test video AUC, status) and how to report it; for an
        Optuna search, the study's trials and best parameters."""
        _print_summary(_summary_config(config), Path(str(config.hydra.sweep.dir)).name)
        if is_optuna(config.hydra):
            try:
                print(trials_table(config.hydra))
            except Exception as error:  # a courtesy, as the summary
                log.warning("could not list the Optuna study's trials: %s", error)


def _summary_config(config: DictConfig) -> DictConfig:
    """What the sweep's summary needs of its config: the store, the experiment, the common overrides."""
    return OmegaConf.create(
        {
            "logger": OmegaConf.to_container(config.logger, resolve=True) if config.get("logger") else None,
            "paths": {"tracking_uri": str(config.paths.tracking_uri)},
            "common_overrides": list(config.hydra.overrides.task),
        }
    )


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of a grid sweep, as Hydra's basic sweeper makes them: the cartesian product of the values
    of every swept override (`augment=none,flip` gives two jobs), each job a list of `key=value` overrides.

    Args:
        overrides: the sweep's overrides (the config's `hydra.sweeper.params` first, then the command line).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*choices)]


def check_jobs(config: DictConfig) -> list[list[str]]:
    """Compose and check the sweep's jobs before any runs: enough of them that every value of every swept key
    is seen once (a grid of 3 x 2 x 2 needs at most 7 of its 12 configs). Returns the jobs checked (each
    sorted), which then skip their own check.

    Args:
        config: the sweep's config (with its `hydra` node).
    """
    from hydra import compose
    from hydra.errors import ConfigCompositionException, OverrideParseException

    task = list(config.hydra.overrides.task)
    common = set(task)
    # as the basic sweeper: the config's sweep, then the command line. An Optuna search's params are ranges
    # the sampler draws from: its first job (the command line alone) is checked
    params = {} if is_optuna(config.hydra) else (config.hydra.sweeper.get("params") or {})
    try:
        jobs = sweep_jobs([f"{key}={value}" for key, value in params.items()] + task)
    except OverrideParseException:
        return []  # Hydra's own sweeper reports it next
    seen: set[str] = set()
    checked = []
    # a Slurm job's accelerator is checked on its node: this machine may not have that hardware
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
            if build:  # a job checked without its hardware checks itself on its node
                checked.append(sorted(job))
            continue
        print(f"Error: {line}" + (f" (job {cell})" if cell else "") + "; no job was started", file=sys.stderr)
        raise SystemExit(1)
    return checked


def _cell(job: list[str], common: set[str]) -> str:
    """A job's own overrides: those the command line does not give every job alike."""
    return " ".join(o for o in job if o not in common)


def _print_summary(config: DictConfig, sweep: str) -> None:
    if not uses_mlflow(config.get("logger")):
        return
    try:
        print(sweep_summary(config, sweep))
    except Exception as error:  # the summary is a courtesy: never fail a finished sweep over it
        log.warning("could not summarise sweep %s: %s", sweep, error)


def report_failed_sweep(sweep_dir: Path) -> None:
    """After a sweep whose jobs failed (Hydra raises the first job's error once all have run): the job table
    anyway, then one line per failed job, read from the files the sweep and its jobs left in `sweep_dir`.

    Args:
        sweep_dir: the sweep's folder (`hydra.sweep.dir`).
    """
    config = OmegaConf.load(sweep_dir / SWEEP_CONFIG) if (sweep_dir / SWEEP_CONFIG).is_file() else None
    if config is not None:
        _print_summary(config, sweep_dir.name)
    common = set(config.common_overrides) if config is not None else set()
    jobs = [p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and (p / ".hydra").is_dir()]
    failed = [json.loads((job / JOB_ERROR).read_text()) for job in jobs if (job / JOB_ERROR).is_file()]
    for record in failed:
        cell = _cell(record["overrides"], common) or " ".join(record["overrides"])
        print(f"Error: job {cell} failed: {record['error']}", file=sys.stderr)
    print(
        f"Error: {len(failed)} of {len(jobs)} jobs failed (their output folders hold the logs)",
        file=sys.stderr,
    )


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

"""hparams_search=<name>: an Optuna study run by Hydra's Optuna sweeper (conf/hparams_search/).

The sweeper asks the study for a trial, launches a job with the trial's parameters as overrides and tells
the study the value train.py returns. Here: the MLflow tags that tie a job's run to its trial (the sweeper
does not pass the trial number to the job, so the job finds its running trial in the study by its
parameters), and the table of trials printed when the sweep ends.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

log = logging.getLogger(__name__)
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def is_optuna(hydra_cfg: DictConfig) -> bool:
    """Whether the sweep (its `hydra` node) is an Optuna search."""
    return str(hydra_cfg.get("sweeper", {}).get("_target_", "")) == OPTUNA_SWEEPER


def _study(hydra_cfg: DictConfig) -> tuple[str, str]:
    """(study name, SQLite URL) of the search."""
    sweeper = hydra_cfg.sweeper
    return str(sweeper.study_name), str(sweeper.storage.url)


def trial_tags() -> dict[str, str]:
    """`optuna_study` and `optuna_trial` for a job of an Optuna search; nothing for any other run."""
    from hydra.core.hydra_config import HydraConfig

    from src.experiments.sweeps.optuna_storage import running_trials

    if not HydraConfig.initialized() or not is_optuna(HydraConfig.get()):
        return {}
    hydra_cfg = HydraConfig.get()
    name, url = _study(hydra_cfg)
    tags = {"optuna_study": name}
    overrides = set(hydra_cfg.overrides.task)
    try:
        mine = [
            number
            for number, record in running_trials(url, name)
            if {f"{k}={v}" for k, v in record["params"].items()} <= overrides
        ]
    except Exception as error:  # the tags are a courtesy: a trial runs without them
        log.warning("could not find this job's Optuna trial: %s", error)
        return tags
    if mine:  # the newest running trial with these parameters (parallel trials differ in them)
        tags["optuna_trial"] = str(max(mine))
    return tags


def _value(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:#.4g}"
    return str(value)


def trials_table(hydra_cfg: DictConfig) -> str:
    """Every trial of the study (this sweep's and earlier ones'), its state, value and parameters, then
    the best trial's parameters as command-line overrides."""
    from src.experiments.sweeps.optuna_storage import saved_trials

    name, url = _study(hydra_cfg)
    trials = saved_trials(url, name)
    names = sorted({key for _, record in trials for key in record["params"]})
    lines = [f"Optuna study '{name}' ({len(trials)} trials) in {url}"]
    header = ["trial", "state", "value"] + names
    rows = [
        [str(number), record["state"].lower(), _value((record["values"] or [float("nan")])[0])]
        + [_value(record["params"].get(key, "")) for key in names]
        for number, record in trials
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    completed = [(n, r) for n, r in trials if r["state"] == "COMPLETE" and r["values"]]
    if completed:
        direction = str(hydra_cfg.sweeper.get("direction", "maximize"))
        pick = max if direction == "maximize" else min
        number, best = pick(completed, key=lambda item: item[1]["values"][0])
        overrides = " ".join(f"{k}={_value(v)}" for k, v in best["params"].items())
        lines.append(f"best: trial {number}, value {_value(best['values'][0])}: python train.py {overrides}")
    return "\n".join(lines)

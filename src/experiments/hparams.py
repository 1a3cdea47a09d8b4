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


def _load_study(hydra_cfg: DictConfig):
    import optuna

    sweeper = hydra_cfg.sweeper
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=str(sweeper.study_name), storage=str(sweeper.storage))


def trial_tags() -> dict[str, str]:
    """`optuna_study` and `optuna_trial` for a job of an Optuna search; nothing for any other run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not is_optuna(HydraConfig.get()):
        return {}
    hydra_cfg = HydraConfig.get()
    tags = {"optuna_study": str(hydra_cfg.sweeper.study_name)}
    try:
        overrides = set(hydra_cfg.overrides.task)
        running = [
            trial
            for trial in _load_study(hydra_cfg).get_trials(deepcopy=False)
            if trial.state.name == "RUNNING" and {f"{k}={v}" for k, v in trial.params.items()} <= overrides
        ]
    except Exception as error:  # the tags are a courtesy: a trial runs without them
        log.warning("could not find this job's Optuna trial: %s", error)
        return tags
    if running:  # the newest running trial with these parameters (parallel trials differ in them)
        tags["optuna_trial"] = str(max(trial.number for trial in running))
    return tags


def _value(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:#.4g}"
    return str(value)


def trials_table(hydra_cfg: DictConfig) -> str:
    """Every trial of the study (this sweep's and earlier ones'), its state, value and parameters, then
    the best trial's parameters as command-line overrides."""
    study = _load_study(hydra_cfg)
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    lines = [f"Optuna study '{study.study_name}' ({len(trials)} trials) in {hydra_cfg.sweeper.storage}"]
    header = ["trial", "state", "value"] + names
    rows = [
        [str(t.number), t.state.name.lower(), _value(t.value if t.value is not None else float("nan"))]
        + [_value(t.params.get(name, "")) for name in names]
        for t in trials
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    if completed:
        best = study.best_trial
        overrides = " ".join(f"{k}={_value(v)}" for k, v in best.params.items())
        lines.append(f"best: trial {best.number}, value {_value(best.value)}: python train.py {overrides}")
    return "\n".join(lines)

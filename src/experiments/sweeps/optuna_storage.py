"""Where hparams_search keeps its Optuna studies: a SQLite file next to the MLflow store, resumable.

Optuna's own SQLite storage cannot be used: hydra-optuna-sweeper 1.3.0 pins optuna<3, whose RDB storage
fails on SQLAlchemy 2 (its version check and commits), and MLflow 3's server (`make ui`) needs SQLAlchemy 2.
So the sweeper gets Optuna's in-memory storage, mirrored here into SQLite with the standard library: every
change of a trial is written as one JSON row (data, never pickles), and opening a study of the same name
again reloads its finished trials, so rerunning the same command resumes the study. A trial left RUNNING by
a killed sweep comes back as FAIL. Jobs in other processes read the rows (`running_trials`).
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

SCHEMA = (
    "create table if not exists trials (study text, number integer, record text, primary key (study, number))"
)


def _path(storage: str) -> Path:
    return Path(storage.removeprefix("sqlite:///")).expanduser()


def _record(trial: optuna.trial.FrozenTrial) -> str:
    return json.dumps(
        {
            "state": trial.state.name,
            "values": trial.values,
            "params": trial.params,
            "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
            "user_attrs": trial.user_attrs,
            "start": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        },
        default=str,
    )


def saved_trials(storage: str, study: str) -> list[tuple[int, dict]]:
    """(number, record) of every trial saved for `study`, in order; [] when there is none."""
    path = _path(storage)
    if not path.is_file():
        return []
    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)
        rows = db.execute("select number, record from trials where study = ? order by number", (study,))
        return [(number, json.loads(record)) for number, record in rows.fetchall()]


def running_trials(storage: str, study: str) -> list[tuple[int, dict]]:
    """The trials of `study` that are running now (a job looks for its own among them)."""
    return [(n, r) for n, r in saved_trials(storage, study) if r["state"] == "RUNNING"]


class SqliteStudyStorage(InMemoryStorage):
    """Optuna's in-memory storage, each trial change mirrored into the SQLite file `url` (sqlite:///path)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        _path(url).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(_path(url)) as db:
            db.execute(SCHEMA)

    def set_study_directions(self, study_id: int, directions) -> None:
        # optuna.create_study sets the directions right after creating the study: the saved trials are
        # loaded then, so the best trial is cached with the study's direction
        super().set_study_directions(study_id, directions)
        if not super().get_all_trials(study_id, deepcopy=False):
            self._resume(study_id)

    def _resume(self, study_id: int) -> None:
        """The study's saved trials, in their order; one saved as RUNNING (its sweep was killed) as FAIL."""
        for _, record in saved_trials(self.url, self.get_study_name_from_id(study_id)):
            state = TrialState[record["state"]]
            with warnings.catch_warnings():  # create_trial is "experimental" in optuna 2.10, and stable since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = optuna.trial.create_trial(
                    state=TrialState.FAIL if state == TrialState.RUNNING else state,
                    values=record["values"] if state == TrialState.COMPLETE else None,
                    params=record["params"],
                    distributions={k: json_to_distribution(d) for k, d in record["distributions"].items()},
                    user_attrs=record["user_attrs"],
                )
            if record.get("start"):
                trial.datetime_start = datetime.fromisoformat(record["start"])
            super().create_new_trial(study_id, template_trial=trial)
        for trial in super().get_all_trials(study_id, deepcopy=False):
            self._save(study_id, trial)

    def _save(self, study_id: int, trial: optuna.trial.FrozenTrial) -> None:
        with sqlite3.connect(_path(self.url)) as db:
            db.execute(
                "insert or replace into trials values (?, ?, ?)",
                (self.get_study_name_from_id(study_id), trial.number, _record(trial)),
            )

    def _saved_after(self, trial_id: int) -> None:
        self._save(self.get_study_id_from_trial_id(trial_id), self.get_trial(trial_id))

    def create_new_trial(self, study_id: int, template_trial=None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        self._saved_after(trial_id)
        return trial_id

    def set_trial_param(self, trial_id, param_name, param_value_internal, distribution) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._saved_after(trial_id)

    def set_trial_state(self, trial_id: int, state: TrialState) -> bool:
        changed = super().set_trial_state(trial_id, state)
        self._saved_after(trial_id)
        return changed

    def set_trial_values(self, trial_id: int, values) -> None:
        super().set_trial_values(trial_id, values)
        self._saved_after(trial_id)

    def set_trial_user_attr(self, trial_id: int, key: str, value) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        self._saved_after(trial_id)

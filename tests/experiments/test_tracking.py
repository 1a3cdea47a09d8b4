"""The tracking store and runs: a stop signal inside a run ends it KILLED; a bad store fails in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from src.experiments.config import PROJECT_ROOT
from tests.conftest import script_env


def _mlflow_run(tmp_path):
    """A run through the one tracking interface, in a store of its own."""
    from omegaconf import OmegaConf

    from src.experiments.tracking import Run

    logger = {
        "_target_": "lightning.pytorch.loggers.MLFlowLogger",
        "experiment_name": "signals",
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
    }
    return Run.start(OmegaConf.create(logger), name="signals")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_caught_by_the_between_jobs_handler_inside_a_run_still_ends_it_killed(signum, tmp_path):
    """Whichever of our handlers turns the signal into an exception (the run's own, or the process-wide one
    that a library restored while the run was going), the run ends KILLED, not FAILED, and the process
    exits with 128 + signal."""
    from src.utils.signals import exit_on_signals

    run = _mlflow_run(tmp_path)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        exit_on_signals()
        with pytest.raises(SystemExit) as stopped, run.state():
            exit_on_signals()  # a library puts back the handler it found before the run's own
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stored = run.store.get_run(run.id)
    assert stopped.value.code == 128 + signum
    assert stored.info.status == "KILLED" and signal.Signals(signum).name in stored.data.tags["error"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_inside_a_run_ends_it_killed(signum, tmp_path):
    """The run's own handler: SIGHUP (a closed terminal or ssh session) too, not only SIGTERM/SIGINT; with
    the default SIGHUP action the process died and the run stayed RUNNING."""
    run = _mlflow_run(tmp_path)
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stopped, run.state():
        os.kill(os.getpid(), signum)
        time.sleep(5)
    assert signal.getsignal(signum) is before, "the run's handler must be removed afterwards"
    assert stopped.value.code == 128 + signum
    stored = run.store.get_run(run.id)
    assert stored.info.status == "KILLED" and signal.Signals(signum).name in stored.data.tags["error"]


@pytest.mark.parametrize("store", ["unreachable", "corrupt", "read_only"])
def test_an_unusable_tracking_store_fails_in_seconds_with_one_line(store, small_dataset, tmp_path):
    from src.experiments.tracking import TrackingStoreError, check_tracking_store

    db = tmp_path / "mlflow.db"
    uri = {"unreachable": "http://127.0.0.1:9", "corrupt": f"sqlite:///{db}", "read_only": f"sqlite:///{db}"}[
        store
    ]
    if store == "corrupt":
        db.write_bytes(b"this is not a database" * 100)
    if store == "read_only":
        import sqlite3

        sqlite3.connect(db).close()
        db.chmod(0o444)
        if os.access(db, os.W_OK):
            pytest.skip("running as a user who may write read-only files (root)")
    with pytest.raises(TrackingStoreError) as error:
        check_tracking_store(uri)
    assert "\n" not in str(error.value) and (str(db) in str(error.value) or "127.0.0.1:9" in str(error.value))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "weights=scratch", f"data.root={tmp_path}/never"],
        cwd=PROJECT_ROOT,
        env=script_env(tmp_path, MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and time.monotonic() - started < 60
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert not (tmp_path / "never").exists(), "data was touched before the store was checked"


def test_a_dataset_two_parallel_jobs_insert_at_once_is_linked_on_a_second_try(monkeypatch, tmp_path):
    """Two jobs of a parallel sweep log the same dataset: MLflow's store checks for the row, then inserts it,
    and the slower insert fails on the unique key (seen in the parallel-sweep test). The run retries once."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from omegaconf import OmegaConf

    from src.experiments.tracking import Run

    logger = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.loggers.MLFlowLogger",
            "experiment_name": "evaluate",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        }
    )
    run = Run.start(logger, name="parallel-dataset")
    real = run.store.log_inputs
    calls = []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
                "datasets.digest"
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(run.store, "log_inputs", racing)
    run.log_dataset("synthetic-fold0", "abc123", "/data/synthetic", "test")
    assert len(calls) == 2
    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run.id).inputs.dataset_inputs
    assert [d.dataset.name for d in logged] == ["synthetic-fold0"]

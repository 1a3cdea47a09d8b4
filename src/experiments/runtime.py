"""The process a task runs in: stop signals (one mechanism) and a tidy console."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from contextlib import contextmanager


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run: SIGTERM (kill, schedulers), SIGINT (Ctrl-C), SIGHUP (a closed terminal)."""
    return tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


class SignalExit(SystemExit):
    """A stop signal as an exception: SystemExit(128 + signal), carrying the signal.

    Raised in the main thread wherever the signal arrives, so every layer unwinds (Lightning re-raises
    what is not a KeyboardInterrupt unchanged); a tracked run it crosses ends KILLED (`tracking.Run.state`),
    and the process exits with 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


def _raise_signal_exit(signum, frame):
    raise SignalExit(signum)


def exit_on_signals() -> None:
    """Turn SIGTERM, SIGINT and SIGHUP into SignalExit for the rest of the process (entry points call it
    first, so a signal between a sweep's jobs ends the process with 128 + signal too)."""
    for sig in stop_signals():
        signal.signal(sig, _raise_signal_exit)


@contextmanager
def signals_raise():
    """SignalExit on a stop signal while the block runs (a repeat while unwinding is ignored); the previous
    handlers come back afterwards. For runs started outside an entry point (tests, notebooks)."""
    received: list[int] = []

    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise SignalExit(signum)

    previous = {sig: signal.getsignal(sig) for sig in stop_signals()}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def tidy_output() -> None:
    """Each log line once, and none of the warnings that are noise here.

    Lightning gives its loggers a console handler of their own, so every line also reached Hydra's
    root handler: printed twice. The warnings silenced are about choices this project makes on
    purpose (its own files in the run folder, short epochs on small sets, bf16 on CPU) or about
    library internals a user cannot act on.
    """
    # a finetuned checkpoint is one small file: MLflow's download bar printed twice per evaluation job
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for message in (
        r"Checkpoint directory .* exists and is not empty",  # run.json and the data report live there
        r"The number of training batches .* is smaller than the logging interval",
        r".*does not have many workers which may be a bottleneck.*",  # workers are a data.num_workers choice
        r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
        r".*bf16.*is supported.*",
        r".*TF32.*",
        r".*is not supported by the model summary.*",  # the summary's size estimate, not the training
    ):
        warnings.filterwarnings("ignore", message=message)
    for noisy in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "matplotlib",  # "generated new fontManager" on a first plot
        "mlflow.store.db.utils",
        "alembic",
    ):  # the store's table creation, printed outside Hydra's format
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def quieter(logger_name: str, level: int = logging.WARNING):
    """Only `level` and above from `logger_name` and its children while the block runs."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)

"""A tidy console for a task: each log line once, and none of the warnings that are noise here."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager


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

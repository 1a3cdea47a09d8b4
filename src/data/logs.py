"""Data summaries printed once per sweep, not once per job."""

from __future__ import annotations

import logging


class OncePerSweep(logging.Filter):
    """Drops a record whose text this process already printed, inside a Hydra multirun only: every job of a
    sweep rebuilds the same data module, and its index, cache and split lines would repeat word for word
    (a job whose data differs, e.g. another fold, prints its own). Single runs and library use print all."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _in_multirun():
            return True
        text = f"{record.name}:{record.levelno}:{record.getMessage()}"
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return False
    return HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN"


ONCE_PER_SWEEP = OncePerSweep()

"""The data module's summary lines: once per sweep, every time outside one."""

from __future__ import annotations


def test_data_summaries_print_once_per_sweep_and_every_time_outside_one(monkeypatch, caplog):
    """A sweep's jobs rebuild the same data module: its index, cache and split lines printed once per job."""
    import logging

    import src.data.logs as logs
    from src.data.datamodule import log

    filter_ = logs.OncePerSweep()
    monkeypatch.setattr(logs, "ONCE_PER_SWEEP", filter_)
    log.addFilter(filter_)
    try:
        with caplog.at_level(logging.INFO, logger=log.name):
            for multirun in (False, False, True, True, True):
                monkeypatch.setattr(logs, "_in_multirun", lambda multirun=multirun: multirun)
                log.info("test split: %d videos", 26)
            log.info("test split: %d videos", 27)  # another job's data: printed
    finally:
        log.removeFilter(filter_)
    assert [r.getMessage() for r in caplog.records] == ["test split: 26 videos"] * 3 + [
        "test split: 27 videos"
    ]

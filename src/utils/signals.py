"""Stop signals, one mechanism for the whole project: SIGTERM, SIGINT and SIGHUP become `SignalExit`, an
exception every layer unwinds through, so a run it crosses ends KILLED and the process exits 128 + signal."""

from __future__ import annotations

import signal
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

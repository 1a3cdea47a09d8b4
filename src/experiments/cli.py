"""The command line around a `@hydra.main` task: one line, not a traceback, for what the user fixes.

`run(main)` is what every entry point (train.py, evaluate.py, predict.py, prepare of the audit) calls: stop
signals end the process with 128 + signal, `group=null` selects the group's `none` option, a config that
does not compose ends in one line naming the key, and a user's data, weights or config error in a single
run ends in its message (in a sweep, Hydra reports the job and the sweep's summary names it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from src.experiments.config import CONFIG_DIR, config_error_line
from src.experiments.runtime import SignalExit, exit_on_signals
from src.utils.errors import ConfigError, UserError

# what a task does not take, and where it is instead
ELSEWHERE = {
    "evaluate": {
        key: f"scoring video files is python predict.py {key}=<...> (evaluate.py evaluates a test list)"
        for key in ("video", "videos", "output")
    },
    "train": {
        "augment": "train.py has no test-time perturbation: training augmentation is train_augment=weak|strong|sbi, "
        "and evaluate.py augment=<level> perturbs the test list"
    },
    # the face crops depend on data.* keys only: a model's input size is applied when crops are read
    "prepare": {
        key: "prepare.py builds the face-crop cache of data=<...> and takes only data.* keys, shard and shards "
        "(crops are resized to a model's input when read)"
        for key in ("model", "weights", "trainer", "augment", "train_augment")
    },
}


def null_group_overrides(overrides: list[str]) -> list[str]:
    """`group=null` (e.g. `logger=null`) selects the group's `none` option.

    Hydra 1.3 refuses a null config group on the command line with a traceback ("Config group override
    must be a string or a list"); a group without a `none` option gets one line naming its options. Sweeps
    (`logger=mlflow,null`) are rewritten item by item; `~group` and `+`/`++` overrides are left to Hydra."""
    rewritten = []
    for override in overrides:
        key, sep, value = override.partition("=")
        folder = CONFIG_DIR / key
        items = value.split(",")
        if not sep or key.startswith(("~", "+")) or not folder.is_dir() or "null" not in items:
            rewritten.append(override)
            continue
        if not (folder / "none.yaml").is_file():
            options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ConfigError(f"{key}=null: {key} cannot be left empty; choose one of {options}")
        rewritten.append(f"{key}=" + ",".join("none" if item == "null" else item for item in items))
    return rewritten


def refuse_elsewhere(task: str, overrides: list[str]) -> None:
    """A group or key that this task does not take but another does (evaluate.py video=... is predict.py's,
    train.py augment=... is evaluate.py's): one line saying where it is."""
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~").split(".")[0]
        if key in ELSEWHERE.get(task, {}):
            raise ConfigError(f"{override}: {ELSEWHERE[task][key]}")


def run(main: Callable[[], Any], task: str | None = None) -> Any:
    """Run a `@hydra.main` function so that a config that does not compose (a value of the wrong type,
    a misspelt key or option, a malformed override) ends in one line naming the key, with exit code 1,
    instead of Hydra's multi-line report. With HYDRA_FULL_ERROR=1 set by the user, Hydra's full report."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    exit_on_signals()  # between a sweep's jobs too: SIGTERM/SIGINT/SIGHUP end the process with 128 + signal
    try:
        refuse_elsewhere(task or "", sys.argv[1:])
        sys.argv[1:] = null_group_overrides(sys.argv[1:])
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing its own report
    try:
        return main()
    except Exception as error:
        if (signal := _signal_behind(error)) is not None:  # a library's cleanup failed while unwinding it
            raise signal from None
        if isinstance(error, ConfigCompositionException | OverrideParseException):
            print(f"Error: {config_error_line(error)}", file=sys.stderr)
            raise SystemExit(1) from None
        # imported here: the sweep machinery brings torch, and a config error should not wait for it
        from src.experiments.sweeps.callbacks import report_failed_sweep

        if report_failed_sweep(error):  # a sweep whose jobs failed: its table and one line per failed job
            raise SystemExit(1) from None
        raise
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def _signal_behind(error: BaseException) -> SignalExit | None:
    """The stop signal an error was raised while handling, if any: a signal lands anywhere, and a library's
    `finally` can fail on the state it left (OmegaConf: "'NoneType' object has no attribute
    '_invalidate_flags_cache'"); the process must still end as the signal says (128 + signal)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SignalExit):
            return error
        seen.add(id(error))
        error = error.__context__ or error.__cause__
    return None


@contextmanager
def clean_user_errors():
    """In a single run, end on a user's data, weights or config error with its message and exit code 1
    instead of a traceback. In a sweep the error propagates, so Hydra reports the job and goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    def report(error: BaseException) -> None:
        if HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
            raise error
        print(f"Error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from error

    user_errors = (FileNotFoundError, ValueError, UserError)  # bad values, weights, data or store
    try:
        yield
    except InstantiationException as error:  # Hydra wraps what a constructor raised (e.g. a bad data value)
        if not isinstance(error.__cause__, user_errors):
            raise
        report(error.__cause__)
    except user_errors as error:
        report(error)

"""The command line around a task: one line, not a traceback, for what the user fixes.

Two layers, each in one place:
- `run(main)`, the process, what every entry point (train.py, evaluate.py, predict.py, prepare.py, the audit)
  calls around its `@hydra.main` function: stop signals end the process with 128 + signal (between a sweep's
  jobs too), `group=null` selects the group's `none` option, a config that does not compose ends in one line
  naming the key, and a sweep whose jobs failed ends with its table and one line per failed job.
- `task_wrapper`, the job, the decorator of every task body: the config checked once, the console tidied,
  extras applied, the runs the task starts (`TaskRuns`) ended in the state it reaches, and a user's data,
  weights or config error ended in its one line.

Hydra offers no hook before it parses the command line or reports a failure, so `run` reads `group=null` from
`sys.argv` and asks Hydra to raise rather than print (`HYDRA_FULL_ERROR=1`, Hydra's documented switch, set
for the call and restored after it).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from src.experiments.config import CONFIG_DIR, check_config, config_error_line
from src.experiments.console import tidy_output
from src.experiments.extras import apply_extras
from src.experiments.sweeps.files import CHECKED_JOBS, JOB_ERROR
from src.experiments.tracking import Run
from src.utils.errors import ConfigError, UserError
from src.utils.signals import SignalExit, exit_on_signals

T = TypeVar("T")

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
        sweep_dir = getattr(error, "sweep_dir", None)  # set by task_wrapper on a failed sweep job
        if sweep_dir is not None:
            # imported here: the sweep machinery brings torch, and a config error should not wait for it
            from src.experiments.sweeps.callbacks import report_failed_sweep

            report_failed_sweep(Path(sweep_dir))  # the jobs' table and one line per failed job
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


USER_ERRORS = (FileNotFoundError, ValueError, UserError)  # bad values, weights, data or store


class TaskRuns:
    """The tracked runs a task starts (`start`, as `tracking.Run.start` does): each ends when the task ends, in
    the state the task reached: FINISHED, FAILED with its error, or KILLED by a stop signal (`Run.state`), so
    a task body never leaves a run RUNNING and never handles the run's state itself.

    Args:
        stack: the task wrapper's exit stack, which ends the runs.
    """

    def __init__(self, stack: ExitStack):
        self._stack = stack

    def start(self, logger_cfg, **arguments) -> Run:
        """A run of the logger `logger_cfg` configures, started now (see `tracking.Run.start`)."""
        run = Run.start(logger_cfg, **arguments)
        self._stack.enter_context(run.state())
        return run


def task_wrapper(task: Callable[[DictConfig, TaskRuns], T]) -> Callable[[DictConfig], T]:
    """The one wrapper around every task body (train, evaluate, predict, prepare, audit).

    Before the body: the config checked once (`check_config`; a sweep job its pre-check already passed is
    not checked again), the console tidied, `extras.*` applied. Around it: the runs it starts (`TaskRuns`)
    end in the state it reaches, KILLED on a stop signal (the process's signal handling is `run`'s). After it:
    a user's data, weights or config error in a single run ends in its one-line message with exit code 1
    instead of a traceback; in a sweep the error goes on to Hydra, which runs the other jobs, and the job's
    line is kept in its output folder for the sweep's summary. Called from Python outside Hydra (tests,
    notebooks), errors propagate as they are.

    Args:
        task: the task's body, called with the composed config and the `TaskRuns` to start its runs with.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> T:
        from hydra.errors import InstantiationException

        job = _hydra_job()
        try:
            if not (job and job.already_checked()):
                check_config(cfg)
            tidy_output()
            apply_extras(cfg)
            with ExitStack() as stack:
                return task(cfg, TaskRuns(stack))
        except InstantiationException as error:  # Hydra wraps what a constructor raised (a bad data value)
            if job is None or not isinstance(error.__cause__, USER_ERRORS):
                raise
            job.fail(error.__cause__)
        except USER_ERRORS as error:
            if job is None:
                raise
            job.fail(error)
        except Exception as error:
            if job is not None and job.multirun:
                job.record(error)
            raise

    return wrapped


@dataclass(frozen=True)
class _HydraJob:
    """The Hydra job a task runs as: its output folder, whether it is one job of a sweep, its overrides."""

    output_dir: Path
    sweep_dir: Path | None
    overrides: tuple[str, ...]

    @property
    def multirun(self) -> bool:
        return self.sweep_dir is not None

    def already_checked(self) -> bool:
        """Whether the sweep's pre-check passed this job's exact overrides."""
        checked = self.sweep_dir / CHECKED_JOBS if self.sweep_dir else None
        if checked is None or not checked.is_file():
            return False
        return sorted(self.overrides) in json.loads(checked.read_text())

    def record(self, error: BaseException) -> None:
        """Keep the job's one-line error in its folder: the sweep's summary names it (cli.run)."""
        line = f"{type(error).__name__}: {error}".splitlines()[0]
        (self.output_dir / JOB_ERROR).write_text(
            json.dumps({"overrides": list(self.overrides), "error": line})
        )
        error.sweep_dir = str(self.sweep_dir)  # travels with the error Hydra raises after the last job

    def fail(self, error: BaseException) -> None:
        """A user's error: one line and exit code 1 in a single run; recorded and raised on in a sweep."""
        if self.multirun:
            self.record(error)
            raise error
        print(f"Error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from error


def _hydra_job() -> _HydraJob | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    return _HydraJob(
        Path(hydra_cfg.runtime.output_dir),
        Path(hydra_cfg.sweep.dir) if multirun else None,
        tuple(str(o) for o in hydra_cfg.overrides.task),
    )

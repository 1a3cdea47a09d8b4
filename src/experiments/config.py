"""Hydra/OmegaConf glue shared by the entry points and the tests."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("model_input"):
    from src.models.contract import resolve_input

    # ${model_input:size,${model.net}}: a field of the input contract the net class declares
    OmegaConf.register_new_resolver("model_input", resolve_input)


def _register_schemas() -> None:
    from src.experiments.schemas import register_schemas

    register_schemas()


_register_schemas()  # every compose path imports this module (for CONFIG_DIR) before it composes


def tidy_output() -> None:
    """Each log line once, and none of the warnings that are noise here.

    Lightning gives its loggers a console handler of their own, so every line also reached Hydra's
    root handler: printed twice. The warnings silenced are about choices this project makes on
    purpose (its own files in the run folder, short epochs on small sets, bf16 on CPU) or about
    library internals a user cannot act on.
    """
    import logging
    import warnings

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
    ):
        warnings.filterwarnings("ignore", message=message)
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def exit_on_signals() -> None:
    """SIGTERM and SIGINT end the process with status 128 + signal wherever they arrive; inside a run,
    `tracking.run_state` takes over and first marks the run KILLED."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


class UserError(Exception):
    """A problem the user fixes with a value, a file or the environment: reported in one line."""


def selected_options(cfg: DictConfig) -> dict[str, str]:
    """The chosen option of each tagged config group: model, weights, augment, data."""
    return {
        "model": str(cfg.model.name),
        "weights": str(cfg.weights.source),
        "augment": str(cfg.augment.level),
        "data": str(cfg.data.name),
    }


PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")
# keys users type numbers into: (key, type, minimum)
NUMBERS = (
    ("seed", int, None), ("data.folds", int, 2), ("data.fold", int, 0), ("data.split_seed", int, None),
    ("data.frames_per_video", int, 1), ("data.crop_size", int, 16), ("data.face_margin", float, 1e-6),
    ("data.detect_max_side", int, 16), ("data.batch_size", int, 1), ("data.max_bad_fraction", float, 0.0),
    ("trainer.max_epochs", int, 1), ("trainer.min_epochs", int, 0), ("trainer.log_every_n_steps", int, 1),
    ("model.batch_size", int, 1), ("model.input.size", int, 16), ("model.input.frames_per_clip", int, 1),
)


WHY_MINIMUM = {"data.folds": "k-fold cross-validation needs at least 2 folds"}


def _number(cfg: DictConfig, key: str, kind: type, minimum) -> None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    valid = isinstance(value, int | float) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not valid:
        raise ValueError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    if minimum is not None and value < minimum:
        why = WHY_MINIMUM.get(key, f"must be at least {minimum:g}")
        raise ValueError(f"{key}={value!r}: {why}")


def check_config(cfg: DictConfig) -> None:
    """Fail early, with one line naming the key, on values of the wrong type or range and on combinations
    that cannot work together: before any run starts, data is touched or weights are loaded."""
    for key, kind, minimum in NUMBERS:
        _number(cfg, key, kind, minimum)
    data, model = cfg.data, cfg.model
    if not 0 <= data.fold < data.folds:
        raise ValueError(f"data.fold={data.fold} is out of range for data.folds={data.folds} (0..{data.folds - 1})")
    precision = str(cfg.trainer.get("precision"))
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if model.input.kind not in ("frame", "clip"):
        raise ValueError(f"model.input.kind={model.input.kind!r}: must be frame or clip")
    if model.input.kind == "clip" and model.input.frames_per_clip > data.frames_per_video:
        raise ValueError(
            f"model.input.frames_per_clip={model.input.frames_per_clip} > data.frames_per_video="
            f"{data.frames_per_video}: a clip cannot have more frames than are cached per video"
        )
    fixed_size = model.input.get("fixed_size")
    if fixed_size and model.input.size != fixed_size:
        raise ValueError(
            f"model.input.size={model.input.size}: {model.name} has a fixed {fixed_size}x{fixed_size} input "
            "(its dense layer is sized for it)"
        )


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

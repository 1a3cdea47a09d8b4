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


def selected_options(cfg: DictConfig) -> dict[str, str]:
    """The chosen option of each tagged config group: model, weights, augment, data."""
    return {
        "model": str(cfg.model.name),
        "weights": str(cfg.weights.source),
        "augment": str(cfg.augment.level),
        "data": str(cfg.data.name),
    }


def check_config(cfg: DictConfig) -> None:
    """Fail early, naming the values, on combinations that cannot work together."""
    data, model = cfg.data, cfg.model
    if data.folds < 2:
        raise ValueError(f"data.folds={data.folds}: k-fold cross-validation needs at least 2 folds")
    if not 0 <= data.fold < data.folds:
        raise ValueError(f"data.fold={data.fold} is out of range for data.folds={data.folds} (0..{data.folds - 1})")
    if model.input.kind == "clip" and model.input.frames_per_clip > data.frames_per_video:
        raise ValueError(
            f"model.input.frames_per_clip={model.input.frames_per_clip} > data.frames_per_video="
            f"{data.frames_per_video}: a clip cannot have more frames than are cached per video"
        )
    fixed_size = {"mesonet": 256, "meso4": 256}.get(model.name)
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

    try:
        yield
    except (FileNotFoundError, ValueError) as error:  # includes bad weights and too many bad videos
        if HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
            raise
        print(f"Error: {type(error).__name__}: {error}", file=sys.stderr)
        raise SystemExit(1) from error

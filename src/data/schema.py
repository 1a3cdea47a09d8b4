"""The `data` config group's keys: their types for Hydra, and how a settings field names its key.

`DataConfig` is the structured config of the keys users type (`data.root`, `data.fold`, ...): stored in
Hydra's ConfigStore by `register`, and merged first by `conf/data/celebdf.yaml`, so a wrong type
(`data.fold=two`) or a misspelt key (`data.flod=1`) fails when Hydra composes the config, naming the key,
before any data is touched. It holds types only (every default is MISSING): the YAML files are the one
place the defaults live. A dataset with keys of its own declares them in a subclass stored under its name
(FaceForensics++: `FFppDataConfig`, selected by `conf/data/ffpp.yaml`).

Ranges and combinations (fold < folds, a known detector, ...) are checked by the settings objects the data
module is composed from (`src.data.datamodule`, `src.data.cache.CropSettings`): each of their fields is a
`setting(key, ...)` that names the key users type for it, so `build_datamodule` reads it from there and
every error names it (`check`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class DataConfig:
    _target_: str = MISSING  # the data module class (src.data.datamodule.DeepfakeDataModule or a subclass)
    name: str = MISSING
    root: str | None = MISSING
    index: Any = MISSING  # the dataset's indexer: a Hydra spec with _target_
    cache_dir: str = MISSING
    synthetic: Any = MISSING  # parameters of the generated dataset (data=synthetic), else null
    # split
    folds: int = MISSING
    fold: int = MISSING
    split_seed: int = MISSING
    identity_split: str = MISSING
    # face crops
    frames_per_video: int = MISSING
    face_detector: str = MISSING
    yunet_model: str | None = MISSING
    face_margin: float = MISSING
    crop_size: int = MISSING
    detect_max_side: int | None = MISSING
    detect_every: int = MISSING
    detect_device: str = MISSING
    # loaders
    train_frames_per_video: int | None = MISSING
    build_workers: int = MISSING
    num_workers: int = MISSING
    batch_size: int = MISSING
    balanced_sampling: bool = MISSING
    max_bad_fraction: float = MISSING
    # the model's input contract: ${model.input}
    model_input: Any = MISSING
    # the two transforms
    train_augment: str = MISSING
    test_augment: Any = MISSING  # a perturbation spec (conf/augment/<level>.yaml transform) or a level name
    augment_seed: int | None = MISSING


@dataclass
class FFppDataConfig(DataConfig):
    """FaceForensics++ adds the compression, the manipulation methods and the split files' folder."""

    compression: str = MISSING
    methods: list[str] = MISSING
    splits_dir: str | None = MISSING


def register(cs) -> None:
    """Store the data schemas in Hydra's ConfigStore `cs` (group schema/data)."""
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/data", name="ffpp", node=FFppDataConfig)


# -- settings fields that name their key --------------------------------------------------------------
def setting(key: str, default: Any = dataclasses.MISSING, *, compare: bool = True) -> Any:
    """A settings field read from, and reported as, the key users type (`data.folds`, `model.input.size`)."""
    return field(default=default, compare=compare, metadata={"key": key})


def key_of(settings: Any, name: str) -> str:
    """The user's key of field `name` of a settings class or object."""
    return settings.__dataclass_fields__[name].metadata["key"]


def check(condition: bool, settings: Any, name: str, rule: str) -> None:
    """One-line ValueError `<key>=<value>: <rule>` unless `condition`."""
    if not condition:
        raise ValueError(f"{key_of(settings, name)}={getattr(settings, name)!r}: {rule}")

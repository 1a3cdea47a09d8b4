"""The `data` config group's keys, declared once: each is a field of a settings dataclass.

A field's name is the key users type (`data.<field>`), its annotation the type, its default the default, and
the class's `__post_init__` the range. The data module is built from the flat keys (`settings_from`), and
the Hydra structured config `DataConfig` is generated from the same fields (`register`), so a wrong type
(`data.fold=two`) or a misspelt key (`data.flod=1`) fails while Hydra composes, naming the key, and a value
out of range fails when the settings are built, before any data is touched. The YAML files in conf/data/
hold only what a dataset changes (its indexer, root, and the defaults it needs otherwise).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import Any

from omegaconf import MISSING

from src.data.cache import CropSettings
from src.utils.errors import ConfigError, check

IDENTITY_SPLITS = ("official", "strict")
TRAIN_CLASSES = ("all", "real")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SplitSettings:
    """Which train/val videos validate: fold `fold` of `folds` identity-disjoint folds; which classes train."""

    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    identity_split: str = "official"  # official: fakes grouped by target identity | strict: no face crosses
    # all | real: the training split keeps its real videos only (train_augment=sbi makes the fakes from them);
    # validation and test stay whole
    train_classes: str = "all"

    def __post_init__(self):
        check(
            _is_int(self.folds) and self.folds >= 2,
            "data.folds",
            self.folds,
            "k-fold cross-validation needs at least 2 folds",
        )
        if not (_is_int(self.fold) and 0 <= self.fold < self.folds):
            raise ConfigError(
                f"data.fold={self.fold!r} is out of range for data.folds={self.folds} (0..{self.folds - 1})"
            )
        check(_is_int(self.split_seed), "data.split_seed", self.split_seed, "must be an integer")
        check(
            self.identity_split in IDENTITY_SPLITS,
            "data.identity_split",
            self.identity_split,
            "choose official or strict",
        )
        check(
            self.train_classes in TRAIN_CLASSES,
            "data.train_classes",
            self.train_classes,
            "choose all or real (real videos only, with train_augment=sbi)",
        )


@dataclass(frozen=True)
class LoaderSettings:
    """How the cache is built and read: batches, worker processes, sampling, tolerated decode failures."""

    batch_size: int | None = None  # null: the model's batch size (model.batch_size)
    num_workers: int = 2
    build_workers: int = 2
    balanced_sampling: bool = False
    train_frames_per_video: int | None = (
        4  # frame models: random cached frames per video per epoch (null: all)
    )
    max_bad_fraction: float = 0.2  # more undecodable videos than this stops the run

    def __post_init__(self):
        check(
            self.train_frames_per_video is None
            or (_is_int(self.train_frames_per_video) and self.train_frames_per_video >= 1),
            "data.train_frames_per_video",
            self.train_frames_per_video,
            "must be null (all) or an integer >= 1",
        )
        check(
            _is_int(self.build_workers) and self.build_workers >= 1,
            "data.build_workers",
            self.build_workers,
            "must be an integer >= 1",
        )
        check(
            _is_int(self.num_workers) and self.num_workers >= 0,
            "data.num_workers",
            self.num_workers,
            "must be an integer >= 0",
        )
        check(
            self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
            "data.batch_size",
            self.batch_size,
            "must be at least 1",
        )
        check(
            isinstance(self.balanced_sampling, bool),
            "data.balanced_sampling",
            self.balanced_sampling,
            "must be true or false",
        )
        check(
            isinstance(self.max_bad_fraction, Real)
            and not isinstance(self.max_bad_fraction, bool)
            and 0 <= self.max_bad_fraction <= 1,
            "data.max_bad_fraction",
            self.max_bad_fraction,
            "must be a fraction in [0, 1]",
        )


@dataclass  # not frozen: it is also the model.input node's schema, which Hydra merges into
class InputContract:
    """What the network expects (the model declares it; conf/includes/model.yaml reads it from the net
    class into `model.input`, typed by this class): kind frame|clip, square size in pixels, per-channel
    mean/std of RGB in [0, 1], crops per clip, and the only size that works where the net has one."""

    kind: str = "frame"  # frame: items are single crops; clip: frames_per_clip crops of one video
    size: int = 256
    mean: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = dataclasses.field(default_factory=lambda: [1.0, 1.0, 1.0])
    frames_per_clip: int = 1
    fixed_size: int | None = None  # the only size that works, where a dense layer is sized for it

    def __post_init__(self):
        check(self.kind in ("frame", "clip"), "model.input.kind", self.kind, "must be frame or clip")
        check(
            _is_int(self.frames_per_clip) and self.frames_per_clip >= 1,
            "model.input.frames_per_clip",
            self.frames_per_clip,
            "must be at least 1",
        )
        check(
            _is_int(self.size) and self.size >= 16, "model.input.size", self.size, "must be an integer >= 16"
        )
        for name in ("mean", "std"):
            values = getattr(self, name)
            ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 3
            check(
                ok and all(isinstance(v, Real) for v in values),
                f"model.input.{name}",
                values,
                "must be 3 numbers (R, G, B)",
            )
            setattr(self, name, [float(v) for v in values])
        check(all(v > 0 for v in self.std), "model.input.std", self.std, "must be 3 numbers > 0")
        check(
            not self.fixed_size or self.size == self.fixed_size,
            "model.input.size",
            self.size,
            f"this net has a fixed {self.fixed_size}x{self.fixed_size} input (its dense layer is sized for it)",
        )

    @classmethod
    def of(cls, value: InputContract | Mapping | None) -> InputContract:
        """From itself, a `model.input` mapping, or the default."""
        if value is None or isinstance(value, cls):
            return value or cls()
        return cls(**{f.name: value[f.name] for f in fields(cls) if f.name in value})


# the settings the data module is composed from, one concern each; their fields are the `data.*` keys
SETTINGS = {"split": SplitSettings, "crops": CropSettings, "loaders": LoaderSettings}


def settings_from(keys: Mapping[str, Any], dataset_keys: Sequence[str] = ()) -> dict[str, Any]:
    """One settings object per concern from the flat `data.*` keys; a key that none of them (nor the dataset's
    own `dataset_keys`, those its indexer reads) takes is refused, naming it."""
    taken = {f.name for group in SETTINGS.values() for f in fields(group)}
    unknown = sorted(set(keys) - taken - set(dataset_keys))
    if unknown:
        raise ConfigError(
            f"data.{unknown[0]}: no such key (this dataset's own keys: "
            f"{', '.join(sorted(dataset_keys)) or 'none'})"
        )
    return {
        name: group(**{f.name: keys[f.name] for f in fields(group) if f.name in keys})
        for name, group in SETTINGS.items()
    }


# -- the structured config, generated from the settings ----------------------------------------------------
def _schema_fields(group: type) -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(group)
    return [(f.name, hints[f.name], dataclasses.field(default=f.default)) for f in fields(group)]


DataConfig = dataclasses.make_dataclass(
    "DataConfig",
    [
        ("_target_", str, dataclasses.field(default="src.data.datamodule.DeepfakeDataModule")),
        (
            "_recursive_",
            bool,
            dataclasses.field(default=False),
        ),  # the indexer and transforms are built on use
        ("name", str, dataclasses.field(default=MISSING)),
        ("root", str | None, dataclasses.field(default=MISSING)),
        ("index", Any, dataclasses.field(default=None)),  # the dataset's indexer: a Hydra spec with _target_
        ("cache_dir", str, dataclasses.field(default=MISSING)),
        *(item for group in SETTINGS.values() for item in _schema_fields(group)),
    ],
)
DataConfig.__doc__ = "The keys users type into the data group: the dataset's, then each settings field."

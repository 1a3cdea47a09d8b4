"""Structured configs: the types and keys of the config groups users type into.

Each YAML of a group starts its defaults list with `- /schema/<group>@_here_: <group>`, so Hydra merges
the YAML into the dataclass below: a value of the wrong type (`trainer.max_epochs=two`) or a misspelt key
(`trainer.max_epoch=2`) fails while Hydra composes the config, naming the key, before any data or weights
are touched. What a type cannot say (ranges) is checked by the constructors themselves; what spans groups,
keys added with `+` and values `???` left missing by `src.experiments.config.check_config`.

Each key is declared once: the model, weights and trainer schemas are generated from the signatures of what
they build (`schema_of`): `DeepfakeDetector.__init__`, each weight source's constructor, and Lightning's
`Trainer`; the data group's schema is the data package's own (`src.data.settings`), generated from its
settings dataclasses. `register_schemas()` runs on import of `src.experiments.config`, which every entry
point and compose helper imports for CONFIG_DIR.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from src.data.settings import InputContract

SIMPLE_TYPES = (int, float, bool, str)


def config_type(annotation: Any) -> Any:
    """The type OmegaConf can hold for a constructor's annotation: int, float, bool, str, a dataclass, or a
    list/dict of simple types, each optional; anything else (unions of several types, literals, objects) is
    Any, and left to the constructor.

    Args:
        annotation: a resolved annotation (from `typing.get_type_hints`).
    """
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in arguments if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(arguments):
            inner = config_type(rest[0])
            return Any if inner is Any else typing.Optional[inner]  # noqa: UP045 - OmegaConf reads Optional
        return Any
    if annotation in SIMPLE_TYPES or dataclasses.is_dataclass(annotation):
        return annotation
    if origin in (list, Sequence) and len(arguments) == 1 and arguments[0] in SIMPLE_TYPES:
        return list[arguments[0]]  # a sequence arrives from the config as a list
    if origin is dict and len(arguments) == 2 and arguments[0] is str and arguments[1] in SIMPLE_TYPES:
        return annotation
    return Any


def signature_hints(constructor: Callable) -> dict[str, Any]:
    """The resolved annotations of a class's constructor (or a function), by parameter name.

    Args:
        constructor: a class (its `__init__` is read) or a function.
    """
    function = constructor.__init__ if inspect.isclass(constructor) else constructor
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve here: the parameter is Any
        return {}


def schema_of(
    name: str,
    constructor: Callable,
    target: str,
    nested: Mapping[str, type] | None = None,
    required: tuple[str, ...] = (),
    **extra: Any,
) -> type:
    """A structured config generated from `constructor`'s signature: one field per parameter, typed by its
    annotation where OmegaConf knows the type (`config_type`), with its default, or MISSING where it has none.

    Args:
        name: the dataclass's name.
        constructor: the class (or function) whose parameters are the keys.
        target: the `_target_` Hydra instantiates.
        nested: parameters whose node has a schema of its own (a dataclass), e.g. the input contract.
        required: parameters a config must set although the constructor has a default for Python callers
            (the model's `name`: its runs' tag and lineage key).
        **extra: further leading fields, `_convert_="all"` for instance (the value fixes the type).
    """
    nested = dict(nested or {})
    hints = signature_hints(constructor)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, field(default=target))]
    fields += [(key, type(value), field(default=value)) for key, value in extra.items()]
    for parameter in inspect.signature(constructor).parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        key, default = parameter.name, parameter.default
        if key in nested:
            fields.append((key, nested[key], field(default_factory=nested[key])))
            continue
        kind = config_type(hints.get(key, Any))
        if default is inspect.Parameter.empty or key in required:
            fields.append((key, kind, field(default=MISSING)))
        elif isinstance(default, list | dict):
            fields.append((key, kind, field(default_factory=lambda value=default: type(value)(value))))
        elif default is None or isinstance(default, SIMPLE_TYPES):
            fields.append((key, kind, field(default=default)))
        else:  # an object as default (an enum, a path): the constructor's own, kept out of the config
            fields.append((key, Any, field(default=None)))
    schema = dataclasses.make_dataclass(name, fields)
    schema.__doc__ = f"The keys of {target}, generated from its signature (src/experiments/schemas.py)."
    return schema


# -- model, weights, trainer: generated from what they build ---------------------------------------------
def model_schema() -> type:
    """`ModelConfig`: DeepfakeDetector's arguments; `input` typed by the input contract, `pretrained` by
    PretrainedSpec, `net` free-form (checked against the net class by check_config)."""
    from src.models.module import DeepfakeDetector
    from src.models.weights import PretrainedSpec

    return schema_of(
        "ModelConfig",
        DeepfakeDetector,
        "src.models.module.DeepfakeDetector",
        nested={"input": InputContract, "pretrained": PretrainedSpec},
        required=("name",),
        _convert_="all",
    )


def weights_schemas() -> dict[str, type]:
    """One schema per weight source, from its constructor."""
    from src.experiments.finetuned import Finetuned
    from src.models.weights import Pretrained, Scratch

    return {
        "scratch": schema_of("ScratchWeights", Scratch, "src.models.weights.Scratch"),
        "pretrained": schema_of("PretrainedWeights", Pretrained, "src.models.weights.Pretrained"),
        "finetuned": schema_of("FinetunedWeights", Finetuned, "src.experiments.finetuned.Finetuned"),
    }


def trainer_schema() -> type:
    """`TrainerConfig`: every argument of lightning.pytorch.Trainer with its default, typed where OmegaConf
    knows the type (an int counts batches and a float is a fraction, so `limit_*_batches` stay Any)."""
    import lightning.pytorch as pl

    return schema_of("TrainerConfig", pl.Trainer, "lightning.pytorch.Trainer")


# -- perturbations and augmentation ------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """A test-time perturbation level: the transform evaluate.py applies, its display title and its
    position on the robustness axis."""

    level: str = MISSING
    title: str = MISSING
    axis: int = MISSING
    transform: dict[str, Any] = MISSING  # a partial (_target_, _partial_: true, parameters) called with size=


@dataclass
class TrainAugmentConfig:
    """A training augmentation: its name (run tag `train_augment`) and the transform the data module applies."""

    level: str = MISSING
    transform: dict[str, Any] = MISSING  # a partial (_target_, _partial_: true, parameters) called with size=


# -- the top-level configs ------------------------------------------------------------------------------
@dataclass
class ExtrasConfig:
    """Conveniences around a run (conf/extras/)."""

    print_config: bool = False  # print the composed config as a tree before the run


@dataclass
class _Groups:
    """What every task has; each group is typed by its own schema (or is free: paths, logger)."""

    paths: Any = None
    data: Any = None
    logger: Any = None
    task: str = MISSING
    seed: int = 42
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    tags: list[str] = field(default_factory=list)  # MLflow tags of the run


@dataclass
class _ModelTask(_Groups):
    """A task that runs a model: with its weights, under a Trainer."""

    model: Any = None
    weights: Any = None
    trainer: Any = None


@dataclass
class TrainConfig(_ModelTask):
    train_augment: Any = None
    callbacks: Any = None
    ckpt_path: str | None = None  # null: start fresh; "last": resume this configuration; or a checkpoint
    test_after_fit: bool = True
    optimized_metric: str = "best_val_video_auc"  # what train.py returns to a sweeper (hparams_search)


@dataclass
class EvaluateConfig(_ModelTask):
    augment: Any = None


@dataclass
class PredictConfig(_ModelTask):
    augment: Any = None
    video: str | None = None  # one video file: its score and per-frame scores printed
    videos: str | None = None  # a folder, a glob pattern or a list file: a CSV row per video
    output: str | None = None  # the CSV (default: <hydra output dir>/predictions.csv)
    explain: bool = False  # true: <video stem>_cam.png per video, its crops' class-activation maps


@dataclass
class PrepareConfig(_Groups):
    """prepare.py: shard `shard` of `shards` of the dataset's face-crop cache (config.check_config: the range)."""

    shard: int = 0
    shards: int = 1


@dataclass
class AuditSettings:
    frames_per_video: int = 8
    band: list[float] = field(default_factory=lambda: [0.35, 0.65])
    bootstrap_resamples: int = 2000
    seed: int = 0
    output_dir: str = MISSING
    mlflow: bool = True


@dataclass
class AuditConfig(_Groups):
    audit: AuditSettings = field(default_factory=AuditSettings)
    run: str | None = None  # an evaluate run's id: audit its model's scores instead of the dataset


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "augment": {"augment": AugmentConfig},
    "train_augment": {"train_augment": TrainAugmentConfig},
    "train": {"train": TrainConfig},
    "evaluate": {"evaluate": EvaluateConfig},
    "predict": {"predict": PredictConfig},
    "prepare": {"prepare": PrepareConfig},
    "audit": {"audit": AuditConfig},
}


def data_schemas() -> dict[str, type]:
    """The data group's schemas: `DataConfig` (the keys every dataset has, from `src.data.settings`), and for
    each registered dataset whose indexer takes more than `root`, `DataConfig` plus those parameters, typed
    and defaulted by the indexer's signature: a dataset's own keys (`data.compression`, `data.methods`) are
    declared once, by its indexer. A data YAML selects its own with `override /schema/data@_here_: <name>`.
    """
    from src.data.indexes import DATASETS
    from src.data.settings import DataConfig

    schemas: dict[str, type] = {"data": DataConfig}
    for name, dataset in DATASETS.items():
        hints = signature_hints(dataset.indexer)
        own = [p for p in inspect.signature(dataset.indexer).parameters.values() if p.name != "root"]
        if not own:
            continue
        fields = []
        for parameter in own:
            kind = config_type(hints.get(parameter.name, Any))
            if parameter.default is inspect.Parameter.empty:
                default = field(default=MISSING)
            elif isinstance(parameter.default, list | tuple):
                default = field(default_factory=lambda value=parameter.default: list(value))
            else:
                default = field(default=parameter.default)
            fields.append((parameter.name, kind, default))
        schema = dataclasses.make_dataclass(f"{name.capitalize()}DataConfig", fields, bases=(DataConfig,))
        schema.__doc__ = f"The {dataset.title} data keys: every dataset's, then its indexer's own."
        schemas[name] = schema
    return schemas


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore under group `schema/<group>`: the tasks' and perturbations'
    below, the model's, weights' and trainer's generated from their constructors, and the data group's from
    `src.data.settings`. Idempotent: storing again replaces them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    generated = {
        "data": data_schemas(),
        "model": {"model": model_schema()},
        "weights": weights_schemas(),
        "trainer": {"trainer": trainer_schema()},
    }
    for group, nodes in {**GROUP_SCHEMAS, **generated}.items():
        for name, node in nodes.items():
            store.store(group=f"schema/{group}", name=name, node=node)

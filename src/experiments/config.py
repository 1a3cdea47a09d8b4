"""The configuration: where it lives, its resolvers and schemas, and the checks a composed config passes
before any run starts (`check_config`, once per run)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.data.settings import SETTINGS, settings_from
from src.experiments.hardware import choose_precision
from src.experiments.locations import CONFIG_DIR, PROJECT_ROOT  # noqa: F401 - re-exported: entry points read them here
from src.experiments.schemas import register_schemas
from src.models.contract import resolve_input
from src.utils.errors import ConfigError

if not OmegaConf.has_resolver("model_input"):
    # ${model_input:size,${model.net}}: a field of the input contract the net class declares
    OmegaConf.register_new_resolver("model_input", resolve_input)
if not OmegaConf.has_resolver("auto_precision"):
    # ${auto_precision:${.accelerator}}: the training precision that fits the hardware (src/experiments/hardware.py)
    OmegaConf.register_new_resolver(
        "auto_precision", lambda accelerator: choose_precision(str(accelerator)).precision
    )
if not OmegaConf.has_resolver("optuna_storage"):
    # ${optuna_storage:${paths.tracking_uri}}: hparams_search's study, next to the MLflow store
    OmegaConf.register_new_resolver("optuna_storage", lambda uri: optuna_storage(str(uri)))
register_schemas()  # every compose path imports this module (for CONFIG_DIR) before it composes


def optuna_storage(tracking_uri: str) -> str:
    """The SQLite URL of the Optuna studies: optuna.db in the folder of a local MLflow store (a sqlite:///
    database, a file: or plain path), else in the project root (a tracking server keeps its store elsewhere)."""
    from urllib.parse import urlparse

    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().parent
    elif tracking_uri.startswith("file:") or "://" not in tracking_uri:
        folder = Path(urlparse(tracking_uri).path if tracking_uri.startswith("file:") else tracking_uri)
        folder = folder.expanduser().parent
    else:
        folder = PROJECT_ROOT
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


# Trainer values Lightning accepts but no run can use (and checked here, before any Trainer is built);
# the types of every trainer key are checked against Lightning's signature (`check_types`)
TRAINER_MINIMUMS = (
    ("trainer.max_epochs", 1, "must be at least 1"),
    ("trainer.min_epochs", 0, "must be at least 0"),
    ("trainer.log_every_n_steps", 1, "must be at least 1"),
    ("trainer.val_check_interval", 1e-9, "must be > 0 (a fraction of an epoch, or a number of batches)"),
    ("trainer.check_val_every_n_epoch", 1, "must be at least 1"),
    ("trainer.accumulate_grad_batches", 1, "must be at least 1"),
    ("trainer.gradient_clip_val", 0.0, "must be at least 0"),
)
# a missing value these configs can do without: scoring video files needs no dataset root
OPTIONAL_FOR_TASK = {"data.root": ("predict",)}


def _missing_keys(node: DictConfig | ListConfig, path: str = "") -> list[str]:
    """Keys whose value is the literal `???`, without resolving interpolations (OmegaConf.missing_keys would,
    and fails on the first that points at a missing value)."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    missing = []
    for key in keys:
        child = node._get_node(key)
        if child._is_missing():
            missing.append(f"{path}{key}")
        elif (
            isinstance(child, DictConfig | ListConfig)
            and not child._is_interpolation()
            and not child._is_none()
        ):
            missing += _missing_keys(child, f"{path}{key}.")
    return missing


def _missing_values(cfg: DictConfig) -> None:
    for key in _missing_keys(cfg):
        if key.startswith("hydra.") or cfg.get("task") in OPTIONAL_FOR_TASK.get(key, ()):
            continue
        if key.startswith("paths.datasets.") and key != f"paths.datasets.{cfg.data.name}":
            continue  # experiment=cross_dataset: only the evaluated set's folder is needed by this job
        raise ConfigError(f"{key} has no value and is mandatory here: add {key}=<value> to the command line")


def _unknown_keys(node: DictConfig, path: str = "") -> None:
    """Keys a structured config does not declare: Hydra lets `+group.key=value` add them to any node."""
    schema = OmegaConf.get_type(node)
    declared = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        if (
            path == "" and key == "hydra"
        ):  # Hydra's own node (compose(return_hydra_config=True)), its own schema
            continue
        if declared is not None and key not in declared:
            close = difflib.get_close_matches(str(key), declared, n=1)
            hint = f" (did you mean {path}{close[0]}?)" if close else ""
            raise ConfigError(f"{path}{key}: no such key in {path.rstrip('.') or 'the config'}{hint}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not (
            child._is_missing() or child._is_interpolation() or child._is_none()
        ):
            _unknown_keys(child, f"{path}{key}.")


def _net_arguments(model: DictConfig) -> None:
    """model.net's keys against the constructor of the class it names (imported for its input contract anyway)."""
    import inspect

    from src.models.contract import net_class

    cls = net_class(str(model.net._target_))
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in model.net.keys():
        if not str(key).startswith("_") and key not in parameters:
            accepted = ", ".join(parameters) or "none"
            raise ConfigError(
                f"model.net.{key}: {cls.__name__} takes no such argument (its arguments: {accepted})"
            )


def _minimum(cfg: DictConfig, key: str, minimum: float, why: str) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
        raise ConfigError(f"{key}={value!r}: {why}")


def check_config(cfg: DictConfig, build: bool = True) -> None:
    """Fail early, with one line naming the key, on what composition cannot refuse: mandatory values left
    missing, keys added with `+` that no schema declares, the trainer keys against Lightning's signature and
    this machine (with `build`: the accelerator and devices; a Slurm sweep's jobs run elsewhere), the model's
    ranges (its constructor's `check_arguments` and the input contract's), the optimizer on a stand-in
    parameter, the callbacks' arguments, and the rules that span groups. Builds no Trainer, model or data.

    Args:
        cfg: a composed task config (train, evaluate, predict, prepare, audit).
        build: also judge what depends on this machine's hardware, and build the optimizer and callbacks.
    """
    _missing_values(cfg)
    _unknown_keys(cfg)
    if "shards" in cfg:
        _shard(int(cfg.shard), int(cfg.shards))
    _check_tags(cfg.get("tags") or [])
    crops = _data_settings(cfg.data)["crops"]
    if "trainer" in cfg:
        _check_trainer(cfg, build)
    if "model" in cfg:
        _check_model(cfg.model, crops.frames_per_video)
    if build and cfg.get("task") == "train":
        _check_built(cfg)


def _check_tags(tags) -> None:
    """tags=[...] become MLflow tag names (`tag.<name>`): letters, digits and _ - . / and spaces only."""
    import re

    for tag in tags:
        if not re.fullmatch(r"[\w\-./ ]+", str(tag)):
            raise ConfigError(
                f"tags: {tag!r} is not a valid MLflow tag name; use letters, digits, _ - . / or spaces"
            )


def _shard(shard: int, shards: int) -> None:
    """prepare.py's part of the videos: shard i of n builds those whose path hashes to i modulo n."""
    if shards < 1 or not 0 <= shard < shards:
        raise ConfigError(
            f"shard={shard} shards={shards}: need shards >= 1 and 0 <= shard < shards "
            "(shard=0 shards=1 builds every video; -m shard=0,1 shards=2 builds them in two jobs)"
        )


def _data_settings(data: DictConfig) -> dict:
    """The data keys built into their settings objects: each range checked where it is declared."""
    keys = {f.name for group in SETTINGS.values() for f in dataclasses.fields(group)}
    return settings_from({key: data[key] for key in data.keys() if key in keys})


def _check_trainer(cfg: DictConfig, hardware: bool) -> None:
    """Each trainer key's type against Lightning's signature, the ranges Lightning leaves to the run, and with
    `hardware` the accelerator and devices through Lightning's public accelerator registry."""
    import lightning.pytorch as pl
    from lightning.pytorch.accelerators import AcceleratorRegistry

    check_types("trainer", cfg.trainer, pl.Trainer)
    for key, minimum, why in TRAINER_MINIMUMS:
        _minimum(cfg, key, minimum, why)
    for stage in ("train", "val", "test", "predict"):
        value = cfg.trainer.get(f"limit_{stage}_batches")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(
                f"trainer.limit_{stage}_batches={value!r}: an int >= 0 (batches) or a float in [0, 1] (fraction)"
            )
    accelerator, devices = cfg.trainer.get("accelerator"), cfg.trainer.get("devices")
    if not hardware or not isinstance(accelerator, str) or accelerator == "auto":
        return
    names = ("cuda", "mps") if accelerator == "gpu" else (accelerator,)
    known = sorted(AcceleratorRegistry.available_accelerators())
    if not any(name in known for name in names):
        raise ConfigError(f"trainer.accelerator={accelerator!r}: choose one of auto, gpu, {', '.join(known)}")
    usable = [AcceleratorRegistry[n]["accelerator"] for n in names if n in known]
    usable = [cls for cls in usable if cls.is_available()]
    if not usable:
        raise ConfigError(
            f"trainer.accelerator={accelerator!r}: no such device on this machine; use trainer=default (CPU)"
        )
    if devices not in ("auto", -1):
        try:
            usable[0].parse_devices(
                OmegaConf.to_object(devices) if isinstance(devices, ListConfig) else devices
            )
        except Exception as error:
            raise ConfigError(f"trainer.devices={devices!r}: {error}".splitlines()[0]) from None


def _check_model(model: DictConfig, frames_per_video: int) -> None:
    """The model's ranges where they are declared (DeepfakeDetector's `check_arguments`, the input contract),
    its net's arguments, and the one rule that spans groups: a clip fits in the frames cached per video."""
    from src.data.settings import InputContract
    from src.models.module import check_arguments

    check_arguments(model.batch_size, model.pos_weight)
    _net_arguments(model)
    contract = InputContract.of(model.input)
    if contract.kind == "clip" and contract.frames_per_clip > frames_per_video:
        raise ConfigError(
            f"model.input.frames_per_clip={contract.frames_per_clip} > data.frames_per_video="
            f"{frames_per_video}: a clip cannot have more frames than are cached per video"
        )


def _check_built(cfg: DictConfig) -> None:
    """What only its own constructor can judge, in milliseconds and without data: the optimizer and scheduler
    built on a stand-in parameter, and the callbacks (their arguments' types checked first)."""
    import hydra
    import torch

    def build(key: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except hydra.errors.InstantiationException as error:
            raise ConfigError(f"{key}: {error.__cause__ or error}".splitlines()[0]) from None
        except Exception as error:
            raise ConfigError(f"{key}: {error}".splitlines()[0]) from None

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build("model.optimizer", lambda: hydra.utils.instantiate(cfg.model.optimizer)([parameter]))
    if cfg.model.get("scheduler") is not None:
        build("model.scheduler", lambda: hydra.utils.instantiate(cfg.model.scheduler)(optimizer=optimizer))
    for name, spec in (cfg.get("callbacks") or {}).items():
        if isinstance(spec, DictConfig) and "_target_" in spec:
            from hydra.utils import get_class

            check_types(f"callbacks.{name}", spec, get_class(str(spec._target_)))
            build(f"callbacks.{name}", lambda spec=spec: hydra.utils.instantiate(spec))


def check_types(key: str, spec: DictConfig, constructor: Callable) -> None:
    """Each value of `spec` against the annotation of the same parameter of `constructor` (a class: its
    `__init__`, and its bases' for arguments passed on as **kwargs): simple types, optionals, unions and
    literals are judged; a nested `_target_` node matches any class; other annotations are not second-guessed.

    Args:
        key: where `spec` is in the config (the error names `<key>.<argument>`).
        spec: the node of arguments.
        constructor: the class or function they are passed to.
    """
    from src.experiments.schemas import signature_hints

    hints: dict = {}
    classes = reversed(constructor.__mro__) if isinstance(constructor, type) else (constructor,)
    for cls in classes:
        hints.update(signature_hints(cls))
    for name in spec.keys():
        hint = hints.get(str(name))
        if hint is None or str(name).startswith("_") or OmegaConf.is_missing(spec, name):
            continue
        value = spec.get(name)
        if not _matches(value, hint):
            raise ConfigError(f"{key}.{name}={value!r}: {_describe(hint)}")


def _options(hint: Any) -> tuple:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(o for option in typing.get_args(hint) for o in _options(option))
    return (hint,)


def _matches(value: Any, hint: Any) -> bool:
    import typing

    for option in _options(hint):
        origin = typing.get_origin(option) or option
        if option is Any or (option is type(None) and value is None):
            return True
        if origin is typing.Literal:
            if any(value == v and type(value) is type(v) for v in typing.get_args(option)):
                return True
        elif option in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
            if option is float or isinstance(value, int):
                return True
        elif option in (bool, str) and isinstance(value, option):
            return True
        elif origin in (list, tuple) and isinstance(value, ListConfig | list | tuple):
            return True
        elif origin is dict and isinstance(value, DictConfig | dict):
            return True
        elif isinstance(value, DictConfig) and "_target_" in value:  # an object Hydra builds
            return True
        elif option not in (int, float, bool, str, type(None)) and origin not in (list, tuple, dict):
            if isinstance(option, type) and isinstance(value, option):
                return True
    return False


def _describe(hint: Any) -> str:
    """What a value must be, as the error says it: `must be int or null`, `choose one of 16-mixed, ...`."""
    import typing

    options = _options(hint)
    literals = [v for o in options if typing.get_origin(o) is typing.Literal for v in typing.get_args(o)]
    if literals and all(typing.get_origin(o) is typing.Literal or o is type(None) for o in options):
        literals = list(dict.fromkeys(str(v) for v in literals))  # 16 and "16" read alike
        return "choose one of " + ", ".join(literals) + (", null" if type(None) in options else "")
    names = [
        "null" if o is type(None) else getattr(o, "__name__", None) or str(o).replace("typing.", "")
        for o in options
    ]
    return "must be " + " or ".join(names)


def config_error_line(error: BaseException) -> str:
    """One line for a config that does not compose: what Hydra says, with the key, the value and why.

    Hydra's report spans several lines (the override, OmegaConf's message, its full_key and object_type
    lines, a hint about HYDRA_FULL_ERROR); its `+key=value` hint is dropped where the node has a schema,
    since a key no schema declares is refused by check_config anyway."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    cause = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, MissingConfigException):  # an unknown option: name the ones there are
        lines = lines[:1] + ([f"choose one of {', '.join(error.options)}"] if error.options else [])
        return "; ".join(line.removeprefix("In 'train': ").removeprefix("In 'evaluate': ") for line in lines)
    head = " ".join(lines)
    if not isinstance(cause, OmegaConfBaseException):
        return head
    why = (getattr(cause, "msg", None) or str(cause)).splitlines()[0]
    if head.startswith("Error merging override "):  # a value of the wrong type
        return f"{head.removeprefix('Error merging override ')}: {why}"
    schema, key = getattr(cause, "object_type", None), str(getattr(cause, "full_key", "") or "")
    if "To append to your config use" in head and dataclasses.is_dataclass(schema) and key:
        # a key the schema does not declare: `+key=value` would only fail later, so suggest the closest key
        head = head[: head.index("To append to your config use")].strip().rstrip(".")
        group, _, name = key.rpartition(".")
        close = difflib.get_close_matches(name, [f.name for f in dataclasses.fields(schema)], n=1)
        hint = f" (did you mean {group + '.' if group else ''}{close[0]}?)" if close else ""
        return f"{head}: no such key in {group or 'the config'}{hint}"
    return f"{head.rstrip('.')}: {why}"

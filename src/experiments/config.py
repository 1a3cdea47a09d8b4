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
from src.experiments.runtime import quieter
from src.experiments.schemas import register_schemas
from src.models.contract import resolve_input
from src.utils.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
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


PRECISIONS = (
    "32-true",
    "32",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
)
# (key, minimum): the types are the schemas'; ranges are not (the data keys' ranges are their settings')
MINIMUMS = (
    ("trainer.max_epochs", 1),
    ("trainer.min_epochs", 0),
    ("trainer.log_every_n_steps", 1),
    ("model.batch_size", 1),
    ("model.input.size", 16),
    ("model.input.frames_per_clip", 1),
    ("trainer.val_check_interval", 1e-9),
    ("trainer.check_val_every_n_epoch", 1),
    ("trainer.accumulate_grad_batches", 1),
    ("trainer.gradient_clip_val", 0.0),
)
WHY_MINIMUM = {"trainer.val_check_interval": "must be > 0 (a fraction of an epoch, or a number of batches)"}
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


def _minimum(cfg: DictConfig, key: str, minimum: float) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
        why = WHY_MINIMUM.get(key, f"must be at least {minimum:g}")
        raise ConfigError(f"{key}={value!r}: {why}")


def check_config(cfg: DictConfig, build: bool = True) -> None:
    """Fail early, with one line naming the key, on what the structured configs (src/experiments/schemas.py)
    cannot refuse at composition: mandatory values left missing, keys added with `+` that no schema
    declares, arguments the model's network does not take, ranges and combinations; with `build`, what only
    a constructor can judge (Trainer, optimizer, callbacks). Runs before any run starts, data is touched or
    weights are loaded."""
    _missing_values(cfg)
    _unknown_keys(cfg)
    for key, minimum in MINIMUMS:
        _minimum(cfg, key, minimum)
    if "shards" in cfg:
        _shard(int(cfg.shard), int(cfg.shards))
    _check_tags(cfg.get("tags") or [])
    crops = _data_settings(cfg.data)["crops"]
    if "trainer" in cfg:
        precision = str(cfg.trainer.get("precision"))
        if precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if "model" in cfg:
        _check_model(cfg.model, crops.frames_per_video)
    if build:
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


def _check_model(model: DictConfig, frames_per_video: int) -> None:
    pos_weight = model.get("pos_weight")
    if not (
        pos_weight is None or pos_weight == "auto" or (isinstance(pos_weight, int | float) and pos_weight > 0)
    ):
        raise ConfigError(f"model.pos_weight={pos_weight!r}: null, a positive number, or auto")
    _net_arguments(model)
    contract = model.input
    if contract.kind not in ("frame", "clip"):
        raise ConfigError(f"model.input.kind={contract.kind!r}: must be frame or clip")
    if contract.kind == "clip" and contract.frames_per_clip > frames_per_video:
        raise ConfigError(
            f"model.input.frames_per_clip={contract.frames_per_clip} > data.frames_per_video="
            f"{frames_per_video}: a clip cannot have more frames than are cached per video"
        )
    if contract.fixed_size and contract.size != contract.fixed_size:
        raise ConfigError(
            f"model.input.size={contract.size}: {model.name} has a fixed {contract.fixed_size}x{contract.fixed_size} "
            "input (its dense layer is sized for it)"
        )


def _check_built(cfg: DictConfig) -> None:
    """What only its own constructor can judge, built once before the run starts (milliseconds, no data):
    the Trainer (devices, accelerator, limits), the optimizer and scheduler on a stand-in parameter, and the
    callbacks, whose arguments are also checked against the types their constructors declare."""
    import hydra

    def build(key: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except hydra.errors.InstantiationException as error:
            raise ConfigError(f"{key}: {error.__cause__ or error}".splitlines()[0]) from None
        except Exception as error:
            raise ConfigError(f"{key}: {error}".splitlines()[0]) from None

    if "trainer" in cfg:
        # the probe's "GPU available: ..." lines: the real Trainer prints them
        with quieter("lightning.pytorch.utilities.rank_zero"):
            build(
                "trainer",
                lambda: hydra.utils.instantiate(
                    cfg.trainer,
                    logger=False,
                    callbacks=[],
                    plugins=None,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                ),
            )
    if cfg.get("task") == "train":
        import torch

        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = build(
            "model.optimizer", lambda: hydra.utils.instantiate(cfg.model.optimizer)([parameter])
        )
        if cfg.model.get("scheduler") is not None:
            build(
                "model.scheduler", lambda: hydra.utils.instantiate(cfg.model.scheduler)(optimizer=optimizer)
            )
        for name, spec in (cfg.get("callbacks") or {}).items():
            if isinstance(spec, DictConfig) and "_target_" in spec:
                _argument_types(f"callbacks.{name}", spec)
                build(f"callbacks.{name}", lambda spec=spec: hydra.utils.instantiate(spec))


def _argument_types(key: str, spec: DictConfig) -> None:
    """Each argument against the simple type (int, float, bool, str, or an Optional/Union of them) that the
    constructor of `spec._target_` declares; a constructor that declares none is not second-guessed."""
    import types
    import typing

    from hydra.utils import get_class

    hints: dict = {}
    for cls in reversed(get_class(str(spec._target_)).__mro__):  # a subclass passing **kwargs on to its base
        try:
            hints.update(typing.get_type_hints(cls.__init__))
        except Exception:  # an unresolvable annotation: leave it to the constructor
            continue
    simple = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),)}
    for name in spec.keys():
        hint, value = hints.get(str(name)), spec.get(name)
        if hint is None or str(name).startswith("_") or OmegaConf.is_interpolation(spec, name):
            continue
        options = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        )
        if not all(option in simple for option in options):
            continue
        allowed = tuple(t for option in options for t in simple[option])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wanted = " or ".join("null" if o is type(None) else o.__name__ for o in options)
            raise ConfigError(f"{key}.{name}={value!r}: must be {wanted}")


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

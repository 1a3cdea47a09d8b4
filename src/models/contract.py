"""A network's input contract, declared once by the network class.

Each net class has `input_kind` ("frame": single crops (B, 3, S, S); "clip": ordered crops (B, T, 3, S, S))
and a classmethod `input_contract(**net_kwargs)` returning the dict below. conf/includes/model.yaml
reads it through the `model_input` resolver, so the YAML never repeats size or normalization, and the
data module gets exactly what the network expects. Light on purpose: the net class is imported only when
a contract is asked for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from src.utils.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTRACT_KEYS = ("kind", "size", "mean", "std", "frames_per_clip", "fixed_size")


def contract(
    kind: str,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    frames_per_clip: int = 1,
    fixed_size: int | None = None,
) -> dict[str, Any]:
    """kind frame|clip; size: square crop side in pixels; mean/std: per-channel normalization of RGB in
    [0, 1]; frames_per_clip: crops per item (1 for frame nets); fixed_size: the only size that works, if any."""
    if kind not in ("frame", "clip"):
        raise ValueError(f"input kind {kind!r}: must be frame or clip")
    return {
        "kind": kind,
        "size": int(size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "frames_per_clip": int(frames_per_clip),
        "fixed_size": fixed_size,
    }


def net_class(target: str) -> type:
    """The class a `model.net._target_` names."""
    module_name, _, class_name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"model.net._target_={target}: no such class ({error})") from error


def default_kwarg(cls: type, name: str) -> Any:
    """The default of constructor argument `name` of `cls` (so a contract follows the class's defaults)."""
    return inspect.signature(cls).parameters[name].default


@lru_cache(maxsize=64)
def _contract_of(target: str, kwargs: tuple) -> dict[str, Any]:
    cls = net_class(target)
    if not hasattr(cls, "input_contract"):
        raise ConfigError(f"model.net._target_={target}: the class declares no input_contract()")
    return cls.input_contract(**dict(kwargs))


def input_contract_of(net: Mapping) -> dict[str, Any]:
    """The input contract of the network a `model.net` config (with `_target_`) describes."""
    kwargs = {k: v for k, v in net.items() if not k.startswith("_")}
    hashable = tuple(
        sorted((k, v) for k, v in kwargs.items() if isinstance(v, str | int | float | bool | None))
    )
    return dict(_contract_of(str(net["_target_"]), hashable))


def resolve_input(key: str, net: Mapping) -> Any:
    """OmegaConf resolver `${model_input:<key>,${model.net}}`: one field of the net's input contract."""
    if key not in CONTRACT_KEYS:
        raise ConfigError(f"model_input: unknown contract key {key!r} (one of {', '.join(CONTRACT_KEYS)})")
    return input_contract_of(net)[key]

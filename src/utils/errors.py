"""The errors a user fixes with a value, a file or the environment: reported in one line, never a traceback."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A problem the user fixes with a value, a file or the environment: reported in one line."""


class ConfigError(UserError, ValueError):
    """A config value that is out of range or clashes with another: the message names the key."""


def check(condition: bool, key: str, value: Any, rule: str) -> None:
    """Raise `ConfigError("<key>=<value>: <rule>")` unless `condition` (the key as users type it)."""
    if not condition:
        raise ConfigError(f"{key}={value!r}: {rule}")

"""YAML mappings into typed dataclasses: an unknown key, a wrong type or a failed check is a
ConfigError that names the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


class ConfigError(ValueError):
    """A YAML file does not describe a valid configuration; the message names file and key."""


def build(cls, data: Any, where: str):
    """Instantiate dataclass `cls` from a mapping, recursing into dataclass fields; unknown
    or missing keys raise ConfigError naming `where` (file and key path)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_of(hints[name])
        optional_and_absent = value is None and type(None) in typing.get_args(hints[name])
        kwargs[name] = (
            build(sub, value, f"{where}.{name}") if sub and not optional_and_absent else value
        )
    try:
        return cls(**kwargs)
    except TypeError as err:  # a missing required key
        raise ConfigError(f"{where}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _dataclass_of(hint: Any):
    """The section dataclass a field holds (also for an optional "X | None" field), or None."""
    return next(
        (t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and dataclasses.is_dataclass(t)),
        None,
    )

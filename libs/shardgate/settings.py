"""Settings dataclasses read from `SHARDGATE_<FIELD>` environment variables, one rule for every service.

A field's environment variable is its name in upper case behind `SHARDGATE_`; the value is converted by
the type of the field's default (int, float, bool, str, or a tuple of strings written comma-separated).
An unset or empty variable keeps the default, so each default is explained once, in the dataclass.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

_S = TypeVar("_S")


def _convert(default: Any, raw: str) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int | float):
        return type(default)(raw)
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def settings_from_env(cls: type[_S], env: Mapping[str, str] | None = None) -> _S:
    """An instance of the dataclass `cls` with every field the environment sets."""
    e = os.environ if env is None else env
    base = cls()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(base):  # type: ignore[arg-type]
        raw = e.get(f"SHARDGATE_{f.name.upper()}", "")
        if raw.strip():
            values[f.name] = _convert(getattr(base, f.name), raw)
    return dataclasses.replace(base, **values)  # type: ignore[type-var]

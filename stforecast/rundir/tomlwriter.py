"""A small TOML writer for resolved recipes (`recipe.toml` in a run directory).

The standard library reads TOML but does not write it. A recipe holds only strings, numbers,
booleans, datetimes, lists/tuples and nested tables, so a writer for exactly those types is short
and saves a dependency. `None` has no TOML spelling: such keys are left out, which reads back as
the field's default (every optional recipe field defaults to `None`). The tests check that every
recipe survives `tomllib.loads(dumps(...))`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    """One value, inline (arrays and inline tables included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        # JSON string escapes (\" \\ \n \t \uXXXX ...) are all valid in TOML basic strings.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = (f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    if hasattr(value, "item"):  # numpy / torch scalars
        return _value(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _table(path: list[str], table: Mapping[str, Any], out: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path:
        if out:
            out.append("")
        out.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, value in scalars:
        out.append(f"{_key(str(key))} = {_value(value)}")
    for key, value in tables:
        _table([*path, str(key)], value, out)


def dumps(data: Mapping[str, Any]) -> str:
    """A TOML document for `data` (a mapping of tables and values); `None` values are omitted."""
    out: list[str] = []
    _table([], data, out)
    return "\n".join(out) + "\n"

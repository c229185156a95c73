"""Writing a family declaration back as TOML (the standard library reads TOML, never writes).

Only what :meth:`FamilySpec.to_dict <finscore.families.spec.FamilySpec.to_dict>` produces:
top-level scalars, tables of scalars and of one level of sub-tables, and arrays of tables;
values are strings, integers, finite floats, booleans and lists of those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_toml"]


def dump_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML text that :func:`tomllib.loads` reads back equal."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_tables(v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for k, v in data.items():
        if _is_table(v):
            _table(lines, _key(k), v)
    for k, v in data.items():
        if _is_tables(v):
            for item in v:
                lines += ["", f"[[{_key(k)}]]"]
                lines += [f"{_key(a)} = {_value(b)}" for a, b in item.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], name: str, table: Mapping[str, Any]) -> None:
    lines += ["", f"[{name}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not _is_table(v)]
    for k, v in table.items():
        if _is_table(v):
            _table(lines, f"{name}.{_key(k)}", v)


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _key(k: str) -> str:
    bare = k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k)
    return k if bare else _string(k)


def _string(s: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not a finite number: {v!r}")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")

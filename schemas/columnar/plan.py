"""The shape of a schema as the columnar codec sees it: a flat list of typed fields.

:func:`plan` turns a bundled ``.avsc`` into :class:`Field` values. Supported field types are
the primitives (``null`` only inside a union), ``enum``, decimals on ``bytes``, two-branch
unions with ``null`` (``["null", T]`` or ``[T, "null"]``, T any of those), and arrays whose
items are a primitive or enum (``kind="array"`` with one item field named ``""``) or a record of
them. Anything else (maps, fixed, nested records outside an array, arrays of arrays, records
with no fields) raises :class:`SchemaError`: the codec is for our own schemas, which all fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finscore.schemas.exceptions import SchemaError

PRIMITIVES = ("boolean", "int", "long", "float", "double", "string", "bytes")
KINDS = (*PRIMITIVES, "enum", "decimal", "array")
MAX_DECIMAL_PRECISION = 18  # unscaled values fit an int64


@dataclass(frozen=True)
class Field:
    """One field: ``kind`` is a primitive name, ``enum``, ``decimal`` or ``array``.

    ``nullable``: a union with ``null``, whose null branch has index ``null_index``.
    ``logical``: the logical type of a long (``timestamp-millis``/``-micros``) or ``""``.
    ``items``: the fields of an array's records (one field named ``""`` for an array of
    scalars). ``default`` is the schema default (``has_default`` tells a missing one from null).
    """

    name: str
    kind: str
    symbols: tuple[str, ...] = ()
    scale: int = 0
    precision: int = 0
    nullable: bool = False
    null_index: int = 0
    items: tuple[Field, ...] = ()
    record_items: bool = False
    has_default: bool = False
    default: Any = None
    logical: str = ""


def plan(schema: dict) -> tuple[Field, ...]:
    """The fields of the record ``schema``, in write order."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError("the columnar codec reads records only")
    named: dict[str, Any] = {}
    _collect(schema, schema.get("namespace", ""), named)
    return tuple(_field(f, named, top=True) for f in _fields(schema))


def _fields(record: dict) -> list[dict]:
    fields = record.get("fields") or []
    if not fields:
        raise SchemaError(f"record {record.get('name')} has no fields")
    return fields


def _collect(s: Any, ns: str, named: dict[str, Any]) -> None:
    if isinstance(s, list):
        for b in s:
            _collect(b, ns, named)
    elif isinstance(s, dict):
        kind = s.get("type")
        if kind in ("record", "enum", "fixed"):
            name = s["name"]
            ns = name.rpartition(".")[0] if "." in name else s.get("namespace", ns)
            named[name.rpartition(".")[2]] = s
            named[f"{ns}.{name.rpartition('.')[2]}" if ns else name] = s
            for f in s.get("fields", []):
                _collect(f["type"], ns, named)
        elif kind == "array":
            _collect(s["items"], ns, named)
        elif kind == "map":
            _collect(s["values"], ns, named)
        elif isinstance(kind, dict | list):
            _collect(kind, ns, named)


def _resolve(t: Any, named: dict[str, Any]) -> Any:
    while isinstance(t, str) and t not in PRIMITIVES and t != "null":
        if t not in named:
            raise SchemaError(f"unknown type name {t!r}")
        t = named[t]
    while isinstance(t, dict) and isinstance(t.get("type"), dict | list):
        t = t["type"]
    return t


def _scalar(name: str, t: Any, named: dict[str, Any]) -> Field:
    """A non-union, non-array field type."""
    t = _resolve(t, named)
    if isinstance(t, str):
        if t == "null":
            raise SchemaError(f"field {name}: a bare null is not supported")
        return Field(name, t)
    kind = t.get("type")
    if kind == "enum":
        return Field(name, "enum", symbols=tuple(t["symbols"]))
    if kind == "bytes" and t.get("logicalType") == "decimal":
        precision = int(t["precision"])
        if precision > MAX_DECIMAL_PRECISION:
            raise SchemaError(f"field {name}: decimal precision {precision} > 18 (int64)")
        return Field(name, "decimal", scale=int(t.get("scale", 0)), precision=precision)
    if kind in PRIMITIVES:  # {"type": "long", "logicalType": "timestamp-millis"} and friends
        return Field(name, kind, logical=str(t.get("logicalType", "")))
    raise SchemaError(f"field {name}: type {kind!r} is not supported by the columnar codec")


def _field(f: dict, named: dict[str, Any], *, top: bool) -> Field:
    name, t = f["name"], _resolve(f["type"], named)
    has_default, default = "default" in f, f.get("default")
    if isinstance(t, list):
        if len(t) != 2 or "null" not in t:
            raise SchemaError(f"field {name}: only unions of null and one type are supported")
        null_index = t.index("null")
        inner = _scalar(name, t[1 - null_index], named)
        return Field(
            name,
            inner.kind,
            symbols=inner.symbols,
            scale=inner.scale,
            precision=inner.precision,
            logical=inner.logical,
            nullable=True,
            null_index=null_index,
            has_default=has_default,
            default=default,
        )
    if isinstance(t, dict) and t.get("type") == "array":
        if not top:
            raise SchemaError(f"field {name}: arrays inside arrays are not supported")
        items = _resolve(t["items"], named)
        if isinstance(items, dict) and items.get("type") == "record":
            subs = tuple(_field(g, named, top=False) for g in _fields(items))
            if any(s.kind == "array" for s in subs):
                raise SchemaError(f"field {name}: arrays inside arrays are not supported")
            return Field(
                name,
                "array",
                items=subs,
                record_items=True,
                has_default=has_default,
                default=default,
            )
        return Field(
            name,
            "array",
            items=(_scalar("", items, named),),
            has_default=has_default,
            default=default,
        )
    if isinstance(t, dict) and t.get("type") == "record":
        raise SchemaError(f"field {name}: nested records are only supported as array items")
    out = _scalar(name, t, named)
    return Field(
        name,
        out.kind,
        symbols=out.symbols,
        scale=out.scale,
        precision=out.precision,
        logical=out.logical,
        has_default=has_default,
        default=default,
    )

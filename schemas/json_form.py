"""The JSON form of records: what people type into kcat and what ``finscore tail`` prints.

Reading (:func:`from_json`): field names as in the ``.avsc``; timestamps as ISO-8601 strings
(``Z`` or an offset; a naive time is UTC) or epoch integers (ms for ``timestamp-millis``, µs for
``timestamp-micros``); decimals as strings or numbers (quantised to the schema's scale, rejected
past its precision); bytes as base64; unions as plain values (``null`` or the value); enums as
their symbol. Fields the schema does not name are ignored and missing fields that have a
default get it (schema evolution). A JSON number where the schema wants a string (ids typed
as numbers in a console) is accepted and turned into its decimal text. Anything else that does
not fit raises :class:`DecodeError` naming the field (``Transaction.amount``).

Writing (:func:`to_jsonable`): timestamps as ISO-8601 strings with ``Z``, decimals as strings,
bytes as base64, everything else as is.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from finscore.schemas.exceptions import DecodeError, EncodeError

TIMESTAMP_TYPES = ("timestamp-millis", "timestamp-micros")
_UNITS = {"timestamp-millis": 1000, "timestamp-micros": 1_000_000}


def epoch(value: datetime, logical: str | None) -> int:
    """``value`` as an integer epoch in the unit of ``logical`` (naive datetimes are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros if logical == "timestamp-micros" else micros // 1000


def iso(value: int, logical: str) -> str:
    """An epoch integer in the unit of ``logical`` as ISO-8601 text ending in ``Z``."""
    unit = _UNITS[logical]
    whole = datetime.fromtimestamp(value // unit, tz=UTC)  # integer maths: no float rounding
    dt = whole.replace(microsecond=(value % unit) * (1_000_000 // unit))
    spec = "microseconds" if logical == "timestamp-micros" else "milliseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def to_decimal(value: Any, scale: int, precision: int, field: str) -> Decimal:
    """``value`` (Decimal, int, float or str) quantised to ``scale``; EncodeError if it won't fit."""
    if isinstance(value, bool):
        raise EncodeError(f"field {field}: {value!r} is not a decimal number")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        if not d.is_finite():
            raise EncodeError(f"field {field}: {value!r} is not a finite decimal")
        q = d.quantize(Decimal(1).scaleb(-scale))
    except (InvalidOperation, ValueError, TypeError):
        raise EncodeError(f"field {field}: {value!r} is not a decimal number") from None
    if len(q.as_tuple().digits) > precision:
        raise EncodeError(f"field {field}: {value!r} exceeds decimal precision {precision}")
    return q


def from_json(value: Any, schema: Any, path: str, named: dict[str, Any] | None = None) -> Any:
    """Convert the JSON ``value`` into the Python value fastavro expects for ``schema``."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return from_json(value, named[schema], path, named)
        return _primitive(value, schema, None, path)
    if isinstance(schema, list):  # union: null, or the first branch that converts
        if value is None and "null" in schema:
            return None
        for branch in schema:
            if branch == "null":
                continue
            try:
                return from_json(value, branch, path, named)
            except DecodeError:
                continue
        raise _bad(f"{path}: {value!r} fits no branch of the union {schema}")
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        if schema.get("namespace"):
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        if not isinstance(value, dict):
            raise _bad(f"{path}: expected an object")
        out = {}
        for f in schema["fields"]:
            name = f["name"]
            if name in value:
                out[name] = from_json(value[name], f["type"], f"{path}.{name}", named)
            elif "default" in f:
                out[name] = _default(f["default"], f["type"], f"{path}.{name}", named)
            else:
                raise _bad(f"missing required field {path}.{name}")
        return out
    if kind == "enum":
        named[schema["name"]] = schema
        if value not in schema["symbols"]:
            raise _bad(f"{path}: {value!r} is not one of {schema['symbols']}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise _bad(f"{path}: expected an array")
        return [from_json(v, schema["items"], f"{path}[{i}]", named) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _bad(f"{path}: expected an object")
        return {k: from_json(v, schema["values"], f"{path}.{k}", named) for k, v in value.items()}
    return _primitive(value, kind, schema, path)


def _bad(reason: str) -> DecodeError:
    return DecodeError(reason, encoding="json")


def _default(default: Any, schema: Any, path: str, named: dict[str, Any]) -> Any:
    """An Avro field default (JSON form, union defaults belong to the first branch)."""
    if isinstance(schema, list):
        return None if default is None else from_json(default, schema[0], path, named)
    if schema == "bytes" or (isinstance(schema, dict) and schema.get("type") == "bytes"):
        return default.encode("latin-1") if isinstance(default, str) else default
    return copy.deepcopy(default)


def _primitive(value: Any, kind: str, schema: dict | None, path: str) -> Any:
    logical = schema.get("logicalType") if schema else None
    if logical in TIMESTAMP_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return epoch(datetime.fromisoformat(value.replace("Z", "+00:00")), logical)
            except ValueError:
                raise _bad(f"{path}: {value!r} is not an ISO-8601 timestamp") from None
        raise _bad(f"{path}: expected an ISO-8601 string or an epoch integer, got {value!r}")
    if logical == "decimal" and schema is not None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(f"{path}: expected a decimal string or number, got {value!r}")
        scale, precision = int(schema.get("scale", 0)), int(schema["precision"])
        try:
            return to_decimal(value, scale, precision, path)
        except EncodeError as exc:
            raise _bad(str(exc).removeprefix("field ")) from None
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # an id typed as a number in a console
        raise _bad(f"{path}: expected a string, got {value!r}")
    if kind == "bytes":
        if not isinstance(value, str):
            raise _bad(f"{path}: expected base64 text, got {value!r}")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise _bad(f"{path}: invalid base64") from None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(f"{path}: expected true or false, got {value!r}")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"{path}: expected an integer, got {value!r}")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(f"{path}: expected a number, got {value!r}")
        return float(value)
    if kind == "null":
        if value is not None:
            raise _bad(f"{path}: expected null, got {value!r}")
        return None
    raise _bad(f"{path}: unsupported Avro type {kind!r}")


def _to_json(value: Any, schema: Any, named: dict[str, Any]) -> Any:
    if value is None:
        return None
    if isinstance(schema, str):
        if schema in named:
            return _to_json(value, named[schema], named)
        if schema == "bytes":
            return base64.b64encode(value).decode()
        return value
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return _to_json(value, branches[0], named) if len(branches) == 1 else value
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {
            f["name"]: _to_json(value.get(f["name"]), f["type"], named) for f in schema["fields"]
        }
    if kind == "enum":
        named[schema["name"]] = schema
        return value
    if kind == "array":
        return [_to_json(v, schema["items"], named) for v in value]
    if kind == "map":
        return {k: _to_json(v, schema["values"], named) for k, v in value.items()}
    logical = schema.get("logicalType")
    if logical in TIMESTAMP_TYPES:
        return iso(epoch(value, logical) if isinstance(value, datetime) else value, logical)
    if logical == "decimal":
        return str(value)
    if kind == "bytes":
        return base64.b64encode(value).decode()
    return value


def to_json_value(record: dict, schema: dict) -> dict:
    """``record`` of ``schema`` as JSON-ready values (see module doc)."""
    return _to_json(record, schema, {})  # type: ignore[no-any-return]

"""One codec for every topic, three encodings told apart per message.

- **Avro single-object encoding** (``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO fingerprint
  of the writer schema's Parsing Canonical Form + Avro binary): the default; no server needed.
- **Confluent wire format** (``0x00`` + 4-byte big-endian schema id + Avro binary): writer
  schemas are fetched by id from a schema registry (``confluent_kafka.schema_registry``).
- **JSON** (a text document starting with ``{``): for people typing events into kcat.
  Field names as in the ``.avsc``; timestamps as ISO-8601 strings or epoch integers (ms for
  ``timestamp-millis``, µs for ``timestamp-micros``); decimals as strings or numbers; bytes as
  base64; unions as plain values; defaulted fields may be left out; numeric ids are accepted
  and turned into strings.

Decoded records are plain dicts: timestamps stay integers (epoch ms or µs, as the schema says),
decimals are :class:`decimal.Decimal`, enums are strings. Schema evolution: a codec reads with
its own (reader) schema and resolves any writer schema it knows — its own, the
``writer_schemas`` it was given, or one fetched from the registry — per the Avro rules (added
fields with defaults are filled in; removed fields are skipped).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from finscore.schemas.exceptions import DecodeError, EncodeError

SCHEMA_NAMES = (
    "transaction",
    "market_tick",
    "fraud_label",
    "fraud_flag",
    "price_signal",
    "model_update",
    "dead_letter",
)
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
TIMESTAMP_TYPES = ("timestamp-millis", "timestamp-micros")


@cache
def load_schema(name: str) -> dict:
    """The parsed JSON of ``schemas/<name>.avsc``."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files("finscore.schemas").joinpath(f"{name}.avsc").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def schema_path(name: str) -> str:
    """Filesystem path of a bundled ``.avsc`` (for tools that want a file)."""
    return str(resources.files("finscore.schemas").joinpath(f"{name}.avsc"))


def strip_timestamps(schema: Any) -> Any:
    """A copy of ``schema`` whose timestamp logical types are plain longs (no datetime cost)."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in TIMESTAMP_TYPES:
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: strip_timestamps(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [strip_timestamps(s) for s in schema]
    return schema


def fingerprint(schema: dict) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, 8 bytes little-endian."""
    canonical = to_parsing_canonical_form(copy.deepcopy(schema))
    return bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))  # already little-endian


@cache
def parsed_schema(name: str) -> dict:
    """The fastavro-parsed schema (timestamps as plain longs) for ``name``."""
    return fastavro.parse_schema(strip_timestamps(load_schema(name)))  # type: ignore[no-any-return]


def _decimal_fields(schema: dict) -> dict[str, int]:
    """Top-level decimal fields and their scales."""
    out = {}
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal":
            out[f["name"]] = int(t.get("scale", 0))
    return out


class Codec:
    """Encodes and decodes records of one schema in the three encodings (see module doc)."""

    def __init__(
        self,
        schema_name: str,
        *,
        registry: Any | None = None,
        subject: str | None = None,
        writer_schemas: Iterable[dict] = (),
    ) -> None:
        self.schema_name = schema_name
        self.schema = load_schema(schema_name)
        self.parsed = parsed_schema(schema_name)
        self.fingerprint = fingerprint(self.schema)
        self._header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._decimals = _decimal_fields(self.schema)
        self._writers: dict[bytes, dict] = {self.fingerprint: self.parsed}
        for w in writer_schemas:
            self.add_writer_schema(w)
        self.registry = registry
        self.subject = subject or f"{schema_name}-value"
        self._registry_writers: dict[int, dict] = {}
        self._registry_id: int | None = None

    def add_writer_schema(self, schema: dict) -> None:
        """Teach the codec another version of the schema, so it can read what that version wrote."""
        self._writers[fingerprint(schema)] = fastavro.parse_schema(strip_timestamps(schema))

    # -- decoding -------------------------------------------------------------------------------
    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict:
        """Decode one message, detecting its encoding; raises :class:`DecodeError`."""
        try:
            if data[:2] == SINGLE_OBJECT_MAGIC:
                return self._decode_single_object(data)
            if data[:1] == b"\x00" and len(data) >= 5:
                return self._decode_confluent(data)
            stripped = data.lstrip()
            if stripped[:1] == b"{":
                return self._decode_json(stripped)
            raise DecodeError("not Avro single-object, Confluent wire format or JSON")
        except DecodeError as exc:
            if topic is None:
                raise
            raise exc.at(topic, partition, offset) from None

    def _read(self, payload: bytes, writer: dict, encoding: str) -> dict:
        buf = io.BytesIO(payload)
        try:
            if writer is self.parsed:
                rec = fastavro.schemaless_reader(buf, writer, None)
            else:
                rec = fastavro.schemaless_reader(buf, writer, self.parsed)
        except (EOFError, IndexError, ValueError, TypeError, StopIteration) as exc:
            raise DecodeError(f"corrupt Avro body ({type(exc).__name__}: {exc})", encoding=encoding)
        except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types on garbage
            raise DecodeError(f"corrupt Avro body ({type(exc).__name__})", encoding=encoding)
        if buf.tell() != len(payload):
            raise DecodeError(
                f"{len(payload) - buf.tell()} trailing bytes after the record", encoding=encoding
            )
        return rec  # type: ignore[no-any-return]

    def _decode_single_object(self, data: bytes) -> dict:
        if len(data) < 10:
            raise DecodeError("truncated single-object header", encoding="avro-single-object")
        fp = data[2:10]
        writer = self._writers.get(fp)
        if writer is None:
            raise DecodeError(
                f"unknown writer schema fingerprint {fp.hex()} for {self.schema_name}",
                encoding="avro-single-object",
                hint="the producer uses a schema version this worker does not know; "
                "use the Confluent wire format with a schema registry for independent evolution",
            )
        return self._read(data[10:], writer, "avro-single-object")

    def _decode_confluent(self, data: bytes) -> dict:
        schema_id = struct.unpack(">I", data[1:5])[0]
        writer = self._registry_writers.get(schema_id)
        if writer is None:
            if self.registry is None:
                raise DecodeError(
                    f"Confluent wire format (schema id {schema_id}) but no schema registry",
                    encoding="confluent",
                    hint="set FINSCORE_SCHEMA_REGISTRY_URL",
                )
            try:
                text = self.registry.get_schema(schema_id).schema_str
            except Exception as exc:  # noqa: BLE001 - registry client errors vary
                raise DecodeError(
                    f"schema id {schema_id} not found in the registry: {exc}", encoding="confluent"
                ) from None
            writer = fastavro.parse_schema(strip_timestamps(json.loads(text)))
            if fingerprint(json.loads(text)) == self.fingerprint:
                writer = self.parsed
            self._registry_writers[schema_id] = writer
        return self._read(data[5:], writer, "confluent")

    def _decode_json(self, data: bytes) -> dict:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"invalid JSON ({exc})", encoding="json") from None
        if not isinstance(doc, dict):
            raise DecodeError("JSON value is not an object", encoding="json")
        rec = _from_json(doc, self.schema, self.schema["name"])
        try:
            validate(rec, self.parsed, raise_errors=True)
        except Exception as exc:  # noqa: BLE001 - fastavro ValidationError
            raise DecodeError(f"schema-invalid JSON: {exc}", encoding="json") from None
        return rec

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, record: dict, encoding: str = "avro") -> bytes:
        """Encode ``record`` as ``avro`` (single-object), ``confluent`` or ``json``."""
        if encoding == "json":
            return json.dumps(to_jsonable(record, self.schema_name), separators=(",", ":")).encode()
        rec = self._prepare(record)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self.parsed, rec)
        except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types
            raise EncodeError(f"{self.schema_name} record does not fit its schema: {exc}") from None
        if encoding == "avro":
            return self._header + buf.getvalue()
        if encoding == "confluent":
            return b"\x00" + struct.pack(">I", self._schema_id()) + buf.getvalue()
        raise EncodeError(f"unknown encoding {encoding!r}: use avro, confluent or json")

    def _schema_id(self) -> int:
        if self._registry_id is None:
            if self.registry is None:
                raise EncodeError(
                    "the Confluent wire format needs a schema registry",
                    hint="set FINSCORE_SCHEMA_REGISTRY_URL",
                )
            from confluent_kafka.schema_registry import Schema

            self._registry_id = int(
                self.registry.register_schema(self.subject, Schema(json.dumps(self.schema), "AVRO"))
            )
        return self._registry_id

    def _prepare(self, record: dict) -> dict:
        """Timestamps given as datetimes become integers; decimals are quantised to scale."""
        rec = record
        for name, scale in self._decimals.items():
            v = rec.get(name)
            if v is not None and not (isinstance(v, Decimal) and v.as_tuple().exponent == -scale):
                if rec is record:
                    rec = dict(record)
                rec[name] = _to_decimal(v, scale, name)
        for f in self.schema["fields"]:
            v = rec.get(f["name"])
            if isinstance(v, datetime):
                if rec is record:
                    rec = dict(record)
                rec[f["name"]] = _epoch(v, _logical(f["type"]))
        return rec


# -- JSON <-> Python ---------------------------------------------------------------------------
def _logical(t: Any) -> str | None:
    return t.get("logicalType") if isinstance(t, dict) else None


def _epoch(v: datetime, logical: str | None) -> int:
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    scale = 1_000_000 if logical == "timestamp-micros" else 1000
    return int(round(v.timestamp() * scale))


def _to_decimal(v: Any, scale: int, name: str) -> Decimal:
    try:
        d = Decimal(str(v)) if not isinstance(v, Decimal) else v
    except InvalidOperation:
        raise EncodeError(f"field {name}: {v!r} is not a decimal number") from None
    if not d.is_finite():
        return d  # rejected by validation of the caller (e.g. NaN amount): keep it visible
    return d.quantize(Decimal(1).scaleb(-scale))


class _Named:
    """Named types seen while walking a schema (records, enums referenced by name later)."""

    def __init__(self) -> None:
        self.types: dict[str, Any] = {}


def _from_json(value: Any, schema: Any, path: str, named: _Named | None = None) -> Any:
    """Convert a JSON value into the Python value fastavro expects for ``schema``."""
    named = named or _Named()
    if isinstance(schema, str):
        if schema in named.types:
            return _from_json(value, named.types[schema], path, named)
        return _primitive_from_json(value, schema, None, path)
    if isinstance(schema, list):  # union: null or the first branch that converts
        if value is None and "null" in schema:
            return None
        errors = []
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _from_json(value, branch, path, named)
            except DecodeError as exc:
                errors.append(exc.reason)
        raise DecodeError(f"{path}: {value!r} fits no branch of the union", encoding="json")
    t = schema["type"]
    if t == "record":
        named.types[schema["name"]] = schema
        if not isinstance(value, dict):
            raise DecodeError(f"{path}: expected an object", encoding="json")
        out = {}
        for f in schema["fields"]:
            name = f["name"]
            if name in value:
                out[name] = _from_json(value[name], f["type"], f"{path}.{name}", named)
            elif "default" in f:
                out[name] = copy.deepcopy(f["default"])
            else:
                raise DecodeError(f"missing required field {path}.{name}", encoding="json")
        return out
    if t == "enum":
        named.types[schema["name"]] = schema
        if value not in schema["symbols"]:
            raise DecodeError(
                f"{path}: {value!r} is not one of {schema['symbols']}", encoding="json"
            )
        return value
    if t == "array":
        if not isinstance(value, list):
            raise DecodeError(f"{path}: expected an array", encoding="json")
        return [_from_json(v, schema["items"], f"{path}[{i}]", named) for i, v in enumerate(value)]
    if t == "map":
        if not isinstance(value, dict):
            raise DecodeError(f"{path}: expected an object", encoding="json")
        return {k: _from_json(v, schema["values"], f"{path}.{k}", named) for k, v in value.items()}
    return _primitive_from_json(value, t, schema, path)


def _primitive_from_json(value: Any, t: str, schema: dict | None, path: str) -> Any:
    logical = schema.get("logicalType") if schema else None
    if logical in TIMESTAMP_TYPES:
        if isinstance(value, bool):
            raise DecodeError(f"{path}: expected a timestamp", encoding="json")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return _epoch(datetime.fromisoformat(value.replace("Z", "+00:00")), logical)
            except ValueError:
                raise DecodeError(f"{path}: {value!r} is not an ISO-8601 timestamp", encoding="json") from None
        raise DecodeError(f"{path}: expected a timestamp", encoding="json")
    if logical == "decimal":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise DecodeError(f"{path}: expected a decimal string or number", encoding="json")
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            raise DecodeError(f"{path}: {value!r} is not a decimal number", encoding="json") from None
        if not d.is_finite():
            raise DecodeError(f"{path} is {value} (not a finite decimal)", encoding="json")
        scale = int(schema.get("scale", 0)) if schema else 0
        precision = int(schema.get("precision", 38)) if schema else 38
        q = d.quantize(Decimal(1).scaleb(-scale))
        if len(q.as_tuple().digits) > precision:
            raise DecodeError(f"{path}: {value!r} exceeds decimal precision {precision}", encoding="json")
        return q
    if t == "string":
        if isinstance(value, bool) or value is None:
            raise DecodeError(f"{path}: expected a string", encoding="json")
        if isinstance(value, int | float):
            return str(value)  # ids typed as numbers in a console: accepted
        if not isinstance(value, str):
            raise DecodeError(f"{path}: expected a string", encoding="json")
        return value
    if t == "bytes":
        if not isinstance(value, str):
            raise DecodeError(f"{path}: expected base64 text", encoding="json")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise DecodeError(f"{path}: invalid base64", encoding="json") from None
    if t == "boolean":
        if not isinstance(value, bool):
            raise DecodeError(f"{path}: expected true or false", encoding="json")
        return value
    if t in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{path}: expected an integer", encoding="json")
        return value
    if t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError(f"{path}: expected a number", encoding="json")
        return float(value)
    if t == "null":
        if value is not None:
            raise DecodeError(f"{path}: expected null", encoding="json")
        return None
    raise DecodeError(f"{path}: unsupported type {t}", encoding="json")


def _iso(v: int, logical: str) -> str:
    scale = 1_000_000 if logical == "timestamp-micros" else 1000
    dt = datetime.fromtimestamp(v / scale, tz=UTC)
    spec = "microseconds" if logical == "timestamp-micros" else "milliseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def _to_json(value: Any, schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str):
        if schema in named:
            return _to_json(value, named[schema], named)
        if schema == "bytes":
            return base64.b64encode(value).decode() if value is not None else None
        return value
    if isinstance(schema, list):
        if value is None:
            return None
        for branch in schema:
            if branch != "null":
                return _to_json(value, branch, named)
        return value
    t = schema["type"]
    if t == "record":
        named[schema["name"]] = schema
        return {f["name"]: _to_json(value.get(f["name"]), f["type"], named) for f in schema["fields"]}
    if t == "enum":
        named[schema["name"]] = schema
        return value
    if t == "array":
        return [_to_json(v, schema["items"], named) for v in value or []]
    logical = schema.get("logicalType")
    if logical in TIMESTAMP_TYPES:
        if isinstance(value, datetime):
            value = _epoch(value, logical)
        return _iso(value, logical)
    if logical == "decimal":
        return str(value)
    if t == "bytes":
        return base64.b64encode(value).decode() if value is not None else None
    return value


def to_jsonable(record: dict, schema_name: str) -> dict:
    """``record`` as JSON-ready values: ISO-8601 timestamps, decimal strings, base64 bytes."""
    return _to_json(record, load_schema(schema_name), {})  # type: ignore[no-any-return]

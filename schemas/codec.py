"""One codec for every topic, three encodings told apart per message.

- **Avro single-object encoding** (``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO fingerprint
  of the writer schema's Parsing Canonical Form + Avro binary): the default; no server needed.
- **Confluent wire format** (``0x00`` + 4-byte big-endian schema id + Avro binary): writer
  schemas are registered and fetched by id through ``confluent_kafka.schema_registry``
  (imported only when first needed; it needs the ``confluent-kafka[schemaregistry]`` extras).
- **JSON** (a text document whose first non-space byte is ``{``): for people typing events into
  kcat; the rules are in :mod:`finscore.schemas.json_form`.

Decoded records are plain dicts: timestamps stay integers (epoch ms or µs, as the schema says;
the codec reads with a copy of the schema whose timestamp logical types are stripped, so no
datetime is ever built), decimals are :class:`decimal.Decimal`, enums are str, bytes are bytes.
``encode`` also accepts datetimes for timestamps and int/float/str for decimals (quantised to
the schema's scale, half-even; a value past the precision raises :class:`EncodeError`).

Schema evolution. A codec reads with its own *reader* schema (the bundled ``.avsc``, or
``reader_schema=``) and resolves the writer's schema into it by the Avro rules: fields the
reader lacks are skipped, fields the writer lacks get the reader's default.

- Single-object bytes name their writer only by fingerprint, and a fingerprint cannot be turned
  back into a schema: the codec resolves the versions it knows (its own and any given as
  ``writer_schemas=[...]`` or :meth:`Codec.register_writer`); an unknown fingerprint is a
  :class:`DecodeError`. Fit for one team shipping producers and workers together.
- The Confluent wire format with a schema registry is the way for fleets whose producers evolve
  independently: the id in every message fetches the writer schema (cached per id).
- JSON carries no schema: unknown fields are ignored and missing defaulted fields are filled.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint as _crc64_hex
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from finscore.schemas.exceptions import DecodeError, EncodeError, SchemaError
from finscore.schemas.json_form import (
    TIMESTAMP_TYPES,
    epoch,
    from_json,
    to_decimal,
    to_json_value,
)

SCHEMA_NAMES = (
    "transaction",
    "market_tick",
    "fraud_label",
    "fraud_flag",
    "price_signal",
    "model_update",
    "dead_letter",
    "family_score",
    "cashflow_forecast",
)
ENCODINGS = ("avro", "json", "confluent")
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
REGISTRY_EXTRA_HINT = "pip install 'confluent-kafka[schemaregistry]' for the Confluent wire format"


# -- schemas -------------------------------------------------------------------------------------
def schema_path(name: str) -> str:
    """Filesystem path of the bundled ``<name>.avsc`` (for tools that want a file)."""
    _check_name(name)
    return str(resources.files("finscore.schemas").joinpath(f"{name}.avsc"))


@cache
def _schema_text(name: str) -> str:
    _check_name(name)
    return resources.files("finscore.schemas").joinpath(f"{name}.avsc").read_text()


def load_schema(name: str) -> dict:
    """The parsed JSON of the bundled ``<name>.avsc`` (a fresh copy; the file is read once)."""
    return json.loads(_schema_text(name))  # type: ignore[no-any-return]


def _check_name(name: str) -> None:
    if name not in SCHEMA_NAMES:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")


def strip_timestamps(schema: Any) -> Any:
    """A copy of ``schema`` whose timestamp logical types are plain longs (no datetime cost)."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in TIMESTAMP_TYPES:
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: strip_timestamps(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [strip_timestamps(s) for s in schema]
    return schema


def inline_named_types(schema: Any) -> Any:
    """A copy of ``schema`` where each reuse of a named type by name is a renamed full copy.

    The binary encoding does not depend on type names, and fastavro reads a type written out in
    place about a third faster than one referenced by name (market_tick's ``asks: Level``).
    Only for the codec's own schema on its own bytes: resolution across versions matches
    record names, so it always uses the schemas as written. Recursive schemas come back as is.
    """
    defs: dict[str, dict] = {}
    counter = itertools.count(1)

    class Recursive(Exception):
        pass

    def walk(s: Any, ns: str, suffix: str, open_names: tuple[str, ...]) -> Any:
        if isinstance(s, list):
            return [walk(b, ns, suffix, open_names) for b in s]
        if isinstance(s, str):
            full = s if "." in s else f"{ns}.{s}"
            if full in open_names:
                raise Recursive
            if full not in defs:
                return s
            target = defs[full]
            return walk(
                copy.deepcopy(target), full.rpartition(".")[0], f"_{next(counter)}", open_names
            )
        if not isinstance(s, dict):
            return s
        kind = s.get("type")
        if kind in ("record", "enum", "fixed"):
            name = s["name"]
            ns2 = name.rpartition(".")[0] if "." in name else s.get("namespace", ns)
            full = name if "." in name else f"{ns2}.{name}"
            if not suffix:
                defs[full] = s
            out = dict(s, name=name + suffix)
            if kind == "record":
                inner = (*open_names, full)
                out["fields"] = [
                    dict(f, type=walk(f["type"], ns2, suffix, inner)) for f in s["fields"]
                ]
            return out
        if kind == "array":
            return dict(s, items=walk(s["items"], ns, suffix, open_names))
        if kind == "map":
            return dict(s, values=walk(s["values"], ns, suffix, open_names))
        if isinstance(kind, dict | list):
            return dict(s, type=walk(kind, ns, suffix, open_names))
        return s

    try:
        ns0 = schema.get("namespace", "") if isinstance(schema, dict) else ""
        return walk(schema, ns0, "", ())
    except Recursive:
        return schema


def fingerprint(schema: str | dict | list) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, 8 bytes LE.

    ``schema`` is a bundled schema's name or a parsed schema (dict, list or primitive name).
    Logical types are not part of the
    canonical form (``{"type": "long", "logicalType": ...}`` becomes ``"long"``, as in the
    Java reference implementation).
    """
    if isinstance(schema, str) and schema in SCHEMA_NAMES:
        return _named_fingerprint(schema)
    canonical = to_parsing_canonical_form(copy.deepcopy(schema))
    return bytes.fromhex(_crc64_hex(canonical, "CRC-64-AVRO"))  # fastavro gives LE hex


@cache
def _named_fingerprint(name: str) -> bytes:
    return fingerprint(load_schema(name))


@cache
def parsed_schema(name: str) -> dict:
    """The fastavro-parsed bundled schema ``name`` (timestamps as plain longs); shared, read-only."""
    return _parse(load_schema(name))


@cache
def _fast_schema(name: str) -> dict:
    return _parse(load_schema(name), inline=True)


def _parse(schema: dict, *, inline: bool = False) -> dict:
    """fastavro-parse ``schema`` with plain-long timestamps (and inlined named types)."""
    plain = strip_timestamps(schema)
    parsed: Any = fastavro.parse_schema(inline_named_types(plain) if inline else plain)
    return cast(dict, parsed)


def _top_level(schema: dict) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Top-level decimal fields (name -> (scale, precision)) and timestamp fields (-> logical)."""
    decimals, stamps = {}, {}
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal":
            decimals[f["name"]] = (int(t.get("scale", 0)), int(t["precision"]))
        elif isinstance(t, dict) and t.get("logicalType") in TIMESTAMP_TYPES:
            stamps[f["name"]] = t["logicalType"]
    return decimals, stamps


# -- the codec -----------------------------------------------------------------------------------
def registry_client(conf: Mapping[str, str] | str | None) -> Any | None:
    """A ``SchemaRegistryClient`` for ``conf`` (its client config, e.g. ``{"url": ...,
    "basic.auth.user.info": ...}``, or a bare URL); None when ``conf`` is empty.

    The client is imported without authlib's deprecation notice (authlib installs an "always"
    filter of its own on import: silenced after it is set). :class:`SchemaError` with the
    install hint when the registry extras are missing."""
    if not conf:
        return None
    import contextlib
    import warnings

    with warnings.catch_warnings():
        with contextlib.suppress(ImportError):
            import authlib.deprecate  # noqa: F401
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise SchemaError(
                f"the schema registry client cannot be imported ({exc})", hint=REGISTRY_EXTRA_HINT
            ) from None
        return SchemaRegistryClient({"url": conf} if isinstance(conf, str) else dict(conf))


class Codec:
    """Encodes and decodes the records of one schema in the three encodings (see module doc).

    ``registry`` is a ``confluent_kafka.schema_registry.SchemaRegistryClient`` (or anything with
    its ``register_schema``/``get_schema``), or a registry URL or client config from which one
    is built on first use (:func:`registry_client`); needed only for the Confluent wire format. ``subject`` defaults to ``<schema>-value``.
    ``writer_schemas`` are other versions of the schema whose single-object bytes this codec
    can read; ``reader_schema`` replaces the bundled schema as the one records are read into
    and written with (a local newer or older version).
    """

    def __init__(
        self,
        schema_name: str,
        *,
        registry: Any | None = None,
        subject: str | None = None,
        writer_schemas: Iterable[dict] = (),
        reader_schema: dict | None = None,
    ) -> None:
        self.schema_name = schema_name
        if reader_schema is None:
            self.schema = load_schema(schema_name)
            self.parsed = parsed_schema(schema_name)
            self._fast = _fast_schema(schema_name)
        else:
            self.schema = copy.deepcopy(reader_schema)
            self.parsed = _parse(self.schema)
            self._fast = _parse(self.schema, inline=True)
        self.fingerprint = fingerprint(self.schema)
        self.header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._decimals, self._stamps = _top_level(self.schema)
        # fingerprint -> parsed writer schema; None marks "our own schema" (fast path, no resolution)
        self._writers: dict[bytes, dict | None] = {self.fingerprint: None}
        for w in writer_schemas:
            self.register_writer(w)
        self._registry = registry
        self.subject = subject or f"{schema_name}-value"
        self._by_id: dict[int, dict | None] = {}
        self._schema_id: int | None = None

    def register_writer(self, schema: dict) -> bytes:
        """Teach the codec another version of its schema; returns that version's fingerprint."""
        fp = fingerprint(schema)
        if fp != self.fingerprint:
            try:
                self._writers[fp] = _parse(schema)
            except Exception as exc:  # noqa: BLE001 - fastavro schema errors vary
                raise SchemaError(f"invalid writer schema for {self.schema_name}: {exc}") from None
        return fp

    add_writer_schema = register_writer

    @property
    def known_fingerprints(self) -> list[bytes]:
        """Fingerprints of every writer version this codec reads in single-object encoding."""
        return list(self._writers)

    # -- decoding ------------------------------------------------------------------------------
    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict:
        """Decode one message, detecting its encoding; raises :class:`DecodeError` (located at
        ``topic[partition]@offset`` when given)."""
        try:
            if data[:10] == self.header:  # the hot path: our own schema, single-object
                return self._read(data, 10, None, "avro")
            return self._decode_other(data)
        except DecodeError as exc:
            if topic is None and partition is None and offset is None:
                raise
            raise exc.at(topic, partition, offset) from None
        except Exception as exc:  # noqa: BLE001 - a bug or an odd input must still be a DecodeError
            raise DecodeError(
                f"unexpected {type(exc).__name__}: {exc}",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc

    def decode_many(self, messages: Iterable[bytes]) -> list[dict]:
        """Decode a batch (raises at the first bad one; use :meth:`decode` to locate errors)."""
        header, read, fast = self.header, fastavro.schemaless_reader, self._fast
        out: list[dict] = []
        for data in messages:
            if data[:10] == header:
                buf = io.BytesIO(data)
                buf.seek(10)
                try:
                    rec: Any = read(buf, fast, None)
                except Exception:  # noqa: BLE001 - let decode() say what is wrong
                    rec = self.decode(data)
                if buf.tell() != len(data):
                    rec = self.decode(data)
                out.append(rec)
            else:
                out.append(self.decode(data))
        return out

    def _decode_other(self, data: bytes) -> dict:
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError("truncated single-object header", encoding="avro")
            fp = bytes(data[2:10])
            if fp not in self._writers:
                raise DecodeError(
                    f"unknown writer schema fingerprint {fp.hex()} for {self.schema_name}",
                    encoding="avro",
                    hint="the producer uses a schema version this codec was not given "
                    "(writer_schemas=); producers that evolve on their own should use the "
                    "Confluent wire format with a schema registry",
                )
            return self._read(data, 10, self._writers[fp], "avro")
        if data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError("truncated Confluent wire-format header", encoding="confluent")
            schema_id = struct.unpack_from(">I", data, 1)[0]
            return self._read(data, 5, self._writer_by_id(schema_id), "confluent")
        stripped = data.lstrip()
        if stripped[:1] == b"{":
            return self._decode_json(stripped)
        raise DecodeError(
            f"not Avro single-object, Confluent wire format or JSON (starts {bytes(data[:4])!r})"
        )

    def _read(self, data: bytes, start: int, writer: dict | None, encoding: str) -> dict:
        buf = io.BytesIO(data)
        buf.seek(start)
        try:
            if writer is None:
                rec: Any = fastavro.schemaless_reader(buf, self._fast, None)
            else:
                rec = fastavro.schemaless_reader(buf, writer, self.parsed)
        except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types on garbage
            raise DecodeError(
                f"corrupt or truncated Avro body ({type(exc).__name__}: {exc})", encoding=encoding
            ) from None
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} trailing bytes after the record", encoding=encoding
            )
        return rec  # type: ignore[no-any-return]

    def _writer_by_id(self, schema_id: int) -> dict | None:
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        if self._registry is None:
            raise DecodeError(
                f"Confluent wire format (schema id {schema_id}) but no schema registry",
                encoding="confluent",
                hint="give the codec a registry (e.g. FINSCORE_SCHEMA_REGISTRY_URL)",
            )
        try:
            text = self._client().get_schema(schema_id).schema_str
            writer = json.loads(text)
        except SchemaError:
            raise
        except Exception as exc:  # noqa: BLE001 - registry client errors vary
            raise DecodeError(
                f"schema id {schema_id} not available from the registry ({exc})",
                encoding="confluent",
            ) from None
        parsed = None if fingerprint(writer) == self.fingerprint else _parse(writer)
        self._by_id[schema_id] = parsed
        return parsed

    def _decode_json(self, data: bytes) -> dict:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"invalid JSON ({exc})", encoding="json") from None
        if not isinstance(doc, dict):
            raise DecodeError("JSON value is not an object", encoding="json")
        rec = from_json(doc, self.schema, self.schema["name"])
        try:
            validate(rec, self.parsed, raise_errors=True)
        except Exception as exc:  # noqa: BLE001 - fastavro ValidationError
            raise DecodeError(f"schema-invalid JSON: {exc}", encoding="json") from None
        return rec  # type: ignore[no-any-return]

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, record: dict, encoding: str = "avro") -> bytes:
        """Encode ``record`` as ``avro`` (single-object), ``confluent`` or ``json``."""
        rec = self._prepare(record)
        if encoding == "json":
            try:
                validate(rec, self.parsed, raise_errors=True)
            except Exception as exc:  # noqa: BLE001 - fastavro ValidationError
                raise EncodeError(
                    f"{self.schema_name} record does not fit its schema: {exc}"
                ) from None
            doc = to_json_value(rec, self.schema)
            return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        if encoding == "avro":
            return self.header + self._binary(rec)
        if encoding == "confluent":
            return CONFLUENT_MAGIC + struct.pack(">I", self.schema_id()) + self._binary(rec)
        raise EncodeError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")

    def encode_many(self, records: Iterable[dict], encoding: str = "avro") -> list[bytes]:
        """Encode a batch (one ``BytesIO`` reused for the single-object encoding)."""
        if encoding != "avro":
            return [self.encode(r, encoding) for r in records]
        buf, write, fast, header = io.BytesIO(), fastavro.schemaless_writer, self._fast, self.header
        out = []
        for record in records:
            buf.seek(0)
            buf.truncate()
            buf.write(header)
            try:
                write(buf, fast, self._prepare(record))
            except EncodeError:
                raise
            except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types
                raise EncodeError(
                    f"{self.schema_name} record does not fit its schema: {exc}"
                ) from None
            out.append(buf.getvalue())
        return out

    def _binary(self, rec: dict) -> bytes:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self._fast, rec)
        except Exception as exc:  # noqa: BLE001 - fastavro raises assorted types
            raise EncodeError(f"{self.schema_name} record does not fit its schema: {exc}") from None
        return buf.getvalue()

    def header_for(self, encoding: str) -> bytes:
        """The bytes before the Avro body in ``encoding``: the 10-byte single-object header for
        ``avro``, ``0x00`` + the 4-byte big-endian schema id for ``confluent`` (registering the
        schema under ``subject`` on first use). The body is the same Avro binary in both, so
        encoders that build bodies themselves (columnar, templates) only swap this prefix."""
        if encoding == "avro":
            return self.header
        if encoding == "confluent":
            return CONFLUENT_MAGIC + struct.pack(">I", self.schema_id())
        raise EncodeError(f"no binary header for encoding {encoding!r} (avro or confluent)")

    def schema_id(self) -> int:
        """The registry id of this codec's schema under ``subject`` (registered once, cached;
        the registry applies its compatibility rules to the subject, and a refusal is an
        :class:`EncodeError` naming the subject)."""
        if self._schema_id is None:
            if self._registry is None:
                raise EncodeError(
                    "the Confluent wire format needs a schema registry",
                    hint="give the codec a registry (e.g. FINSCORE_SCHEMA_REGISTRY_URL)",
                )
            from confluent_kafka.schema_registry import Schema

            try:
                sid = self._client().register_schema(
                    self.subject, Schema(json.dumps(self.schema), "AVRO")
                )
            except SchemaError:
                raise
            except Exception as exc:  # noqa: BLE001 - registry client errors vary
                raise EncodeError(
                    f"cannot register {self.subject} in the registry: {exc}"
                ) from None
            self._schema_id = int(sid)
            self._by_id[self._schema_id] = None
        return self._schema_id

    def _client(self) -> Any:
        if isinstance(self._registry, str | Mapping):  # a URL or a client config
            self._registry = registry_client(self._registry)
        return self._registry

    def _prepare(self, record: dict) -> dict:
        """Datetimes become epoch integers; decimals are quantised (top-level fields)."""
        rec = record
        for name, (scale, precision) in self._decimals.items():
            v = rec.get(name)
            if v is None or (isinstance(v, Decimal) and v.as_tuple().exponent == -scale):
                continue
            if rec is record:
                rec = dict(record)
            rec[name] = to_decimal(v, scale, precision, name)
        for name, logical in self._stamps.items():
            v = rec.get(name)
            if isinstance(v, datetime):
                if rec is record:
                    rec = dict(record)
                rec[name] = epoch(v, logical)
        return rec


def to_jsonable(record: dict, schema_name: str) -> dict:
    """``record`` as JSON-ready values for printing: ISO-8601 ``Z`` timestamps, decimal strings,
    base64 bytes (the JSON encoding's output rules)."""
    return to_json_value(record, load_schema(schema_name))

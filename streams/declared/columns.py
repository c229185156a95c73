"""A declared family's records as columns, and its scores encoded from columns.

:class:`RecordDecoder` turns a batch of messages of one of the family's schemas (its events or
its labels) into :class:`FamilyColumns`: one column per field the family reads, in the
representations of the columnar decoder (:mod:`finscore.families.columns`: ``list[str]`` for
strings, ``int64`` for ints, longs and timestamps, ``bool``, ``float64``, decimals as ``int64``
unscaled values, enums as ``int64`` symbol indices), plus dead letters for what cannot be
decoded. When the schema is a built-in one (``finscore.schemas.SCHEMA_NAMES``) the vectorised
:class:`~finscore.schemas.columnar.codec.ColumnarCodec` takes the common case (our own schema,
single-object Avro) and the per-record :class:`~finscore.schemas.codec.Codec` the rest (JSON,
the Confluent wire format, other writer versions, malformed records, so dead-letter reasons are
the codec's); a schema from an ``.avsc`` file is decoded record by record (the columnar codec
reads bundled schemas only). A null in a nullable field is a zero (``""`` for a string) in its
column, with the row in :attr:`FamilyColumns.nulls`.

:class:`ScoreEncoder` encodes one ``family_score`` record per row (``schemas/family_score.avsc``),
columnar for the Avro encodings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np

from finscore.families.columns import strings, times
from finscore.families.spec import SchemaRef
from finscore.schemas.codec import SCHEMA_NAMES, Codec, load_schema
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.schemas.columnar.plan import Field
from finscore.streams.pipeline import DeadLetter, decode_batch
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message

__all__ = [
    "COLUMNAR_DECODE_MIN",
    "FamilyColumns",
    "RecordDecoder",
    "ScoreEncoder",
    "schema_of",
]

# Below this batch size the per-record codec is faster than the columnar one's fixed cost
# (the fraud stream's measurement, finscore.streams.fraud.columns).
COLUMNAR_DECODE_MIN = 64
BINARY_ENCODINGS = ("avro", "confluent")  # Avro bodies: only the header tells them apart
_DTYPES = {"int": np.int64, "long": np.int64, "enum": np.int64, "decimal": np.int64,
           "boolean": np.bool_, "float": np.float64, "double": np.float64}  # fmt: skip


def schema_of(ref: SchemaRef, base_dir: str | Path) -> tuple[str, dict]:
    """(a name, the parsed Avro schema) of a family's schema reference: a built-in name, or an
    ``.avsc`` path relative to the declaration's folder ``base_dir`` (named by its stem)."""
    if ref.ref in SCHEMA_NAMES:
        return ref.ref, load_schema(ref.ref)
    path = Path(base_dir) / ref.ref
    return path.stem, json.loads(path.read_text())


@dataclass
class FamilyColumns:
    """Decoded records, one entry per row: their messages, the columns of the fields read
    (see the module docstring) and, per nullable field, its null mask."""

    messages: list[Message]
    columns: dict[str, Any]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def take(self, rows: np.ndarray) -> FamilyColumns:
        """The given rows, in the given order."""
        r = rows.tolist()
        return FamilyColumns(
            [self.messages[i] for i in r],
            {k: _take(v, rows, r) for k, v in self.columns.items()},
            {k: v[rows] for k, v in self.nulls.items()},
        )


def _take(col: Any, rows: np.ndarray, r: list[int]) -> Any:
    return col[rows] if isinstance(col, np.ndarray) else [col[i] for i in r]


def _concat(a: FamilyColumns, b: FamilyColumns) -> FamilyColumns:
    """Rows of ``a`` then rows of ``b`` (the same fields)."""
    cols = {
        k: np.concatenate([v, b.columns[k]]) if isinstance(v, np.ndarray)
        else list(v) + list(b.columns[k])
        for k, v in a.columns.items()
    }  # fmt: skip
    nulls = {k: np.concatenate([v, b.nulls[k]]) for k, v in a.nulls.items()}
    return FamilyColumns(a.messages + b.messages, cols, nulls)


class RecordDecoder:
    """Decodes messages of one schema into :class:`FamilyColumns` of the fields ``names``
    (see the module docstring)."""

    def __init__(self, schema: SchemaRef, names: Sequence[str], codec: Codec) -> None:
        """``codec``: the per-record codec of the schema (with the worker's schema registry);
        the columnar codec is used besides when the schema is a built-in one."""
        self.names = tuple(dict.fromkeys(names))
        self.fields: dict[str, Field] = {n: schema.fields[n] for n in self.names}
        self.codec = codec
        self.columnar = ColumnarCodec(schema.ref) if schema.ref in SCHEMA_NAMES else None

    def decode(self, messages: list[Message]) -> tuple[FamilyColumns, list[DeadLetter]]:
        """Decode a batch into columns (input order kept); undecodable messages, and records
        whose values have no column representation (a non-finite decimal), are dead letters."""
        if self.columnar is None or len(messages) < COLUMNAR_DECODE_MIN:
            return self._decode_records(messages)
        batch = self.columnar.decode([m.value for m in messages])
        fast = FamilyColumns(
            [messages[i] for i in batch.ok.tolist()],
            {n: batch[n] for n in self.names},
            {n: batch.nulls[n] for n in self.names if self.fields[n].nullable},
        )
        if not batch.rest:
            return fast, []
        position = {id(messages[i]): i for i in batch.rest}
        slow, dead = self._decode_records([messages[i] for i in batch.rest])
        if not len(slow):
            return fast, dead
        where = np.fromiter((position[id(m)] for m in slow.messages), np.int64, len(slow))
        order = np.argsort(np.concatenate([batch.ok, where]), kind="stable")
        return _concat(fast, slow).take(order), dead

    def _decode_records(self, messages: list[Message]) -> tuple[FamilyColumns, list[DeadLetter]]:
        """The per-record path: ``Codec.decode`` each message, then columns."""
        decoded, dead = decode_batch(self.codec, messages)
        msgs: list[Message] = []
        rows: list[list[Any]] = []
        for m, rec in decoded:
            try:
                rows.append([self._value(n, rec.get(n)) for n in self.names])
            except _NoValue as exc:
                dead.append(DeadLetter(m, "ImpossibleValue", str(exc)))
                continue
            msgs.append(m)
        by_field = list(zip(*rows, strict=True)) if rows else [() for _ in self.names]
        cols: dict[str, Any] = {}
        nulls: dict[str, np.ndarray] = {}
        for n, values in zip(self.names, by_field, strict=True):
            f = self.fields[n]
            if f.nullable:
                nulls[n] = np.fromiter((v is None for v in values), bool, len(values))
            if f.kind in ("string", "bytes"):
                cols[n] = ["" if v is None else v for v in values]
            else:
                fill = (0 if v is None else v for v in values)
                cols[n] = np.fromiter(fill, _DTYPES[f.kind], len(values))
        return FamilyColumns(msgs, cols, nulls), dead

    def _value(self, name: str, v: Any) -> Any:
        """A decoded value in its column representation (an enum's index, a decimal's
        unscaled integer); :class:`_NoValue` when it has none."""
        if v is None:
            return None
        f = self.fields[name]
        if f.kind == "enum":
            return f.symbols.index(v)
        if f.kind == "decimal":
            d = Decimal(v)
            if not d.is_finite():
                raise _NoValue(f"{name} is {v}")
            return int(d.scaleb(f.scale).to_integral_value(ROUND_HALF_EVEN))
        return v


class _NoValue(ValueError):
    """A decoded value with no column representation."""


class ScoreEncoder:
    """Encodes ``family_score`` records from columns in the output encoding: ``avro``
    (single-object), ``confluent`` (the same bodies behind the wire format's header; the
    codec needs a registry) or ``json``."""

    def __init__(self, codec: Codec, family: str, id_field: str, key_field: str, time_field: str,
                 encoding: str = "avro") -> None:  # fmt: skip
        self.codec = codec
        self.columnar = ColumnarCodec("family_score")
        self.family = family
        self.id_field, self.key_field, self.time_field = id_field, key_field, time_field
        self.encoding = encoding

    def encode(
        self,
        cols: FamilyColumns,
        scores: np.ndarray,
        scorer: Scorer,
        threshold: float,
        processing_ms: int,
        top: list[list[dict]] | None = None,
    ) -> list[bytes]:
        """One encoded score per row: the event's id and key, the score and its decision
        against ``threshold``, the model, the family, the times, the input's location, and
        the top features when given."""
        n = len(cols)
        s = np.asarray(scores, dtype=np.float64).reshape(n)
        msgs = cols.messages
        columns: dict[str, Any] = {
            "id": strings(cols[self.id_field]),
            "key": strings(cols[self.key_field]),
            "score": s,
            "flagged": s >= threshold,
            "threshold": float(threshold),
            "model_name": scorer.name,
            "model_version": scorer.version,
            "family": self.family,
            "event_time": times(cols[self.time_field]),
            "processing_time": processing_ms,
            "source_topic": [m.topic for m in msgs],
            "source_partition": np.fromiter((m.partition for m in msgs), np.int64, n),
            "source_offset": np.fromiter((m.offset for m in msgs), np.int64, n),
            "top_features": top if top is not None else [],
        }
        if self.encoding in BINARY_ENCODINGS:
            return self.columnar.encode(n, columns, header=self.codec.header_for(self.encoding))
        return [self.codec.encode(self._record(columns, i), self.encoding) for i in range(n)]

    @staticmethod
    def _record(columns: dict[str, Any], i: int) -> dict:
        """Row ``i`` of the columns as a record (for the JSON encoding)."""
        rec: dict[str, Any] = {}
        for k, v in columns.items():
            if k == "top_features":
                rec[k] = v[i] if v else []
            elif isinstance(v, list | np.ndarray):
                item = v[i]
                rec[k] = item.item() if isinstance(item, np.generic) else item
            else:
                rec[k] = v
        return rec

"""A columnar Avro codec: a whole batch of single-object records decoded into numpy columns and
``n`` records encoded from columns, for the hot paths of the workers.

Only the Avro single-object encoding (``0xC3 0x01`` + the 8-byte fingerprint + Avro binary) of
the codec's own bundled schema is handled here. Everything else — ``None`` values, JSON, the
Confluent wire format, other writer fingerprints, and any body that is truncated, has trailing
bytes, or holds a value the per-record decoder might treat differently (a varint over 10 bytes,
a boolean byte other than 0/1, an enum index out of range, invalid UTF-8, a decimal over 8
bytes or past its precision) — is listed in :attr:`DecodedBatch.rest` for the caller to pass
through :meth:`Codec.decode <finscore.schemas.codec.Codec.decode>` one by one, so that the
records and the errors (dead-letter reasons) are exactly the per-record codec's.

Column representations (``DecodedBatch.columns[name]``, one entry per decoded row):

- ``int``/``long`` (timestamps included: epoch integers as in the schema): ``int64`` array;
- ``double``/``float``: ``float64`` array; ``boolean``: ``bool`` array;
- ``enum``: ``int64`` symbol indices (``DecodedBatch.symbols[name]`` gives the symbols);
- decimal (``bytes`` + ``logicalType: decimal``, precision ≤ 18): ``int64`` unscaled values
  (value = unscaled × 10^-scale, ``DecodedBatch.scales[name]``);
- ``string``: ``list[str]``; ``bytes``: ``list[bytes]``; both also as (start, length) spans
  into :attr:`DecodedBatch.buffer` in ``DecodedBatch.spans[name]``;
- ``["null", T]``: T's column (0 / ``None`` where null) and ``DecodedBatch.nulls[name]``;
- arrays: an :class:`ArrayColumn` (``counts``, ``offsets``, flat item columns by item field).

Encoding takes, per field, a scalar (the same for every row: model name, topic, threshold,
processing time…), or a sequence/array of ``n`` values in the representations above; enums
also accept symbols, timestamps datetimes, decimals any value ``Codec.encode`` accepts (or
:class:`Unscaled` for int64 unscaled values); arrays take an :class:`ArrayColumn`, or per row a
list of item dicts, or ``[]``. Missing fields get their schema default. The bytes are
identical to ``Codec(schema_name).encode(record)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from finscore.schemas.codec import SINGLE_OBJECT_MAGIC, fingerprint, load_schema
from finscore.schemas.columnar.decode import ArrayColumn, finalize, parse
from finscore.schemas.columnar.encode import Unscaled, encode_fields
from finscore.schemas.columnar.plan import Field, plan
from finscore.schemas.columnar.read import Reader, join
from finscore.schemas.columnar.write import Assembler

__all__ = ["ArrayColumn", "ColumnarCodec", "DecodedBatch", "Unscaled"]


@dataclass
class DecodedBatch:
    """The columns of the rows of one batch decoded on the fast path (see the module doc).

    ``ok[j]`` is the index in the input of decoded row ``j``; ``rest`` the input indices left
    to :meth:`Codec.decode` (in input order). ``columns``/``nulls``/``spans`` hold the rows of
    ``ok`` in that order.
    """

    schema_name: str
    fields: tuple[Field, ...]
    ok: np.ndarray
    rest: list[int]
    columns: dict[str, Any]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    spans: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    buffer: bytes = b""

    def __len__(self) -> int:
        return len(self.ok)

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    @property
    def symbols(self) -> dict[str, tuple[str, ...]]:
        """Enum symbols by field name (item fields as ``array.field``)."""
        out = {}
        for f in self.fields:
            if f.kind == "enum":
                out[f.name] = f.symbols
            for sf in f.items:
                if sf.kind == "enum":
                    out[f"{f.name}.{sf.name}" if sf.name else f.name] = sf.symbols
        return out

    @property
    def scales(self) -> dict[str, int]:
        """Scale of every top-level decimal field."""
        return {f.name: f.scale for f in self.fields if f.kind == "decimal"}

    def record(self, j: int) -> dict:
        """Decoded row ``j`` as the dict ``Codec.decode`` returns for it."""
        out: dict[str, Any] = {}
        for f in self.fields:
            col = self.columns[f.name]
            if f.kind == "array":
                lo, hi = int(col.offsets[j]), int(col.offsets[j + 1])
                items = [
                    {
                        sf.name: _scalar(sf, col.fields[sf.name], col.nulls.get(sf.name), k)
                        for sf in f.items
                    }  # fmt: skip
                    for k in range(lo, hi)
                ]
                out[f.name] = items if f.record_items else [it[""] for it in items]
            else:
                out[f.name] = _scalar(f, col, self.nulls.get(f.name), j)
        return out

    def records(self) -> list[dict]:
        return [self.record(j) for j in range(len(self))]


def _scalar(f: Field, col: Any, null: np.ndarray | None, k: int) -> Any:
    if null is not None and null[k]:
        return None
    v = col[k]
    if f.kind in ("string", "bytes"):
        return v
    if f.kind == "enum":
        return f.symbols[int(v)]
    if f.kind == "decimal":
        return Decimal(int(v)).scaleb(-f.scale)
    if f.kind == "boolean":
        return bool(v)
    if f.kind in ("double", "float"):
        return float(v)
    return int(v)


class ColumnarCodec:
    """Vectorised single-object Avro for the bundled schema ``schema_name`` (see module doc)."""

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name
        self.schema = load_schema(schema_name)
        self.fields = plan(self.schema)
        self.fingerprint = fingerprint(schema_name)
        self.header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self._header_arr = np.frombuffer(self.header, dtype=np.uint8)

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Decode every value that is this schema's single-object encoding; never raises for
        bad input (see :class:`DecodedBatch` and the module doc for what lands in ``rest``)."""
        present = [i for i, v in enumerate(values) if v is not None]
        vals = [values[i] for i in present] if len(present) != len(values) else list(values)
        idx = np.asarray(present, dtype=np.int64)
        joined, buf, starts, ends = join(vals)  # type: ignore[arg-type]
        if len(vals):
            head = buf[np.minimum(starts[:, None] + np.arange(10), len(buf) - 1)]
            cand = ((ends - starts) >= 10) & (head == self._header_arr).all(axis=1)
        else:
            cand = np.zeros(0, dtype=bool)
        ci = np.flatnonzero(cand)
        r = Reader(buf, starts[ci] + 10, ends[ci])
        parsed = parse(r, self.fields, len(ci))
        okm = ~r.bad & (r.pos == r.end)
        okm, columns, nulls, spans = finalize(joined, self.fields, parsed, okm)
        ok = idx[ci[okm]]
        taken = np.zeros(len(values), dtype=bool)
        taken[ok] = True
        rest = np.flatnonzero(~taken).tolist()
        return DecodedBatch(self.schema_name, self.fields, ok, rest, columns, nulls, spans, joined)

    def encode(
        self, n: int, columns: Mapping[str, Any], header: bytes | None = None
    ) -> list[bytes]:
        """``n`` records from ``columns`` (scalars broadcast), each byte-identical to
        ``Codec(schema_name).encode(record)``; raises :class:`EncodeError` when one does not
        fit the schema. ``header`` replaces the single-object header (e.g. the Confluent wire
        format's ``Codec.header_for("confluent")``: the Avro body is the same)."""
        if n == 0:
            return []
        asm = Assembler(n)
        asm.const(self.header if header is None else header)
        encode_fields(asm, self.fields, n, columns, self.schema_name)
        return asm.rows()

    def encode_flat(self, n: int, columns: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode`, as one uint8 buffer and ``n + 1`` row offsets into it."""
        asm = Assembler(n)
        asm.const(self.header)
        encode_fields(asm, self.fields, n, columns, self.schema_name)
        return asm.build()

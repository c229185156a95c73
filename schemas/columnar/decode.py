"""Columnar decoding of a batch of Avro single-object bodies of one schema (see :mod:`finscore.schemas.columnar.codec`).

:func:`parse` (then :func:`finalize`) walks the schema's fields once for the whole batch with a
:class:`~finscore.schemas.columnar.read.Reader`; arrays are read block by block, and inside a
block item by item (item ``j`` of every row that has more than ``j`` items at once). Rows that
end anywhere but at their end, or that the reader marked bad, or whose strings are not UTF-8,
are left out of the columns and reported back so the caller can decode them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finscore.schemas.columnar.plan import Field
from finscore.schemas.columnar.read import Reader

STRINGS = ("string", "bytes")
# A payload: a value array, or (start, length) arrays for strings and bytes.
Payload = Any


@dataclass
class ArrayColumn:
    """An array field of ``n`` rows, flat: row ``i`` has items ``offsets[i]:offsets[i + 1]``.

    ``fields`` maps each item field (``""`` for an array of scalars) to a flat column in the
    representation of a top-level column (see :class:`~finscore.schemas.columnar.codec.DecodedBatch`);
    ``nulls`` holds the null masks of nullable item fields.
    """

    counts: np.ndarray
    fields: dict[str, Any]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    offsets: np.ndarray = field(init=False)
    _cells: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )
    _matrices: dict[str, np.ndarray] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.offsets = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def row_of_item(self) -> np.ndarray:
        """The row of every flat item (int64, length ``offsets[-1]``)."""
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def index_in_row(self) -> np.ndarray:
        """The position of every flat item inside its row (0 = first)."""
        return np.arange(int(self.offsets[-1])) - np.repeat(self.offsets[:-1], self.counts)

    def dense(self, name: str, width: int, fill: float = 0) -> np.ndarray:
        """Item field ``name`` as an ``[n, width]`` array; missing items are ``fill``, items past
        ``width`` are dropped. Only for numeric item fields."""
        flat = np.asarray(self.fields[name])
        n = len(self.counts)
        mat = self._matrices.get(name)  # [n, max items], kept by the decoder
        if mat is not None:
            w = min(width, mat.shape[1])
            out = np.full((n, width), fill, dtype=mat.dtype)
            if n and int(self.counts.min()) >= w:
                out[:, :w] = mat[:, :w]
            else:
                out[:, :w] = np.where(np.arange(w) < self.counts[:, None], mat[:, :w], fill)
            return out
        out = np.full((n, width), fill, dtype=flat.dtype)
        if width not in self._cells:  # where each item goes, shared by the fields
            j = self.index_in_row()
            keep = np.flatnonzero(j < width)
            self._cells[width] = (keep, self.row_of_item()[keep] * width + j[keep])
        keep, cells = self._cells[width]
        out.reshape(-1)[cells] = flat[keep]
        return out


@dataclass
class _Parsed:
    """Per-row payloads of one pass, before rows that failed are dropped."""

    top: dict[str, tuple[Payload, np.ndarray | None]] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    chunks: dict[str, list[tuple[np.ndarray, np.ndarray, dict]]] = field(default_factory=dict)


class _BadRows(Exception):
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows


def _value(r: Reader, f: Field, rows: np.ndarray | None) -> Payload:
    kind = f.kind
    if kind in ("long", "int"):
        return r.long(rows)
    if kind == "double":
        return r.double(rows)
    if kind in STRINGS:
        return r.span(rows)
    if kind == "boolean":
        return r.boolean(rows)
    if kind == "enum":
        return r.enum(len(f.symbols), rows)
    if kind == "decimal":
        return r.decimal(f.precision, rows)
    if kind == "float":
        return r.float(rows)
    raise AssertionError(kind)


def _field(r: Reader, f: Field, rows: np.ndarray | None) -> tuple[Payload, np.ndarray | None]:
    """One value per row of ``rows`` and, for a nullable field, its null mask."""
    if not f.nullable:
        return _value(r, f, rows), None
    branch = r.long(rows)
    odd = (branch != 0) & (branch != 1)
    if odd.any():
        r._mark(rows, odd)
    null = (branch == f.null_index) | odd
    sub = np.flatnonzero(~null)
    m = len(branch)
    got = _value(r, f, sub if rows is None else rows[sub])
    if isinstance(got, tuple):
        st, ln = np.zeros(m, np.int64), np.zeros(m, np.int64)
        st[sub], ln[sub] = got
        return (st, ln), null
    full = np.zeros(m, dtype=got.dtype)
    full[sub] = got
    return full, null


def _array(r: Reader, f: Field, m: int, out: _Parsed) -> None:
    counts = np.zeros(m, dtype=np.int64)
    chunks: list[tuple[np.ndarray, np.ndarray, dict]] = []
    everyone = np.arange(m)
    active = np.flatnonzero(~r.bad)
    while len(active):
        sel_all = len(active) == m  # read with rows=None: no gathers of positions
        rows_arg = None if sel_all else active
        c = r.long(rows_arg)
        neg = c < 0
        if neg.any():  # a block with its byte size: skip the size
            r.long(active[neg])
            c = np.abs(c)
        c = np.where(c > r.end[active] - r.pos[active], -1, c)  # every item takes >= 1 byte
        r._mark(rows_arg, c < 0)
        c = np.where(r.bad[active], 0, c)
        live = c > 0
        if not live.all():
            active, c = active[live], c[live]
        if not len(active):
            break
        base = counts[active]
        whole = len(active) == m
        for j in range(int(c.max())):
            sel = c > j
            if sel.all():
                rows, arg, item = active, (None if whole else active), base + j
            else:
                rows = active[sel]
                arg, item = rows, base[sel] + j
            got = {sf.name: _field(r, sf, arg) for sf in f.items}
            chunks.append((everyone if arg is None else rows, item, got))
        counts[active] += c
        active = active[~r.bad[active]]
    out.counts[f.name] = counts
    out.chunks[f.name] = chunks


def parse(r: Reader, fields: tuple[Field, ...], m: int) -> _Parsed:
    """Read every field of every row (bad rows are marked in ``r.bad``)."""
    out = _Parsed()
    for f in fields:
        if f.kind == "array":
            _array(r, f, m, out)
        else:
            out.top[f.name] = _field(r, f, None)
    return out


def _texts(joined: bytes, st: np.ndarray, ln: np.ndarray, kind: str) -> list:
    """The strings (or bytes) at the spans; raises _BadRows with the indices that are not UTF-8."""
    ends = st + ln
    if kind == "bytes":
        return [joined[a:b] for a, b in zip(st.tolist(), ends.tolist(), strict=True)]
    try:
        return [joined[a:b].decode() for a, b in zip(st.tolist(), ends.tolist(), strict=True)]
    except UnicodeDecodeError:
        bad = []
        for k, (a, b) in enumerate(zip(st.tolist(), ends.tolist(), strict=True)):
            try:
                joined[a:b].decode()
            except UnicodeDecodeError:
                bad.append(k)
        raise _BadRows(np.asarray(bad, dtype=np.int64)) from None


def _column(joined: bytes, f: Field, payload: Payload, null: np.ndarray | None, keep: Any) -> Any:
    """The final column of ``payload`` at rows ``keep`` (a mask or an index array)."""
    if f.kind in STRINGS:
        st, ln = payload[0][keep], payload[1][keep]
        col = _texts(joined, st, ln, f.kind)
        if null is not None:
            nm = null[keep]
            if nm.any():
                col = [None if z else s for s, z in zip(col, nm.tolist(), strict=True)]
        return col
    return payload[keep]


def finalize(
    joined: bytes, fields: tuple[Field, ...], parsed: _Parsed, okm: np.ndarray
) -> tuple[np.ndarray, dict, dict, dict]:
    """Columns of the rows in ``okm`` (updated in place when some strings are not UTF-8).

    Returns (okm, columns, nulls, spans).
    """
    while True:
        try:
            return (okm, *_finalize(joined, fields, parsed, okm))
        except _BadRows as exc:
            if not okm[exc.rows].all():
                raise AssertionError("columnar decode: a bad row was reported twice") from None
            okm[exc.rows] = False


def _finalize(joined: bytes, fields: tuple[Field, ...], parsed: _Parsed, okm: np.ndarray) -> tuple:
    columns: dict[str, Any] = {}
    nulls: dict[str, np.ndarray] = {}
    spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    every = bool(okm.all())
    rows_ok: Any = slice(None) if every else np.flatnonzero(okm)
    newidx = None if every else np.cumsum(okm) - 1
    for f in fields:
        name = f.name
        if f.kind != "array":
            payload, null = parsed.top[name]
            try:
                columns[name] = _column(joined, f, payload, null, rows_ok)
            except _BadRows as exc:
                raise _BadRows(exc.rows if every else rows_ok[exc.rows]) from None
            if null is not None:
                nulls[name] = null[rows_ok]
            if f.kind in STRINGS:
                spans[name] = (payload[0][rows_ok], payload[1][rows_ok])
            continue
        arr = ArrayColumn(parsed.counts[name][rows_ok], {})
        _items(joined, f, parsed.chunks[name], arr, okm, every, newidx)
        columns[name] = arr
    return columns, nulls, spans


def _items(
    joined: bytes,
    f: Field,
    chunks: list[tuple[np.ndarray, np.ndarray, dict]],
    arr: ArrayColumn,
    okm: np.ndarray,
    every: bool,
    newidx: np.ndarray | None,
) -> None:
    """Fill ``arr.fields`` (flat item columns) from the chunks of the rows in ``okm``.

    Numeric item fields go through an ``[n, max items]`` matrix (item ``j`` of every row is one
    column assignment; the flat column is the matrix read in row order under the count mask),
    kept for :meth:`ArrayColumn.dense`; strings, and arrays too ragged for a matrix, are
    scattered to their flat positions.
    """
    n, total = len(arr.counts), int(arr.offsets[-1])
    widest = int(arr.counts.max(initial=0))
    matrix = widest * n <= 2 * total + 64
    # (input rows, output rows, item numbers, payloads, which of the chunk's values)
    selected: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict, Any]] = []
    for rows, itemno, got in chunks:
        if every:
            selected.append((rows, rows, itemno, got, slice(None)))
        else:
            keep = np.flatnonzero(okm[rows])
            if len(keep):
                orig = rows[keep]
                assert newidx is not None
                selected.append((orig, newidx[orig], itemno[keep], got, keep))
    mask = np.arange(widest) < arr.counts[:, None] if matrix else None
    flat_idx = None
    for sf in f.items:
        cols = []
        for orig, rows, itemno, got, which in selected:
            payload, null = got[sf.name]
            try:
                col = _column(joined, sf, payload, null, which)
            except _BadRows as exc:
                raise _BadRows(orig[exc.rows]) from None
            cols.append((rows, itemno, col, None if null is None else null[which]))
        if matrix and sf.kind not in STRINGS:
            mat = np.zeros((n, widest), dtype=cols[0][2].dtype if cols else _dtype(sf))
            for rows, itemno, col, _ in cols:
                if len(rows) == n and itemno[0] == itemno[-1]:  # item j of every row
                    mat[:, int(itemno[0])] = col
                else:
                    mat[rows, itemno] = col
            uniform = n and int(arr.counts.min()) == widest
            arr.fields[sf.name] = mat.reshape(-1) if uniform else mat[mask]
            arr._matrices[sf.name] = mat
        else:
            if flat_idx is None:
                flat_idx = np.concatenate([arr.offsets[r] + i for r, i, _, _ in cols] or [[]])
                flat_idx = flat_idx.astype(np.int64)
            if sf.kind in STRINGS:
                out: Any = [None] * total
                for k, v in zip(flat_idx.tolist(), (s for c in cols for s in c[2]), strict=True):
                    out[k] = v
            else:
                out = np.zeros(total, dtype=cols[0][2].dtype if cols else _dtype(sf))
                if cols:
                    out[flat_idx] = np.concatenate([c[2] for c in cols])
            arr.fields[sf.name] = out
        if sf.nullable:
            nm = np.zeros(total, dtype=bool)
            if cols:
                if flat_idx is None:
                    flat_idx = np.concatenate([arr.offsets[r] + i for r, i, _, _ in cols])
                nm[flat_idx] = np.concatenate([c[3] for c in cols])
            arr.nulls[sf.name] = nm


def _dtype(f: Field) -> Any:
    if f.kind in ("double", "float"):
        return np.float64
    if f.kind == "boolean":
        return np.bool_
    return np.int64

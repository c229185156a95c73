"""Columnar encoding of ``n`` records, field by field, into an :class:`Assembler` (see
:mod:`finscore.schemas.columnar.codec`).

Scalars are encoded once (as a one-row batch) and repeated as a constant piece. Per-row values
are converted to arrays and written with the vectorised writers; arrays of records encode
their flat items as a batch of their own and give each row the span of its items, between the
block count and the ``0`` that ends a non-empty array (the layout fastavro writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from finscore.schemas.columnar.decode import ArrayColumn
from finscore.schemas.columnar.plan import Field
from finscore.schemas.columnar.write import Assembler, decimal_bytes
from finscore.schemas.exceptions import EncodeError
from finscore.schemas.json_form import epoch, to_decimal

_MISSING = object()
_SCALARS = (str, bytes, int, float, bool, Decimal, datetime, np.generic)


@dataclass(frozen=True)
class Unscaled:
    """Decimal values given as their unscaled integers (int64), e.g. cents for scale 2."""

    values: Any


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, _SCALARS)


def encode_fields(
    asm: Assembler, fields: tuple[Field, ...], n: int, columns: Mapping[str, Any], where: str
) -> None:
    """Append every field of ``n`` rows to ``asm`` (``where`` names the schema in errors)."""
    for f in fields:
        v = columns.get(f.name, _MISSING)
        if v is _MISSING:
            if not f.has_default:
                raise EncodeError(f"{where} record does not fit its schema: no field {f.name}")
            v = f.default
        if isinstance(v, Unscaled) and np.ndim(v.values) == 0:
            v = Unscaled(np.full(n, v.values, dtype=np.int64))
        label = f"{where}.{f.name}" if f.name else where
        try:
            if f.kind == "array":
                _array(asm, f, n, v, label)
            elif f.nullable:
                _nullable(asm, f, n, v, label)
            elif _is_scalar(v):
                asm.const(_scalar_bytes(f, v, label))
            else:
                _values(asm, f, n, v, label)
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError, UnicodeError, KeyError) as exc:
            raise EncodeError(f"{label} does not fit its schema: {exc}") from None


_CONSTS: dict[tuple, bytes] = {}  # (field type, value type, repr of value) -> its encoding


def _scalar_bytes(f: Field, v: Any, label: str) -> bytes:
    """The encoding of one value of ``f`` (cached: model names, topics, thresholds repeat)."""
    key = (f.kind, f.symbols, f.scale, f.precision, f.logical, type(v), repr(v))
    out = _CONSTS.get(key)
    if out is None:
        one = Assembler(1)
        _values(one, f, 1, [v], label)
        out = one.rows()[0]
        if len(_CONSTS) > 4096:
            _CONSTS.clear()
        _CONSTS[key] = out
    return out


def _rows(v: Any, n: int, label: str) -> Any:
    if len(v) != n:
        raise EncodeError(f"{label}: {len(v)} values for {n} records")
    return v


def _values(asm: Assembler, f: Field, n: int, v: Any, label: str) -> None:
    """``n`` non-null values of a scalar-typed field."""
    v = Unscaled(_rows(v.values, n, label)) if isinstance(v, Unscaled) else _rows(v, n, label)
    kind = f.kind
    if kind in ("long", "int"):
        if f.logical and not isinstance(v, np.ndarray) and any(isinstance(x, datetime) for x in v):
            v = [epoch(x, f.logical) if isinstance(x, datetime) else x for x in v]
        asm.varint(np.asarray(v, dtype=np.int64))
    elif kind == "double":
        asm.fixed(np.ascontiguousarray(v, dtype="<f8").view(np.uint8).reshape(n, 8))
    elif kind == "float":
        asm.fixed(np.ascontiguousarray(v, dtype="<f4").view(np.uint8).reshape(n, 4))
    elif kind == "boolean":
        asm.fixed(np.asarray(v, dtype=bool).astype(np.uint8).reshape(n, 1))
    elif kind == "enum":
        asm.varint(_enum_indices(f, v, label))
    elif kind == "string":
        _texts(asm, n, v, is_bytes=False)
    elif kind == "bytes":
        _texts(asm, n, v, is_bytes=True)
    elif kind == "decimal":
        unscaled = _unscaled(f, v, label)
        mat, first, lens = decimal_bytes(unscaled)
        asm.varint(lens)
        asm.matrix(mat, lens, first)
    else:
        raise AssertionError(kind)


def _enum_indices(f: Field, v: Any, label: str) -> np.ndarray:
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
        idx = v.astype(np.int64)
    else:
        lookup = {s: i for i, s in enumerate(f.symbols)}
        try:
            idx = np.fromiter((lookup[s] for s in v), dtype=np.int64, count=len(v))
        except KeyError as exc:
            raise EncodeError(f"{label}: {exc.args[0]!r} is not one of {f.symbols}") from None
    if len(idx) and (idx.min() < 0 or idx.max() >= len(f.symbols)):
        raise EncodeError(f"{label}: enum index out of range 0..{len(f.symbols) - 1}")
    return idx


def _unscaled(f: Field, v: Any, label: str) -> np.ndarray:
    if isinstance(v, Unscaled):
        u = np.asarray(v.values, dtype=np.int64)
        if len(u) and np.abs(u).max() >= 10**f.precision:
            raise EncodeError(f"{label}: exceeds decimal precision {f.precision}")
        return u
    out = []
    for x in v:
        q = to_decimal(x, f.scale, f.precision, label)
        out.append(int(q.scaleb(f.scale)))
    return np.asarray(out, dtype=np.int64)


def _texts(asm: Assembler, n: int, v: Any, *, is_bytes: bool) -> None:
    if is_bytes:
        encs = [bytes(x) for x in v]
        data = b"".join(encs)
        lens = np.fromiter(map(len, encs), dtype=np.int64, count=n)
    else:
        joined = "".join(v)  # TypeError (→ EncodeError) for anything but str
        data = joined.encode()
        if len(data) == len(joined):  # ASCII: characters are bytes
            lens = np.fromiter(map(len, v), dtype=np.int64, count=n)
        else:
            encs = [x.encode() for x in v]
            lens = np.fromiter(map(len, encs), dtype=np.int64, count=n)
    asm.varint(lens)
    arr = np.frombuffer(data, dtype=np.uint8)
    if n and lens.min() == lens.max():
        asm.fixed(arr.reshape(n, int(lens[0])))
    else:
        asm.varying(arr, np.cumsum(lens) - lens, lens)


def _nullable(asm: Assembler, f: Field, n: int, v: Any, label: str) -> None:
    vals = [v] * n if _is_scalar(v) else list(_rows(v, n, label))
    present = np.fromiter((x is not None for x in vals), dtype=bool, count=n)
    value_branch = 1 - f.null_index
    branch = np.where(present, value_branch, f.null_index).astype(np.uint8) * 2  # zig-zag
    asm.fixed(branch.reshape(n, 1))
    if not present.any():
        return
    filler = next(x for x in vals if x is not None)
    inner = Assembler(n)
    _values(inner, f, n, [x if x is not None else filler for x in vals], label)
    flat, bounds = inner.build()
    asm.varying(flat, bounds[:-1], np.where(present, np.diff(bounds), 0))


def _array(asm: Assembler, f: Field, n: int, v: Any, label: str) -> None:
    if isinstance(v, ArrayColumn):
        counts = _rows(v.counts, n, label)
        items = dict(v.fields)
        for name, mask in v.nulls.items():  # null items come back as None
            col = list(items[name])
            items[name] = [None if z else c for c, z in zip(col, mask.tolist(), strict=True)]
    elif isinstance(v, list | tuple) and len(v) == 0:
        asm.const(b"\x00")
        return
    else:
        rows = _rows(v, n, label)
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=n)
        flat = [it for row in rows for it in row]
        if f.record_items:
            items = {
                sf.name: [
                    it[sf.name] if sf.name in it or not sf.has_default else sf.default
                    for it in flat
                ]  # fmt: skip
                for sf in f.items
            }
        else:
            items = {"": flat}
    counts = np.asarray(counts, dtype=np.int64)
    if not counts.any():
        asm.const(b"\x00")
        return
    m = int(counts.sum())
    sub = Assembler(m)
    encode_fields(sub, f.items, m, items, label)
    flat_items, ib = sub.build()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    start = ib[offsets[:-1]]
    asm.varint(counts)
    asm.varying(flat_items, start, ib[offsets[1:]] - start)
    asm.matrix(np.zeros((n, 1), dtype=np.uint8), (counts > 0).astype(np.int64))

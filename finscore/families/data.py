"""A family's history read from a file: the columns :func:`~finscore.families.engine.featurize`
takes, and the labels, from a CSV (or a Parquet file when pyarrow is installed).

One file holds the events, one row each, with a header. Each field the family reads
(:attr:`FamilySpec.input_fields <finscore.families.spec.FamilySpec.input_fields>`) is the
column of the same name, or the one ``mapping`` names (``{"card": "card_number"}``, what
``--map card=card_number`` says). Cells are parsed per the schema's field type:

- ``string``: as written (ids and keys are strings, as on the topic);
- ``int`` / ``long``: an integer; the time fields (``[input] time``, and the label time)
  also take an ISO 8601 date-time (``2024-06-01T10:00:00Z``; without a zone: UTC), kept as
  epoch milliseconds;
- ``float`` / ``double``: a finite number; ``decimal``: a number, rounded half-even to the
  schema's scale (kept as unscaled integers, as the columnar decoder gives them);
- ``boolean``: ``true``/``false``, ``1``/``0``, ``yes``/``no`` (any case);
- ``enum``: one of the schema's symbols (kept as its index, as the decoder gives it).

An empty cell takes the field's schema default when it has a non-null one, and is an error
otherwise. Any cell that does not parse raises :class:`FamilyDataError` naming the file, the
line, the column and the value.

**Labels come from the same file** (the choice made here: the history a team exports is
usually one table with its outcome column): the label schema's 0/1 field
(``[label] field``, e.g. ``is_fraud``; mapped like the others) must be filled in every row
(0/1 or a boolean), and each row is its own label: id, key(s) and event time from the row, and
its label time from the column of ``[label] label_time`` when the file has one (it may not
precede the event), else the event time plus ``[label] delay_days``. A second labels file is
not read. ``require_labels=False`` reads events without a label column (labels left empty).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from finscore.families.exceptions import FamilyInputError
from finscore.families.spec import FamilySpec
from finscore.schemas.columnar.plan import Field

__all__ = [
    "FamilyDataError",
    "FamilyTable",
    "parse_mapping",
    "read_events",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
_TRUE = frozenset(("true", "1", "yes", "t", "y"))
_FALSE = frozenset(("false", "0", "no", "f", "n"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FamilyDataError(FamilyInputError):
    """A data file does not fit the family: a missing column, a cell that does not parse
    (the message names the file, the line and the column), an unreadable file."""

    hint = (
        "fix the named cell, or map the schema's fields to your columns with "
        "--map FIELD=COLUMN (see finscore/families/data.py)"
    )


@dataclass
class FamilyTable:
    """Events read from a file for a family, in file order.

    ``columns``: the input fields the family reads (:attr:`FamilySpec.input_fields`, in the
    engine's forms); ``labels``: the label fields (:attr:`FamilySpec.label_fields`), one label
    per row (empty without labels); ``label``: each row's 0/1 outcome (int8, None without
    labels); ``times``: each row's event time (epoch ms); ``lines``: each row's line in the
    file (the record's last line for CSV, the row number from 1 for Parquet)."""

    spec: FamilySpec
    source: str
    columns: dict[str, Any]
    labels: dict[str, Any]
    label: np.ndarray | None
    times: np.ndarray
    lines: np.ndarray
    mapping: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["field=column", ...]`` (what ``--map`` collects) as ``{field: column}``; raises
    :class:`FamilyDataError` for an entry without ``=`` or a field mapped twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, col = pair.partition("=")
        name, col = name.strip(), col.strip()
        if not sep or not name or not col:
            raise FamilyDataError(f"--map {pair!r}: expected FIELD=COLUMN (e.g. card=card_number)")
        if name in out and out[name] != col:
            raise FamilyDataError(f"--map: field {name!r} mapped twice ({out[name]!r}, {col!r})")
        out[name] = col
    return out


def read_events(
    path: str | Path,
    spec: FamilySpec,
    mapping: Mapping[str, str] | None = None,
    *,
    require_labels: bool = True,
) -> FamilyTable:
    """The events of ``path`` (CSV; ``.parquet``/``.pq`` with pyarrow) as ``spec`` reads them,
    with their labels (see the module docstring). ``mapping``: schema field → file column.
    Raises :class:`FamilyDataError` naming what does not fit."""
    path = Path(path)
    mapping = dict(mapping or {})
    lab = spec.label
    known = set(spec.input.schema.fields) | {lab.field, lab.label_time}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise FamilyDataError(
            f"--map {unknown[0]}=...: {unknown[0]!r} is not a field of the input schema "
            f"{spec.input.schema.ref!r} nor the label's {lab.field!r}/{lab.label_time!r}"
        )
    if path.suffix.lower() in PARQUET_SUFFIXES:
        header, cells, lines = _read_parquet(path)
    else:
        header, cells, lines = _read_csv(path)
    where = str(path)
    index = {name: i for i, name in enumerate(header)}

    def cells_of(name: str, *, required: bool = True) -> list[str] | None:
        col = mapping.get(name, name)
        if col not in index:
            if not required:
                return None
            mapped = f" (mapped from {name!r})" if name in mapping else ""
            raise FamilyDataError(
                f"{where}: no column {col!r}{mapped} for the field {name!r}; "
                f"the columns are: {', '.join(header)}",
                hint=f"map it with --map {name}=COLUMN",
            )
        return cells[index[col]]

    fields = spec.input.schema.fields
    time_like = {spec.input.time}
    columns: dict[str, Any] = {}
    for name in spec.input_fields:
        raw = cells_of(name)
        assert raw is not None
        columns[name] = _parse(raw, fields[name], name in time_like, where, mapping.get(name, name),
                               lines)  # fmt: skip
    t = np.asarray(columns[spec.input.time], dtype=np.int64)
    labels: dict[str, Any] = {}
    label: np.ndarray | None = None
    raw_label = cells_of(lab.field, required=require_labels)
    if raw_label is not None:
        lf = lab.schema.fields[lab.field]
        col = mapping.get(lab.field, lab.field)
        y = np.asarray(_parse(raw_label, lf, False, where, col, lines), dtype=np.int64)
        bad = np.flatnonzero((y != 0) & (y != 1))
        if len(bad):
            i = int(bad[0])
            raise FamilyDataError(
                f"{where}:{lines[i]}: column {col!r}: label {raw_label[i]!r} is not 0/1"
            )
        label = y.astype(np.int8)
        raw_lt = cells_of(lab.label_time, required=False)
        if raw_lt is not None:
            lt_field = lab.schema.fields[lab.label_time]
            lt_col = mapping.get(lab.label_time, lab.label_time)
            label_time = np.asarray(_parse(raw_lt, lt_field, True, where, lt_col, lines), np.int64)
            early = np.flatnonzero(label_time < t)
            if len(early):
                i = int(early[0])
                raise FamilyDataError(
                    f"{where}:{lines[i]}: column {lt_col!r}: the label time {raw_lt[i]!r} "
                    "precedes the event's time"
                )
        else:
            label_time = t + lab.delay_ms
        labels = {lab.id: columns[spec.input.id], lab.time: t, lab.label_time: label_time,
                  lab.field: label}  # fmt: skip
        # the other label fields the features read (risk keys, habit keys and fields): fields
        # of both schemas, taken from the row's own event
        own = {lab.id, lab.time, lab.label_time, lab.field}
        for name in spec.label_fields:
            if name in own:
                continue
            if name not in columns:
                raw = cells_of(name)
                assert raw is not None
                columns[name] = _parse(raw, fields[name], False, where,
                                       mapping.get(name, name), lines)  # fmt: skip
            labels[name] = columns[name]
    return FamilyTable(spec, where, columns, labels, label, t, np.asarray(lines, np.int64),
                       mapping)  # fmt: skip


# -- reading ------------------------------------------------------------------------------------
def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, cells per column, line per row) of a CSV with a header; blank lines skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise FamilyDataError(f"{path}: empty file (a header line is needed)")
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise FamilyDataError(f"{path}:1: column {dup[0]!r} appears twice in the header")
            cells: list[list[str]] = [[] for _ in header]
            lines: list[int] = []
            width = len(header)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    raise FamilyDataError(
                        f"{path}:{reader.line_num}: {len(row)} cells, the header has {width}"
                    )
                for col, cell in zip(cells, row, strict=True):
                    col.append(cell)
                lines.append(reader.line_num)
    except OSError as exc:
        raise FamilyDataError(f"{path}: cannot read: {exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FamilyDataError(f"{path}: not a readable CSV: {exc}") from exc
    return header, cells, lines


def _read_parquet(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """A Parquet file's columns as text cells (None as empty), parsed like CSV cells."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise FamilyDataError(
            f"{path}: reading Parquet needs pyarrow, which is not installed",
            hint="pip install pyarrow, or export the data as CSV",
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise FamilyDataError(f"{path}: not a readable Parquet file: {exc}") from exc
    header = [str(c) for c in table.column_names]
    cells = [["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in header]
    return header, cells, list(range(1, table.num_rows + 1))


# -- parsing ------------------------------------------------------------------------------------
def _parse(
    raw: list[str], f: Field, is_time: bool, where: str, column: str, lines: Sequence[int]
) -> Any:
    """One column's cells as the engine takes them (see :mod:`finscore.families.columns`)."""
    if f.kind == "string":
        return _fill(raw, f, where, column, lines, allow_empty=True)
    cells = _fill(raw, f, where, column, lines, allow_empty=False)
    if f.kind in ("int", "long"):
        return _vector(cells, np.int64, _time if is_time else _int, where, column, lines)
    if f.kind in ("float", "double"):
        out = _vector(cells, np.float64, _float, where, column, lines)
        bad = np.flatnonzero(~np.isfinite(out))
        if len(bad):
            _fail(where, lines[int(bad[0])], column, cells[int(bad[0])], "a finite number")
        return out
    if f.kind == "decimal":
        return _each(cells, np.int64, lambda s: _decimal(s, f.scale, f.precision), where, column,
                     lines)  # fmt: skip
    if f.kind == "boolean":
        return _each(cells, np.bool_, _bool, where, column, lines)
    if f.kind == "enum":
        symbols = {s: i for i, s in enumerate(f.symbols)}

        def symbol(s: str) -> int:
            if s not in symbols:
                raise ValueError(f"one of {', '.join(f.symbols)}")
            return symbols[s]

        return _each(cells, np.int64, symbol, where, column, lines)
    raise FamilyDataError(f"{where}: column {column!r}: fields of type {f.kind} cannot be read")


def _fill(
    raw: list[str], f: Field, where: str, column: str, lines: Sequence[int], *, allow_empty: bool
) -> list[str]:
    """Cells with empty ones replaced by the field's default (an error without one)."""
    if allow_empty and not (f.has_default and f.default is not None):
        return raw
    empty = [i for i, s in enumerate(raw) if not s.strip()]
    if not empty:
        return raw
    if not f.has_default or f.default is None:
        i = empty[0]
        raise FamilyDataError(
            f"{where}:{lines[i]}: column {column!r}: empty cell, a value is needed"
        )
    default = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
    out = list(raw)
    for i in empty:
        out[i] = default
    return out


def _vector(
    cells: list[str], dtype: Any, one: Callable[[str], Any], where: str, column: str,
    lines: Sequence[int],
) -> np.ndarray:  # fmt: skip
    """Fast path: numpy's own parse of the whole column; else cell by cell (names the line)."""
    try:
        return np.array(cells, dtype=np.str_).astype(dtype)
    except (ValueError, OverflowError):
        return _each(cells, dtype, one, where, column, lines)


def _each(
    cells: list[str], dtype: Any, one: Callable[[str], Any], where: str, column: str,
    lines: Sequence[int],
) -> np.ndarray:  # fmt: skip
    out = np.empty(len(cells), dtype=dtype)
    for i, s in enumerate(cells):
        try:
            out[i] = one(s.strip())
        except (ValueError, ArithmeticError) as exc:
            _fail(where, lines[i], column, s, str(exc))
    return out


def _fail(where: str, line: int, column: str, value: str, need: str) -> None:
    raise FamilyDataError(f"{where}:{line}: column {column!r}: {value!r} is not {need}")


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise ValueError("an integer") from None


def _time(s: str) -> int:
    """Epoch ms, or an ISO 8601 date-time (naive: UTC)."""
    try:
        return int(s)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError("a time (epoch milliseconds or ISO 8601)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // timedelta(milliseconds=1)


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise ValueError("a number") from None


def _decimal(s: str, scale: int, precision: int) -> int:
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError("a decimal number") from None
    if not d.is_finite():
        raise ValueError("a finite decimal number")
    unscaled = int(d.scaleb(scale).to_integral_value(ROUND_HALF_EVEN))
    if precision and abs(unscaled) >= 10**precision:
        raise ValueError(f"a decimal of at most {precision} digits ({scale} after the point)")
    return unscaled


def _bool(s: str) -> bool:
    low = s.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("a boolean (true/false, 1/0, yes/no)")

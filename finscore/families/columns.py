"""Input columns as the feature engine reads them.

Columns are what the worker's columnar decoder gives (:class:`finscore.schemas.columnar.
DecodedBatch`): ``list[str]`` for strings, ``int64`` arrays for longs and timestamps, ``bool``
arrays for booleans, ``float64`` for doubles, decimals as ``int64`` *unscaled* values (cents
for scale 2), enums as ``int64`` symbol indices. Training frames and records are accepted too:
ids and keys of any type (rendered with ``str``, as records carry them), decimals as floats,
``Decimal`` or ``str`` in units (rounded half-even to the scale), enums as their symbols.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from finscore.families.exceptions import FamilyInputError
from finscore.schemas.columnar.plan import Field

__all__ = [
    "column",
    "records_to_columns",
    "strings",
    "times",
    "unscaled",
    "units",
]


def column(columns: Mapping[str, Any], name: str, n: int) -> Any:
    """Column ``name`` of ``columns``, checked to hold ``n`` rows."""
    try:
        col = columns[name]
    except KeyError:
        raise FamilyInputError(f"missing column {name!r}") from None
    if len(col) != n:
        raise FamilyInputError(f"column {name!r} has {len(col)} rows, not {n}")
    return col


def strings(col: Any) -> list[str]:
    """Ids and keys as strings (a list of str is used as it is)."""
    if isinstance(col, np.ndarray):
        return col.astype(str).tolist() if col.dtype.kind != "U" else col.tolist()
    if isinstance(col, list) and (not col or isinstance(col[0], str)):
        return col
    return [str(v) for v in col]


def times(col: Any) -> np.ndarray:
    """Epoch-ms times as int64."""
    t = np.asarray(col)
    if len(t) and t.dtype.kind not in "iu":
        raise FamilyInputError(f"times must be integers (epoch ms), not {t.dtype}")
    return t.astype(np.int64, copy=False)


def unscaled(col: Any, f: Field, places: int | None) -> np.ndarray:
    """A numeric field as exact int64 in its smallest unit: a decimal's unscaled value, an
    integer or boolean as it is, a float rounded to ``places`` decimals (half-even)."""
    if f.kind in ("float", "double"):
        assert places is not None
        return np.round(np.asarray(col, dtype=np.float64) * 10**places).astype(np.int64)
    if f.kind != "decimal":
        return np.asarray(col).astype(np.int64, copy=False)
    if isinstance(col, np.ndarray) and col.dtype.kind in "iu":
        return col.astype(np.int64, copy=False)
    if isinstance(col, np.ndarray) and col.dtype.kind == "f":
        return np.round(col * 10**f.scale).astype(np.int64)
    return np.fromiter((_unscaled(v, f.scale) for v in col), np.int64, len(col))


def _unscaled(v: Any, scale: int) -> int:
    if isinstance(v, Decimal | str):
        return int(Decimal(v).scaleb(scale).to_integral_value(ROUND_HALF_EVEN))
    if isinstance(v, int | np.integer):
        return int(v)
    return round(float(v) * 10**scale)


def units(col: Any, f: Field) -> np.ndarray:
    """A numeric field's values in its units, float64 (a decimal's unscaled value / 10^scale,
    the arithmetic of the hand-coded fraud features)."""
    if f.kind == "decimal":
        raw = unscaled(col, f, None)
        return raw / 10**f.scale if f.scale else raw.astype(np.float64)
    return np.asarray(col).astype(np.float64, copy=False)


def records_to_columns(records: Iterable[Mapping[str, Any]], names: Sequence[str]) -> dict:
    """Dict records (what :meth:`Codec.decode <finscore.schemas.Codec.decode>` gives) as
    columns of the fields ``names`` (lists; the engine converts them)."""
    rows = list(records)
    try:
        return {name: [r[name] for r in rows] for name in names}
    except KeyError as exc:
        raise FamilyInputError(f"a record lacks field {exc.args[0]!r}") from None

"""The declared engine's changelog rows are tied to their layout: :meth:`DeclaredFeatures.
changelog_layout` (and its digest) changes with the window columns, their units and spans, and
:meth:`DeclaredFeatures.valid_rows` refuses the rows the engine could not have written (a
restore that keeps them scores as a clean one does; one that does not overflows its sums)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finscore.families import DeclaredFeatures, FamilySpec
from finscore.families.engine import MAX_SQUARED_UNITS
from finscore.features.timestore import _decode_rows, _encode_rows
from tests.families.test_declared_family import (
    folder,  # noqa: F401  (fixture)
    payments,
    spec,  # noqa: F401  (fixture)
)


def _variant(spec: FamilySpec, folder: Path, edit) -> FamilySpec:  # noqa: ANN001, F811
    """``spec`` (declared in ``folder``) with ``edit`` applied to each feature's table (None:
    left out)."""
    tables = spec.to_dict()
    tables["features"] = [g for f in tables["features"] if (g := edit(dict(f))) is not None]
    return FamilySpec.from_dict(tables, folder)


def _counts_only(f: dict) -> dict | None:
    return None if f["kind"] == "window" and f["key"] == "account" and f["stat"] != "count" else f


def _mean(f: dict) -> dict:
    if f["name"] == "ACCOUNT_AMOUNT_Z_5D":
        return {**f, "stat": "mean", "name": "ACCOUNT_AMOUNT_MEAN_5D"}
    return f


def test_the_layout_digest_follows_the_windows_columns_and_spans(
    spec: FamilySpec,  # noqa: F811
    folder: Path,  # noqa: F811
) -> None:
    counts, means = _variant(spec, folder, _counts_only), _variant(spec, folder, _mean)
    longer = _variant(
        spec, folder, lambda f: {**f, "days": 9} if f["name"] == "ACCOUNT_N_2D" else f
    )
    digests = [DeclaredFeatures(s).layout_digest() for s in (spec, counts, means, longer)]
    assert len(set(digests)) == 4 and all(len(d) == 8 for d in digests)
    assert DeclaredFeatures(spec).layout_digest() == digests[0]
    assert '["amount",100]' in DeclaredFeatures(spec).changelog_layout()
    assert '["amount^2",10000]' in DeclaredFeatures(spec).changelog_layout()


def test_a_poisoned_row_is_refused_and_the_restore_scores_as_a_clean_one(spec: FamilySpec) -> None:  # noqa: F811
    p = payments(300, seed=5)
    writer = DeclaredFeatures(spec)
    writer.transform_columns(p)
    records = writer.take_changes(dict.fromkeys(p["account"], 0))
    assert writer._own is not None
    width = 3 + len(writer._own.store.value_names)  # key index, time, tag, amount, amount^2
    poisoned = []
    for _, r in records:
        names, rows = _decode_rows(r, width)
        rows = rows.copy()
        rows[:, 3] = 2**62  # far beyond MAX_SQUARED_UNITS: int64 sums overflow
        poisoned.append(("p0", _encode_rows(names, rows)))
        assert not DeclaredFeatures(spec).valid_rows(rows[:, 1:]).any()
    later = {c: v[-5:] for c, v in p.items()}
    j = list(spec.feature_names).index("ACCOUNT_AMOUNT_Z_5D")

    def restored(recs: list, keep) -> np.ndarray:  # noqa: ANN001
        engine = DeclaredFeatures(spec)
        engine.add_changes(recs, keep and engine.valid_rows)
        return engine.transform_columns(later)[:, j]

    clean = restored([("p0", r) for _, r in records], True)
    assert (restored(poisoned, True) == restored([], None)).all()  # as nothing restored
    assert not (restored(poisoned, None) == restored([], None)).all()  # without: wrong
    assert (clean != 0).any()


def test_valid_rows_bounds_summed_values_squares_and_tags(
    spec: FamilySpec,  # noqa: F811
    folder: Path,  # noqa: F811
) -> None:
    engine = DeclaredFeatures(spec)
    t = 1_717_200_000_000
    ok = [t, 5, 300, 90_000]
    rows = np.array([ok,
                     [t, 5, MAX_SQUARED_UNITS, MAX_SQUARED_UNITS**2],
                     [t, 5, MAX_SQUARED_UNITS + 1, (MAX_SQUARED_UNITS + 1) ** 2],
                     [t, 5, -300, 90_001],
                     [t, -1, 300, 90_000],
                     [t, 2**32, 300, 90_000]], dtype=np.int64)  # fmt: skip
    assert engine.valid_rows(rows).tolist() == [True, True, False, False, False, False]
    counts = DeclaredFeatures(_variant(spec, folder, _counts_only))
    seen = np.array([[t, 5, 1], [t, 5, 0], [t, 5, 2]], dtype=np.int64)
    assert counts.valid_rows(seen).tolist() == [True, False, False]

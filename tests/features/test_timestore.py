"""The columnar time store under the fraud features: window queries against brute force,
idempotent inserts, eviction with key compaction, snapshot/restore, changelog records,
range limits."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from finscore.features.exceptions import FeatureStateError
from finscore.features.fraud import FraudFeatures
from finscore.features.timestore import (
    KEY_ROWS_MAGIC,
    NO_TIME,
    ROWS_MAGIC,
    TIME_BITS,
    TimeStore,
    record_keys,
)

DAY = 86_400_000


def _filled(seed: int = 0, n: int = 3000, keys: int = 40) -> tuple[TimeStore, dict]:
    rng = np.random.default_rng(seed)
    store = TimeStore(("v",))
    names = [f"k{i}" for i in rng.integers(0, keys, n)]
    t = rng.integers(0, 60 * DAY, n)
    v = rng.integers(-500, 500, n)
    for a in range(0, n, 317):  # uneven batches, arbitrary order
        b = min(n, a + 317)
        store.insert(store.index_of(names[a:b], create=True), t[a:b], np.arange(a, b),
                     {"v": v[a:b]})  # fmt: skip
    return store, {"names": names, "t": t, "v": v}


def test_windows_match_brute_force_and_never_cross_keys() -> None:
    store, ref = _filled()
    names, t, v = np.array(ref["names"]), ref["t"], ref["v"]
    rng = np.random.default_rng(1)
    q_names = [f"k{i}" for i in rng.integers(0, 45, 500)]  # some unknown keys
    upto = rng.integers(-DAY, 61 * DAY, 500)
    after = upto - rng.integers(0, 40 * DAY, 500)
    ((count, sums),) = store.window_sums(store.index_of(q_names, create=False), [after], upto,
                                         ("v",))  # fmt: skip
    for r, name in enumerate(q_names):
        m = (names == name) & (t > after[r]) & (t <= upto[r])
        assert count[r] == m.sum(), r
        assert sums["v"][r] == v[m].sum(), r
        e = store.entries(int(store.index_of([name], create=False)[0]), int(after[r]), int(upto[r]))
        assert sorted(e["v"].tolist()) == sorted(v[m].tolist()), r


def test_last_time_of_a_zero_matches_brute_force_across_both_runs() -> None:
    rng = np.random.default_rng(2)
    n = 12_000  # enough to merge the delta run into the main run, and leave a delta behind
    store = TimeStore(("z",))
    names = np.array([f"k{i}" for i in rng.integers(0, 60, n)])
    t = rng.integers(0, 60 * DAY, n)
    z = rng.integers(0, 3, n)
    for a in range(0, n, 1009):
        b = min(n, a + 1009)
        store.insert(store.index_of(names[a:b].tolist(), create=True), t[a:b], np.arange(a, b),
                     {"z": z[a:b]})  # fmt: skip
    assert len(store._main) and len(store._delta)  # both runs hold entries
    q_names = [f"k{i}" for i in rng.integers(0, 65, 800)]  # some unknown keys
    upto = rng.integers(-DAY, 61 * DAY, 800)
    got = store.last_time_of_zero(store.index_of(q_names, create=False), upto, "z")
    for r, name in enumerate(q_names):
        m = (names == name) & (t <= upto[r]) & (z == 0)
        assert got[r] == (t[m].max() if m.any() else NO_TIME), r
    assert (got == NO_TIME).any() and (got > NO_TIME).any()


def test_inserts_are_idempotent_by_key_time_and_tag() -> None:
    store = TimeStore(("v",))
    idx = store.index_of(["a", "a", "b"], create=True)
    added = store.insert(idx, np.array([5, 5, 5]), np.array([1, 1, 1]), {"v": np.array([1, 2, 3])})
    assert added.tolist() == [True, False, True]  # a repeat inside one call
    again = store.insert(idx[:1], np.array([5]), np.array([1]), {"v": np.array([9])})
    assert again.tolist() == [False] and len(store) == 2
    other_tag = store.insert(idx[:1], np.array([5]), np.array([2]), {"v": np.array([4])})
    assert other_tag.tolist() == [True] and len(store) == 3


def test_evict_drops_old_entries_and_compacts_indices_without_changing_answers() -> None:
    store = TimeStore(("v",))
    names = [f"k{i}" for i in range(6000)]
    t = np.array([(i % 4 == 0) * 50 * DAY + i for i in range(6000)])  # a quarter recent
    store.insert(store.index_of(names, create=True), t, np.zeros(6000), {"v": np.ones(6000)})
    survivors = [n for n, tt in zip(names, t, strict=True) if tt > 10 * DAY]
    store.evict(10 * DAY)
    assert len(store) == 1500 and sorted(store.key_names()) == sorted(survivors)
    assert len(store._names) == 1500  # compacted: dead keys no longer hold indices
    ((count, _),) = store.window_sums(store.index_of(survivors, create=False),
                                      [np.zeros(1500)], np.full(1500, 100 * DAY))  # fmt: skip
    assert (count == 1).all()


def test_snapshot_restore_round_trip() -> None:
    store, ref = _filled(seed=3)
    copy = TimeStore(("v",))
    keys = store.key_names()
    copy.restore(dict(zip(keys, store.snapshot(keys), strict=True)))
    lo, hi = [np.full(len(keys), -1)], np.full(len(keys), 61 * DAY)
    ((a, sa),) = store.window_sums(store.index_of(keys, create=False), lo, hi, ("v",))
    ((b, sb),) = copy.window_sums(copy.index_of(keys, create=False), lo, hi, ("v",))
    assert (a == b).all() and (sa["v"] == sb["v"]).all() and a.sum() == len(store)
    with pytest.raises(FeatureStateError):
        copy.restore({"x": b"old format"})


def test_times_out_of_range_are_refused_clearly() -> None:
    store = TimeStore(("v",))
    store.insert(store.index_of(["a"], create=True), np.array([0]), np.array([0]),
                 {"v": np.array([1])})  # fmt: skip
    far = np.array([1 << TIME_BITS])
    assert not store.accepts(far)[0]
    with pytest.raises(FeatureStateError, match="34 years"):
        store.insert(store.index_of(["a"], create=True), far, np.array([1]), {"v": np.array([1])})


def test_out_of_order_batches_equal_one_at_a_time() -> None:
    """Rows of one customer out of time order inside a batch (and same-millisecond rows) get
    exactly what one-at-a-time processing gives them."""
    rng = np.random.default_rng(5)
    n = 400
    txs = [{"transaction_id": str(i), "event_time": int(rng.integers(0, 5 * DAY)) // 3600_000 * 3600_000,
            "customer_id": f"c{rng.integers(0, 7)}", "terminal_id": "t",
            "amount": float(rng.integers(1, 10_000)) / 100} for i in range(n)]  # fmt: skip
    one = FraudFeatures()
    want = np.concatenate([one.transform([tx]) for tx in txs])
    got = FraudFeatures().transform(txs)
    np.testing.assert_array_equal(got, want)


def _tracked(n: int = 3000, keys: int = 40) -> tuple[TimeStore, dict]:
    rng = np.random.default_rng(3)
    store = TimeStore(("v",), track_changes=True)
    names = [f"k{i}" for i in rng.integers(0, keys, n)]
    t, v = rng.integers(0, 60 * DAY, n), rng.integers(-500, 500, n)
    for a in range(0, n, 500):
        store.insert(store.index_of(names[a : a + 500], create=True), t[a : a + 500],
                     np.arange(a, min(n, a + 500)), {"v": v[a : a + 500]})  # fmt: skip
    return store, {"names": names, "t": t, "v": v}


def _answers(store: TimeStore, names: list[str]) -> list:
    idx = store.index_of(names, create=False)
    ((count, sums),) = store.window_sums(idx, [np.full(len(names), -1)], np.full(len(names), 61 * DAY), ("v",))  # fmt: skip
    return [count.tolist(), sums["v"].tolist()]


def test_changes_come_grouped_in_bounded_records_that_rebuild_the_store() -> None:
    store, ref = _tracked()
    group_of = {f"k{i}": i % 3 for i in range(40) if i % 3 != 2 or i == 2}  # group 2: only k2
    records = store.take_changes(group_of, max_rows=400)
    assert store.take_changes(group_of) == []  # taken
    held = [n for n in ref["names"] if n in group_of]
    assert all(len(record_keys(r)) <= 400 for _, r in records)
    assert sum(len(record_keys(r)) > 0 for _, r in records) == len(records)
    for g, r in records:
        assert {group_of[k] for k in record_keys(r)} == {g}
    per_group = {g: sum(1 for n in held if group_of[n] == g) for g in (0, 1, 2)}
    assert sorted({g for g, _ in records}) == [0, 1, 2]
    assert len(records) == sum(-(-c // 400) for c in per_group.values())  # ceil(rows / 400)
    rebuilt = TimeStore(("v",))
    rebuilt.add_rows([("ignored", r) for _, r in records[::-1] + records[:3]])
    keys = sorted(set(held))
    assert _answers(rebuilt, keys) == _answers(store, keys)
    assert sorted(rebuilt.key_names()) == keys  # keys outside group_of were left out


def test_single_key_records_of_earlier_versions_are_still_read() -> None:
    rows = np.array([[5 * DAY, 7, 120], [6 * DAY, 8, -30]], dtype="<i8")
    legacy = KEY_ROWS_MAGIC + struct.pack("<I", 2) + rows.tobytes()
    store = TimeStore(("v",))
    store.add_rows([("c1", legacy)])
    assert _answers(store, ["c1"]) == [[2], [90]]


def test_corrupt_state_records_are_refused_clearly() -> None:
    store, _ = _tracked(n=200)
    ((_, good),) = store.take_changes({f"k{i}": 0 for i in range(40)})
    fresh = TimeStore(("v",))
    for bad in (good[:-8], good[:12], ROWS_MAGIC + b"\xff" * 8, KEY_ROWS_MAGIC + b"\x09",
                b"XXXX" + good[4:]):  # fmt: skip
        with pytest.raises(FeatureStateError):
            fresh.add_rows([("k", bad)])
    assert len(fresh) == 0
    fresh.add_rows([("k", good)])
    assert len(fresh) == 200


def test_last_time_is_the_latest_entry_at_or_before_the_bound_in_both_runs() -> None:
    s = TimeStore(("v",), origin=0)
    s.insert(np.array([0, 0, 1]), np.array([10, 30, 20]), np.array([1, 2, 3]),
             {"v": np.array([1, 1, 1])})  # fmt: skip
    s._merge()  # these in the main run, the next one in the delta run
    s.insert(np.array([0]), np.array([25]), np.array([4]), {"v": np.array([0])})
    got = s.last_time(np.array([0, 0, 0, 1, 1, -1]), np.array([29, 30, 9, 19, 99, 99]))
    assert got.tolist() == [25, 30, NO_TIME, NO_TIME, 20, NO_TIME]


def test_take_change_rows_reports_each_insert_once_with_local_key_indices() -> None:
    s = TimeStore(("v",), track_changes=True, origin=0)
    s.index_of(["unused"], create=True)
    s.insert(s.index_of(["b", "a", "b"], create=True), np.array([5, 6, 7]),
             np.array([1, 2, 3]), {"v": np.array([9, 8, 7])})  # fmt: skip
    s.insert(s.index_of(["a"], create=True), np.array([6]), np.array([2]), {"v": np.array([8])})
    names, rows = s.take_change_rows()
    assert sorted(zip([names[k] for k in rows[:, 0]], rows[:, 1].tolist(), strict=True)) == [
        ("a", 6), ("b", 5), ("b", 7)]  # fmt: skip
    assert "unused" not in names and s.take_change_rows()[0] == []


def test_times_near_the_int64_limits_are_refused_never_wrapped() -> None:
    """Found by the fuzz soak (a restored changelog with a time of -9.22e18): subtracting the
    range's base first overflowed (OverflowError) or wrapped around into the range."""
    from finscore.features.exceptions import FeatureStateError

    s = TimeStore(("amount",))
    now = 1_700_000_000_000
    s.insert(s.index_of(["a"], True), np.array([now]), np.array([0]), {"amount": np.array([1])})
    extreme = np.array([-9_223_372_034_732_337_131, 9_223_372_036_854_775_000, now], np.int64)
    assert s.accepts(extreme).tolist() == [False, False, True]
    with pytest.raises(FeatureStateError):
        s.composite(np.zeros(1, np.int64), extreme[:1])
    fresh = TimeStore(("amount",))
    with pytest.raises(FeatureStateError):
        fresh.composite(np.zeros(1, np.int64), extreme[:1])

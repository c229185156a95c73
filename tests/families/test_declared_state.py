"""The declared engine's state protocol (FraudFeatures' for part "all" under all_outcomes):
the windows over the topic's key go out as append-only changelog records (take_changes) and
come back into a fresh engine (add_changes) with the very features an uninterrupted engine
gives next; the label stores are rebuilt from the labels, as a worker's catch-up does. The
declared fraud family's records are the hand-coded engine's (either reads the other's), and
its reused-id check is FraudFeatures'. Windows over another key are not in the changelog."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from finscore.families import DeclaredFeatures, builtin_family
from finscore.features.fraud import FraudFeatures
from finscore.sim.transactions import TxSimConfig, simulate_frame
from tests.families.test_declared_family import (
    chargebacks,
    folder,  # noqa: F401  (fixture)
    payments,
)
from tests.families.test_declared_family import spec as payments_spec  # noqa: F401  (fixture)
from tests.families.test_fraud_handbook import DELAY, label_columns, tx_columns

PARTS = 3


def partition_of(keys: list[str]) -> dict[str, int]:
    return {k: zlib.crc32(k.encode()) % PARTS for k in keys}


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(TxSimConfig(n_customers=200, n_terminals=300, days=50, seed=31))


@pytest.fixture(scope="module")
def fraud_spec():  # noqa: ANN201
    return builtin_family("fraud_declared")


def _split(frame, fraction: float = 0.6) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    n = len(frame)
    cut = int(n * fraction)
    return np.arange(cut), np.arange(cut, n)


def _known(frame, before_ms: int) -> int:  # noqa: ANN001
    """How many rows (a prefix: the frame is in event-time order) have a label known before
    ``before_ms`` (DELAY after their event)."""
    return int(np.searchsorted(frame.event_time, before_ms - DELAY, "left"))


def _feed(engine, frame, rows: np.ndarray, batch: int, flushes: list | None = None) -> np.ndarray:  # noqa: ANN001
    """Transform ``rows`` in batches, the labels known by each batch applied first (each
    once: ``engine.applied`` counts those applied); ``flushes``: take_changes after each."""
    out = []
    for a in range(0, len(rows), batch):
        part = rows[a : a + batch]
        known = _known(frame, int(frame.event_time[part[0]]))
        if known > engine.applied:
            engine.apply_label_columns(label_columns(frame, np.arange(engine.applied, known)))
            engine.applied = known
        cols = tx_columns(frame, part)
        out.append(engine.transform_columns(cols))
        if flushes is not None:
            flushes += engine.take_changes(partition_of(cols["customer_id"]))
        engine.evict()
    return np.concatenate(out)


def _engine(spec) -> DeclaredFeatures:  # noqa: ANN001
    engine = DeclaredFeatures(spec)
    engine.applied = 0  # type: ignore[attr-defined]
    return engine


def _rebuilt(spec, frame, records: list, upto_ms: int) -> DeclaredFeatures:  # noqa: ANN001
    """A fresh engine: the changelog records, then every label known by ``upto_ms``."""
    fresh = _engine(spec)
    fresh.add_changes([(f"p{p}", r) for p, r in records])
    fresh.applied = _known(frame, upto_ms)  # type: ignore[attr-defined]
    fresh.apply_label_columns(label_columns(frame, np.arange(fresh.applied)))
    return fresh


def test_take_changes_into_a_fresh_engine_gives_the_uninterrupted_features(
    frame, fraud_spec
) -> None:  # noqa: ANN001
    first, rest = _split(frame)
    whole = _engine(fraud_spec)
    records: list = []
    _feed(whole, frame, first, 700, records)
    assert records and {p for p, _ in records} <= set(range(PARTS))
    fresh = _rebuilt(fraud_spec, frame, records, int(frame.event_time[rest[0]]))
    # the label state was rebuilt through the same labels; the window state from the records
    assert fresh.held()["window:customer_id"] == whole.held()["window:customer_id"]
    assert fresh.watermark_ms() == whole.watermark_ms() and fresh.latest_ms == whole.latest_ms
    np.testing.assert_array_equal(_feed(fresh, frame, rest, 700), _feed(whole, frame, rest, 700))


def test_the_records_are_the_hand_coded_engines_both_ways(frame, fraud_spec) -> None:  # noqa: ANN001
    """A fraud worker switching engines restores from the other's changelog."""
    first, rest = _split(frame, 0.5)
    hand, declared = FraudFeatures(), DeclaredFeatures(fraud_spec)
    hand_records: list = []
    declared_records: list = []
    for a in range(0, len(first), 900):
        cols = tx_columns(frame, first[a : a + 900])
        hand.transform_columns(cols["transaction_id"], cols["event_time"], cols["customer_id"],
                               cols["terminal_id"], cols["amount"])  # fmt: skip
        declared.transform_columns(cols)
        by = partition_of(cols["customer_id"])
        hand_records += hand.take_changes(by)
        declared_records += declared.take_changes(by)
    assert hand_records == declared_records  # byte for byte
    back = FraudFeatures()
    back.add_changes([(f"p{p}", r) for p, r in declared_records])
    assert back.held()["customers"] == declared.held()["window:customer_id"]
    customers = sorted(set(tx_columns(frame, first)["customer_id"]))[:20]
    assert back.snapshot_customers(customers) == declared.snapshot_keys(customers)


def test_a_custom_family_restores_its_topic_key_windows_only(payments_spec) -> None:  # noqa: ANN001, F811
    """Windows over the topic's key (``account``) restore exactly; those over ``merchant``
    are not in the changelog: after a restart they hold only the events read since."""
    spec = payments_spec
    p = payments(3000, days=14, seed=4)
    labels = chargebacks(p)
    cut = 1800
    rows = {c: v[:cut] if isinstance(v, np.ndarray) else v[:cut] for c, v in p.items()}
    later = {c: v[cut:] if isinstance(v, np.ndarray) else v[cut:] for c, v in p.items()}
    whole = DeclaredFeatures(spec)
    whole.apply_label_columns(labels)
    records: list = []
    for a in range(0, cut, 400):
        part = {c: v[a : min(cut, a + 400)] for c, v in rows.items()}
        whole.transform_columns(part)
        records += whole.take_changes(partition_of(part["account"]))
    fresh = DeclaredFeatures(spec)
    fresh.add_changes([(f"p{q}", r) for q, r in records])
    fresh.apply_label_columns(labels)
    assert sorted(fresh.keys()) == sorted(whole.keys())
    assert "window:merchant" in whole.held() and fresh.held()["window:merchant"] == 0
    want, got = whole.transform_columns(later), fresh.transform_columns(later)
    names = spec.feature_names
    merchant = [j for j, n in enumerate(names) if n.startswith("MERCHANT_") and "_CB_" not in n]
    others = [j for j in range(len(names)) if j not in merchant]
    np.testing.assert_array_equal(got[:, others], want[:, others])
    alone = DeclaredFeatures(spec)
    alone.apply_label_columns(labels)
    np.testing.assert_array_equal(got[:, merchant], alone.transform_columns(later)[:, merchant])


def test_forget_changes_drops_the_revoked_keys_records(payments_spec) -> None:  # noqa: ANN001, F811
    p = payments(500, seed=2)
    engine = DeclaredFeatures(payments_spec)
    engine.transform_columns(p)
    gone = sorted(set(p["account"]))[:5]
    engine.forget_changes(gone)
    from finscore.features.timestore import record_keys

    kept = {k for _, r in engine.take_changes(partition_of(p["account"])) for k in record_keys(r)}
    assert kept == set(p["account"]) - set(gone)
    assert engine.take_changes(partition_of(p["account"])) == []  # taken once


def test_snapshot_and_restore_copy_a_keys_windows(payments_spec) -> None:  # noqa: ANN001, F811
    p = payments(800, seed=3)
    a = DeclaredFeatures(payments_spec)
    a.transform_columns(p)
    keys = a.keys()
    b = DeclaredFeatures(payments_spec)
    b.restore_keys(dict(zip(keys, a.snapshot_keys(keys), strict=True)))
    assert sorted(b.keys()) == sorted(keys) and b.snapshot_keys(keys[:1]) == a.snapshot_keys(
        keys[:1]
    )
    assert b.latest_ms == a.latest_ms
    assert b.oldest()["window:account"] == a.oldest()["window:account"]


def test_reused_ids_are_the_hand_coded_conflicts(frame, fraud_spec) -> None:  # noqa: ANN001
    rows = np.arange(2000)
    cols = tx_columns(frame, rows)
    hand, declared = FraudFeatures(), DeclaredFeatures(fraud_spec)
    hand.transform_columns(cols["transaction_id"], cols["event_time"], cols["customer_id"],
                           cols["terminal_id"], cols["amount"])  # fmt: skip
    declared.transform_columns(cols)
    ids = cols["transaction_id"]
    t, cents, cust = cols["event_time"], cols["amount"], cols["customer_id"]
    probe = {
        # a replay; another time; another amount; another customer (not held for it);
        # a fresh id twice with other contents in one batch; a fresh id twice alike
        "transaction_id": [ids[5], ids[6], ids[7], ids[8], "new-1", "new-1", "new-2", "new-2"],
        "event_time": np.array([t[5], t[6] + 1, t[7], t[8], t[9], t[9] + 5, t[9], t[9]]),
        "customer_id": [cust[5], cust[6], cust[7], cust[9] + "x", cust[9], cust[9], cust[9],
                        cust[9]],
        "terminal_id": ["T"] * 8,
        "amount": np.array([cents[5], cents[6], cents[7] + 1, cents[8], 100, 100, 100, 100]),
    }  # fmt: skip
    want = hand.find_conflicts(probe["transaction_id"], probe["event_time"],
                               probe["customer_id"], probe["amount"])  # fmt: skip
    got = declared.find_conflicts(probe)
    assert got.tolist() == want.tolist()
    assert got.tolist() == [False, True, True, False, False, True, False, False]


def test_a_counts_only_family_checks_reused_ids_by_time(payments_spec, folder) -> None:  # noqa: ANN001, F811
    tables = payments_spec.to_dict()
    tables["features"] = [f for f in tables["features"]
                          if not (f["kind"] == "window" and f["key"] == "account"
                                  and f.get("stat") != "count")]  # fmt: skip
    from finscore.families import FamilySpec

    spec = FamilySpec.from_dict(tables, folder)
    p = payments(200, seed=5)
    engine = DeclaredFeatures(spec)
    engine.transform_columns(p)
    again = {c: v[-2:] for c, v in p.items()}  # recent: within the windows (held)
    assert engine.find_conflicts(again).tolist() == [False, False]
    again["ts"] = again["ts"] + 1
    assert engine.find_conflicts(again).tolist() == [True, True]
    records = engine.take_changes(partition_of(p["account"]))
    fresh = DeclaredFeatures(spec)
    fresh.add_changes([(f"p{q}", r) for q, r in records])
    assert fresh.find_conflicts(again).tolist() == [True, True]


def test_time_ranges_and_memory_names(fraud_spec) -> None:  # noqa: ANN001
    engine = DeclaredFeatures(fraud_spec, time_origin_ms=0)
    t = np.array([0, 1 << 40, -5, 1 << 62], dtype=np.int64)
    assert engine.accepts_times(t).tolist() == [True, True, False, False]
    assert engine.accepts_label_times(t).tolist() == [True, True, False, False]
    assert set(engine.held()) == set(engine.oldest()) == {
        "window:customer_id", "label_risk:terminal_id", "label_risk:customer_id"}  # fmt: skip
    assert engine.oldest()["window:customer_id"] is None

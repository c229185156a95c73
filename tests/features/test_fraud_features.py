"""The shared fraud features: checked against a slow brute-force reference written here, and
offline (training) == online (worker, in batches of any size) on the same events."""

from __future__ import annotations

import numpy as np
import pytest

from finscore.features.fraud import (
    FRAUD_FEATURE_NAMES,
    FraudFeatureConfig,
    FraudFeatures,
    featurize_frame,
)
from finscore.sim.transactions import DAY_MS, TxSimConfig, merged_events, simulate_frame

CFG = TxSimConfig(n_customers=150, n_terminals=300, days=50, seed=7)
COL = {n: i for i, n in enumerate(FRAUD_FEATURE_NAMES)}


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(CFG)


@pytest.fixture(scope="module")
def offline(frame):  # noqa: ANN001, ANN201
    return featurize_frame(frame)


def brute_force(frame, i: int, delay: int = 7 * DAY_MS) -> dict[str, float]:  # noqa: ANN001
    """The handbook's definitions, computed the slow way for row ``i``."""
    t, c, term, amt = (
        frame.event_time[i],
        frame.customer_id[i],
        frame.terminal_id[i],
        frame.amount[i],
    )
    out = {}
    for w in (1, 7, 30):
        m = (frame.customer_id == c) & (frame.event_time > t - w * DAY_MS) & (frame.event_time <= t)
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = m.sum()
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = frame.amount[m].mean()
        tm = (
            (frame.terminal_id == term)
            & (frame.event_time > t - delay - w * DAY_MS)
            & (frame.event_time <= t - delay)
        )
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = tm.sum()
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = frame.is_fraud[tm].mean() if tm.any() else 0.0
    hour = (t % DAY_MS) // 3_600_000
    out["TX_DURING_NIGHT"] = float(hour <= 6)
    out["TX_DURING_WEEKEND"] = float(((t // DAY_MS) + 3) % 7 >= 5)
    out["TX_AMOUNT"] = amt
    out["CUSTOMER_AMOUNT_RATIO_30DAY"] = amt / out["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]
    return out


def test_every_feature_matches_a_brute_force_reference(frame, offline) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    late = np.flatnonzero(frame.event_time > frame.event_time[0] + 40 * DAY_MS)
    for i in rng.choice(late, size=60, replace=False):
        for name, want in brute_force(frame, i).items():
            assert offline[i, COL[name]] == pytest.approx(want, rel=1e-4, abs=1e-4), (i, name)


def test_online_in_batches_equals_offline(frame, offline) -> None:  # noqa: ANN001
    """The worker's path: the merged stream (labels as they become known) in uneven batches."""
    online = FraudFeatures(FraudFeatureConfig())
    rows: dict[str, np.ndarray] = {}
    batch: list[dict] = []
    sizes = iter(np.random.default_rng(1).integers(1, 700, size=100_000))
    limit = next(sizes)
    for kind, rec in merged_events(frame, 7 * DAY_MS):
        if kind == "label":
            online.apply_labels([rec])
            continue
        batch.append(rec)
        if len(batch) >= limit:
            for r, x in zip(batch, online.transform(batch), strict=True):
                rows[r["transaction_id"]] = x
            batch, limit = [], next(sizes)
    for r, x in zip(batch, online.transform(batch), strict=True):
        rows[r["transaction_id"]] = x
    got = np.stack([rows[str(i)] for i in frame.transaction_id])
    np.testing.assert_allclose(got, offline, rtol=1e-6, atol=1e-6)


def test_replayed_transactions_and_labels_are_not_counted_twice(frame) -> None:  # noqa: ANN001
    txs = [{"transaction_id": str(i), "event_time": int(frame.event_time[i]), "customer_id": str(frame.customer_id[i]),
            "terminal_id": str(frame.terminal_id[i]), "amount": float(frame.amount[i])} for i in range(3000)]  # fmt: skip
    a, b = FraudFeatures(), FraudFeatures()
    first = a.transform(txs)
    b.transform(txs[:2000])
    b.transform(txs[1500:2000])  # an at-least-once replay
    np.testing.assert_array_equal(b.transform(txs[2000:]), first[2000:])


def test_a_restored_customer_continues_exactly_like_an_uninterrupted_one(frame) -> None:  # noqa: ANN001
    txs = [{"transaction_id": str(i), "event_time": int(frame.event_time[i]), "customer_id": str(frame.customer_id[i]),
            "terminal_id": str(frame.terminal_id[i]), "amount": float(frame.amount[i])} for i in range(4000)]  # fmt: skip
    whole = FraudFeatures().transform(txs)
    before = FraudFeatures()
    before.transform(txs[:2500])
    after = FraudFeatures()
    for cid in before.customers():
        after.restore_customer(cid, before.snapshot_customer(cid))
    np.testing.assert_array_equal(after.transform(txs[2500:]), whole[2500:])


def test_a_label_not_yet_known_does_not_leak() -> None:
    f = FraudFeatures()
    f.apply_labels([{"transaction_id": "a", "customer_id": "c", "terminal_id": "t", "tx_time": 0,
                     "label_time": 20 * DAY_MS, "is_fraud": True}])  # fmt: skip
    tx = {
        "transaction_id": "b",
        "event_time": 8 * DAY_MS,
        "customer_id": "x",
        "terminal_id": "t",
        "amount": 1.0,
    }
    row = f.transform([tx])[0]
    assert row[COL["TERMINAL_ID_NB_TX_7DAY_WINDOW"]] == 0  # known only at day 20
    tx2 = dict(tx, transaction_id="c", event_time=21 * DAY_MS)
    f2 = FraudFeatures()
    f2.apply_labels([{"transaction_id": "a", "customer_id": "c", "terminal_id": "t", "tx_time": 14 * DAY_MS - 5,
                      "label_time": 20 * DAY_MS, "is_fraud": True}])  # fmt: skip
    row2 = f2.transform([tx2])[0]
    assert (
        row2[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 1
        and row2[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 1.0
    )

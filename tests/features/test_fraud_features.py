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


def _habit_fraud(frame, j: int) -> bool:  # noqa: ANN001
    """Row ``j`` is a fraud below 2.5x its card's mean amount over the 30 days up to it."""
    card = (
        (frame.customer_id == frame.customer_id[j])
        & (frame.event_time > frame.event_time[j] - 30 * DAY_MS)
        & (frame.event_time <= frame.event_time[j])
    )
    return bool(frame.is_fraud[j]) and frame.amount[j] < 2.5 * frame.amount[card].mean()


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
        habit = [_habit_fraud(frame, j) for j in np.flatnonzero(tm)]
        out[f"TERMINAL_ID_HABIT_RISK_{w}DAY_WINDOW"] = sum(habit) / tm.sum() if tm.any() else 0.0
    # the 30-day window's outcomes newer than its latest one that is not a habit fraud
    window = np.flatnonzero(tm)
    other = [frame.event_time[j] for j in window if not _habit_fraud(frame, j)]
    last = max(other, default=t - delay - 30 * DAY_MS)
    out["TERMINAL_ID_HABIT_FRAUD_STREAK"] = np.log1p((frame.event_time[window] > last).sum())
    hour = (t % DAY_MS) // 3_600_000
    out["TX_DURING_NIGHT"] = float(hour <= 6)
    out["TX_DURING_WEEKEND"] = float(((t // DAY_MS) + 3) % 7 >= 5)
    out["TX_AMOUNT"] = amt
    out["CUSTOMER_AMOUNT_RATIO_30DAY"] = amt / out["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]
    return out


def test_every_feature_matches_a_brute_force_reference(frame, offline) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    late = np.flatnonzero(frame.event_time > frame.event_time[0] + 40 * DAY_MS)
    streaks = np.flatnonzero(offline[:, COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]] > 0)
    rows = [*rng.choice(late, size=60, replace=False), *rng.choice(streaks, size=20, replace=False)]
    for i in rows:
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
                     "label_time": 20 * DAY_MS, "is_fraud": True, "amount": 1.0}])  # fmt: skip
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
                      "label_time": 20 * DAY_MS, "is_fraud": True, "amount": 1.0}])  # fmt: skip
    row2 = f2.transform([tx2])[0]
    assert (
        row2[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 1
        and row2[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 1.0
    )


def _tx(i: str, t: int, amount: float, customer: str = "c", terminal: str = "t") -> dict:
    return {"transaction_id": i, "event_time": t, "customer_id": customer,
            "terminal_id": terminal, "amount": amount}  # fmt: skip


def _label(
    i: str, t: int, fraud: bool, label_time: int, terminal: str = "t", *,
    customer: str = "other", amount: float = 1.0,
) -> dict:  # fmt: skip
    return {"transaction_id": i, "customer_id": customer, "terminal_id": terminal, "tx_time": t,
            "label_time": label_time, "is_fraud": fraud, "amount": amount}  # fmt: skip


def test_hand_computed_time_flags_and_customer_windows() -> None:
    # 2018-04-07 was a Saturday; 2018-04-09 a Monday. Hours are UTC; night is hour <= 6.
    sat = 1523059200000  # 2018-04-07T00:00Z
    h = 3_600_000
    f = FraudFeatures()
    rows = f.transform([
        _tx("a", sat + 6 * h + 59 * 60_000, 10.0),   # Sat 06:59: weekend, night
        _tx("b", sat + 20 * h, 30.0),                # Sat 20:00: weekend, day
        _tx("c", sat + 2 * DAY_MS + 7 * h, 50.0),    # Mon 07:00: weekday, day
        _tx("d", sat + 9 * DAY_MS + 7 * h, 90.0),    # 7 days after "c": "c" is out of 7 days
    ])  # fmt: skip
    col = lambda name: rows[:, COL[name]].tolist()  # noqa: E731
    assert col("TX_DURING_WEEKEND") == [1, 1, 0, 0]
    assert col("TX_DURING_NIGHT") == [1, 0, 0, 0]
    assert col("TX_AMOUNT") == [10, 30, 50, 90]
    assert col("CUSTOMER_ID_NB_TX_1DAY_WINDOW") == [1, 2, 1, 1]
    assert col("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW") == [10, 20, 50, 90]
    assert col("CUSTOMER_ID_NB_TX_7DAY_WINDOW") == [1, 2, 3, 1]  # window is (t - 7d, t]
    assert col("CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW") == pytest.approx([10, 20, 30, 90])
    assert col("CUSTOMER_ID_NB_TX_30DAY_WINDOW") == [1, 2, 3, 4]
    assert col("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW") == pytest.approx([10, 20, 30, 45])
    assert col("CUSTOMER_AMOUNT_RATIO_30DAY") == pytest.approx([1, 1.5, 50 / 30, 2])
    # z-score against the population std of the 30-day amounts (10, 30, 50, 90): std = 29.58
    assert rows[3, COL["CUSTOMER_AMOUNT_ZSCORE_30DAY"]] == pytest.approx(
        45 / np.std([10, 30, 50, 90])
    )
    assert rows[0, COL["CUSTOMER_AMOUNT_ZSCORE_30DAY"]] == 0  # one amount: no spread


def test_hand_computed_terminal_risk_with_known_and_unknown_labels() -> None:
    """Windows (t − 7d − w, t − 7d]; a label counts only once its label time has passed."""
    now = 40 * DAY_MS
    end = now - 7 * DAY_MS
    f = FraudFeatures()
    f.apply_labels([
        _label("1", end - 1000, True, end),                  # 1-day window, known
        _label("2", end - 2 * DAY_MS, False, end),           # 7-day window, known
        _label("3", end - 3 * DAY_MS, True, now + 1),        # 7-day window, NOT known yet
        _label("4", end - 10 * DAY_MS, True, end),           # 30-day window, known
        _label("5", end - 20 * DAY_MS, False, end),          # 30-day window, known
        _label("6", end - 31 * DAY_MS, True, end),           # outside every window
        _label("7", end + 1, True, end),                     # too recent: after t − delay
        _label("8", end - 5 * DAY_MS, False, end, "other"),  # another terminal
    ])  # fmt: skip
    row = f.transform([_tx("x", now, 5.0)])[0]
    got = [
        row[COL[f"TERMINAL_ID_{k}_{w}DAY_WINDOW"]] for w in (1, 7, 30) for k in ("NB_TX", "RISK")
    ]
    assert got == pytest.approx([1, 1.0, 2, 0.5, 4, 0.5])
    f.apply_labels([_label("3", end - 3 * DAY_MS, True, now + 1)])  # replay: still once
    later = f.transform([_tx("y", now + 1, 5.0)])[0]  # label 3 known now; windows moved by 1 ms
    got = [
        later[COL[f"TERMINAL_ID_{k}_{w}DAY_WINDOW"]] for w in (1, 7, 30) for k in ("NB_TX", "RISK")
    ]
    assert got == pytest.approx([2, 1.0, 4, 3 / 4, 6, 4 / 6])  # "7" (end + 1) entered too


def test_terminal_habit_risk_counts_only_frauds_within_the_cards_habit() -> None:
    """A fraud far above its card's 30-day mean is the card's doing (not the terminal's)."""
    now = 40 * DAY_MS
    end = now - 7 * DAY_MS
    f = FraudFeatures()
    f.apply_labels([
        # card "a": habit 10.00; its fraud of 12.00 is within 2.5x its mean (11.00) -> counts
        _label("a1", end - 5 * DAY_MS, False, end, "elsewhere", customer="a", amount=10.0),
        _label("a2", end - 1000, True, end, customer="a", amount=12.0),
        # card "b": habit 10.00; its fraud of 200.00 is far above its 30-day mean, the fraud
        # included ((4 * 10 + 200) / 5 = 48; 200 > 2.5 * 48) -> does not count
        *(_label(f"b{k}", end - (9 + k) * DAY_MS, False, end, "elsewhere", customer="b",
                 amount=10.0) for k in range(4)),  # fmt: skip
        _label("b9", end - 3 * DAY_MS, True, end, customer="b", amount=200.0),
        # a first-seen card's fraud is its own whole habit (ratio 1) -> counts
        _label("c1", end - 20 * DAY_MS, True, end, customer="c", amount=50.0),
        _label("d1", end - 2 * DAY_MS, False, end, customer="d", amount=20.0),
    ])  # fmt: skip
    row = f.transform([_tx("x", now, 5.0)])[0]
    # 1-day window: a2 (habit fraud) -> 1/1; 7-day: a2, b9, d1 -> 1/3; 30-day: + c1 -> 2/4
    got = [row[COL[f"TERMINAL_ID_HABIT_RISK_{w}DAY_WINDOW"]] for w in (1, 7, 30)]
    assert got == pytest.approx([1.0, 1 / 3, 2 / 4])
    plain = [row[COL[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"]] for w in (1, 7, 30)]
    assert plain == pytest.approx([1.0, 2 / 3, 3 / 4])
    # in time order c1 (habit fraud), b9 (not), d1 (genuine), a2 (habit fraud): a run of 1
    assert row[COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]] == pytest.approx(np.log1p(1))


def test_habit_fraud_streak_counts_the_terminals_newest_known_frauds_in_a_row() -> None:
    """Outcomes newer than the latest known one that is not a habit fraud, in the 30-day
    delayed window; a label not known yet neither counts nor breaks the run."""
    now = 40 * DAY_MS
    end = now - 7 * DAY_MS
    streak = COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]
    f = FraudFeatures()
    f.apply_labels([
        _label("g1", end - 10 * DAY_MS, False, end),
        *(_label(f"f{k}", end - k * DAY_MS, True, end, customer=f"c{k}") for k in (6, 5, 3, 1)),
        _label("late", end - 2 * DAY_MS, False, now + 1),     # genuine, known only after now
        _label("old", end - 31 * DAY_MS, True, end, "u"),     # outside the window
        *(_label(f"u{k}", end - k * DAY_MS, True, end, "u", customer=f"d{k}") for k in (9, 8)),
        _label("tie-g", end - DAY_MS, False, end, "v"),       # same time as a fraud: no run
        _label("tie-f", end - DAY_MS, True, end, "v", customer="e"),
    ])  # fmt: skip
    rows = f.transform([_tx("x", now, 5.0), _tx("y", now, 5.0, terminal="u"),
                        _tx("z", now, 5.0, terminal="v"), _tx("w", now, 5.0, terminal="new")])  # fmt: skip
    assert np.expm1(rows[:, streak]).round(6).tolist() == [4, 2, 0, 0]
    later = f.transform([_tx("x2", now + 1, 5.0)])[0]  # the late genuine label is known now
    assert np.expm1(later[streak]) == pytest.approx(1)  # only f1 is newer than it


def test_card_history_features_count_the_customers_own_delayed_frauds() -> None:
    f = FraudFeatures()
    f.apply_labels([
        {"transaction_id": "1", "customer_id": "c", "terminal_id": "t1", "tx_time": 0,
         "label_time": 7 * DAY_MS, "is_fraud": True, "amount": 1.0},
        {"transaction_id": "2", "customer_id": "c", "terminal_id": "t2", "tx_time": DAY_MS,
         "label_time": 8 * DAY_MS, "is_fraud": False, "amount": 1.0},
    ])  # fmt: skip
    row = f.transform([_tx("x", 9 * DAY_MS, 5.0, terminal="t3")])[0]
    assert row[COL["CUSTOMER_ID_NB_FRAUD_30DAY_WINDOW"]] == 1
    assert row[COL["CUSTOMER_ID_RISK_30DAY_WINDOW"]] == 0.5


def test_evict_bounds_memory_without_changing_features(frame, offline) -> None:  # noqa: ANN001
    """Evicting daily (as featurize_frame and the worker do) keeps only the horizon."""
    f = FraudFeatures()
    delay = 7 * DAY_MS
    rows: dict[str, np.ndarray] = {}
    day_end = int(frame.event_time[0]) // DAY_MS * DAY_MS + DAY_MS
    for kind, rec in merged_events(frame, delay):
        t = rec["label_time"] if kind == "label" else rec["event_time"]
        if t >= day_end:
            f.evict(day_end)
            day_end += DAY_MS
        if kind == "label":
            f.apply_labels([rec])
        else:
            rows[rec["transaction_id"]] = f.transform([rec])[0]
    got = np.stack([rows[str(i)] for i in frame.transaction_id])
    np.testing.assert_array_equal(got, offline)
    oldest = f.oldest()
    assert oldest["customers"] >= f.latest_ms - 32 * DAY_MS
    assert oldest["terminals"] >= f.latest_ms - 39 * DAY_MS
    assert oldest["cards"] >= f.latest_ms - 39 * DAY_MS
    held = f.held()["customers"]
    assert held < len(frame) / 50 * 32  # ~31 of 50 days of transactions, not the whole history

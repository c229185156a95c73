"""The two label contracts give the same features: every settled outcome (``all_outcomes``)
or fraud reports only (``fraud_reports``, as card issuers are fed: an unreported transaction is
genuine once older than the delay). Offline, online in batches, and online as a fleet of
workers that each see only their own customers' transactions and exchange terminal entries."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from finscore.features.exceptions import FeatureStateError
from finscore.features.fraud import (
    FRAUD_FEATURE_NAMES,
    FraudFeatureConfig,
    FraudFeatures,
    featurize_frame,
)
from finscore.features.terminal_entries import ROW_BYTES, decode_entries, encode_entries
from finscore.sim.transactions import DAY_MS, TxSimConfig, merged_events, simulate_frame
from tests.features.test_fraud_features import brute_force

# Card testing (drift) included, so every fraud scenario is in the data.
CFG = TxSimConfig(
    n_customers=200,
    n_terminals=300,
    days=60,
    seed=11,
    drift_day=45,
    card_testing_customers_per_day=5,
)
REPORTS = FraudFeatureConfig(label_contract="fraud_reports")
COL = {n: i for i, n in enumerate(FRAUD_FEATURE_NAMES)}
STREAK = COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(CFG)


@pytest.fixture(scope="module")
def every_outcome(frame):  # noqa: ANN001, ANN201
    return featurize_frame(frame)


def test_fraud_reports_only_give_exactly_the_features_of_every_outcome(
    frame,
    every_outcome,  # noqa: ANN001
) -> None:
    reports = featurize_frame(frame, REPORTS)
    assert (every_outcome[:, STREAK] > 0).sum() > 100  # the run's recount path is exercised
    assert (every_outcome[:, COL["TERMINAL_ID_HABIT_RISK_30DAY_WINDOW"]] > 0).sum() > 100
    np.testing.assert_array_equal(reports, every_outcome)
    # and both are the brute-force definitions (rows after the windows have warmed up)
    rng = np.random.default_rng(3)
    late = np.flatnonzero(frame.event_time > frame.event_time[0] + 40 * DAY_MS)
    streaks = np.flatnonzero(reports[:, STREAK] > 0)
    for i in [*rng.choice(late, 25, replace=False), *rng.choice(streaks, 15, replace=False)]:
        for name, want in brute_force(frame, i).items():
            assert reports[i, COL[name]] == pytest.approx(want, rel=1e-4, abs=1e-4), (i, name)


def _stream(frame, online: list[FraudFeatures], owner, exchange: bool) -> np.ndarray:  # noqa: ANN001
    """Replay the fraud reports and transactions in time order through ``online`` workers
    (``owner(customer) -> worker``; every worker reads every report), in uneven batches; after
    each batch the workers exchange their terminal entries when ``exchange``."""
    rows: dict[str, np.ndarray] = {}
    batches: list[list[dict]] = [[] for _ in online]
    reports: list[dict] = []
    sizes = iter(np.random.default_rng(1).integers(1, 400, size=100_000))
    limit = next(sizes)

    def apply() -> None:
        for w in online:
            w.apply_labels(reports)
        reports.clear()

    def flush() -> None:
        for w, batch in zip(online, batches, strict=True):
            if batch:
                for r, x in zip(batch, w.transform(batch), strict=True):
                    rows[r["transaction_id"]] = x
                batch.clear()
        if exchange:
            records = [[v for _, v in w.take_terminal_entries()] for w in online]
            for k, w in enumerate(online):
                w.add_terminal_entries([v for j, rs in enumerate(records) if j != k for v in rs])

    for kind, rec in merged_events(frame, 7 * DAY_MS, reports_only=True):
        if kind == "label":
            assert rec["is_fraud"]
            flush()  # transactions before the report are scored before it is applied
            reports.append(rec)
            continue
        apply()
        batches[owner(rec["customer_id"])].append(rec)
        if sum(map(len, batches)) >= limit:
            flush()
            limit = next(sizes)
    flush()
    return np.stack([rows[str(i)] for i in frame.transaction_id])


def test_online_fraud_reports_in_batches_equal_the_offline_features(
    frame,
    every_outcome,  # noqa: ANN001
) -> None:
    got = _stream(frame, [FraudFeatures(REPORTS)], lambda c: 0, exchange=False)
    np.testing.assert_allclose(got, every_outcome, rtol=1e-6, atol=1e-6)


def test_a_fleet_partitioned_by_customer_equals_offline_by_exchanging_terminal_entries() -> None:
    """Two workers, each scoring half of the customers: with the terminal entries exchanged
    every interval their features are the offline ones; without, the terminal counts are
    only their own customers' (what the exchange is for)."""
    frame = simulate_frame(TxSimConfig(n_customers=100, n_terminals=150, days=45, seed=5))
    every_outcome = featurize_frame(frame)

    def owner(c: str) -> int:
        return zlib.crc32(c.encode()) % 2

    fleet = [FraudFeatures(REPORTS, share_entries=True) for _ in range(2)]
    got = _stream(frame, fleet, owner, exchange=True)
    np.testing.assert_allclose(got, every_outcome, rtol=1e-6, atol=1e-6)
    assert fleet[0].unmatched_reports == fleet[1].unmatched_reports == 0
    alone = _stream(frame, [FraudFeatures(REPORTS), FraudFeatures(REPORTS)], owner, False)
    n_tx = COL["TERMINAL_ID_NB_TX_30DAY_WINDOW"]
    assert (alone[:, n_tx] < every_outcome[:, n_tx]).mean() > 0.3


def test_a_report_not_known_yet_leaves_its_transaction_a_genuine_outcome() -> None:
    """Under fraud_reports a transaction older than the delay is an outcome whether or not
    its report has come: genuine until the report is known, then a (habit) fraud."""
    now, end = 40 * DAY_MS, 33 * DAY_MS
    f = FraudFeatures(REPORTS)
    f.transform([_tx("a", end - 1000, 10.0, customer="c1"), _tx("b", end - 2000, 10.0)])
    f.apply_labels([_report("a", end - 1000, now + 5, customer="c1")])  # late: known at now+5
    row = f.transform([_tx("x", now, 5.0, customer="z")])[0]
    assert row[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert row[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 0
    assert row[STREAK] == 0
    later = f.transform([_tx("y", now + 5, 5.0, customer="z")])[0]
    assert later[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert later[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 0.5
    assert later[COL["TERMINAL_ID_HABIT_RISK_1DAY_WINDOW"]] == 0.5  # 10.00 is c1's habit
    assert np.expm1(later[STREAK]) == pytest.approx(1)  # a (newest) is a habit fraud
    assert f.unmatched_reports == 0
    f.apply_labels([_report("nobody-scored-it", end - 5000, now, customer="c9")])
    assert f.unmatched_reports == 1  # counted, and no habit flag without its transaction


def _tx(i: str, t: int, amount: float, *, customer: str = "c", terminal: str = "t") -> dict:
    return {"transaction_id": i, "event_time": t, "customer_id": customer,
            "terminal_id": terminal, "amount": amount}  # fmt: skip


def _report(i: str, t: int, label_time: int, *, customer: str, terminal: str = "t") -> dict:
    return {"transaction_id": i, "customer_id": customer, "terminal_id": terminal, "tx_time": t,
            "label_time": label_time, "is_fraud": True, "amount": 10.0}  # fmt: skip


def test_terminal_entries_records_round_trip_and_corrupt_ones_are_refused() -> None:
    names = ["t1", "terminal-é"]
    key = np.array([0, 1, 1])
    times = np.array([1_523_000_000_000, 5, 1 << 40])
    tags = np.array([0, (1 << 32) - 1, 7])
    flags = np.array([1, 0, 1])
    value = encode_entries(names, key, times, tags, flags)
    back = decode_entries(value)
    assert back.names == names
    for got, want in ((back.key, key), (back.times, times), (back.tags, tags),
                      (back.flags, flags)):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    assert len(value) == 40 + 3 * ROW_BYTES  # 12 + 4 * 2 + 13 bytes of names, padded to 40
    assert len(decode_entries(encode_entries([], key[:0], times[:0], tags[:0], flags[:0]))) == 0
    for bad in (
        value[:-1],
        b"FSM1" + value[4:],
        value[:-1] + b"\x02",
        value[: -ROW_BYTES * 3] + b"\xff" * ROW_BYTES * 3,
    ):
        with pytest.raises(FeatureStateError):
            decode_entries(bad)
    with pytest.raises(ValueError):
        encode_entries(names, key, times, tags + (1 << 32), flags)


def test_entries_are_reported_once_and_replays_are_harmless() -> None:
    a, b = FraudFeatures(REPORTS, share_entries=True), FraudFeatures(REPORTS, share_entries=True)
    a.transform([_tx("1", DAY_MS, 3.0), _tx("2", 2 * DAY_MS, 4.0, terminal="u")])
    records = a.take_terminal_entries(lambda name: 0 if name == "t" else 1)
    assert sorted(g for g, _ in records) == [0, 1]
    assert a.take_terminal_entries() == []  # reported once
    for _ in range(2):  # a replay adds nothing
        b.add_terminal_entries([v for _, v in records])
    assert b.held()["terminal_transactions"] == 2
    assert b.take_terminal_entries() == []  # received entries are not re-published
    assert FraudFeatures().take_terminal_entries() == []  # all_outcomes: nothing to exchange
    alone = FraudFeatures(REPORTS)  # not in a fleet: nothing remembered for the exchange
    alone.transform([_tx("1", DAY_MS, 3.0)])
    assert alone.take_terminal_entries() == []


def test_an_unknown_label_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="label_contract"):
        FraudFeatureConfig(label_contract="chargebacks")


def test_the_label_contract_setting_reaches_the_fraud_workers_features(monkeypatch) -> None:  # noqa: ANN001
    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings
    from finscore.streams.fraud.stream import FraudStream
    from finscore.streams.hot_swap import ModelSlot as Slot
    from finscore.streams.worker import WorkerConfig

    monkeypatch.setenv("FINSCORE_LABEL_CONTRACT", "fraud_reports")
    assert Settings(_env_file=None).label_contract == "fraud_reports"
    monkeypatch.setenv("FINSCORE_LABEL_CONTRACT", "chargebacks")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
    monkeypatch.delenv("FINSCORE_LABEL_CONTRACT")
    edge = worker_config(Settings(_env_file=None, label_contract="fraud_reports"), "fraud")
    assert edge.label_contract == "fraud_reports"
    assert worker_config(Settings(_env_file=None), "fraud").label_contract == "all_outcomes"
    for contract, reports_only in (("fraud_reports", True), ("all_outcomes", False)):
        cfg = WorkerConfig("fraud", {}, label_contract=contract)
        assert FraudStream(cfg, Slot()).features.cfg.reports_only is reports_only

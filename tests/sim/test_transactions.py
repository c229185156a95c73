"""The transaction simulator follows the handbook's design, deterministically."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from finscore.sim.data import data_dir
from finscore.sim.transactions import DAY_MS, TransactionSimulator, TxSimConfig, simulate_frame

SMALL = TxSimConfig(n_customers=800, n_terminals=1600, days=60, seed=4)


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(SMALL)


def test_same_seed_same_events_other_seed_other_events(frame) -> None:  # noqa: ANN001
    again = simulate_frame(SMALL)
    other = simulate_frame(TxSimConfig(n_customers=800, n_terminals=1600, days=60, seed=5))
    assert np.array_equal(frame.amount, again.amount) and np.array_equal(
        frame.is_fraud, again.is_fraud
    )
    assert len(other) != len(frame) or not np.array_equal(other.amount, frame.amount)


def test_time_ordered_and_shaped_like_the_handbook() -> None:
    frame = simulate_frame(TxSimConfig(seed=4))  # the handbook's scale: 5,000 × 10,000 × 183 d
    assert np.all(np.diff(frame.event_time) >= 0)
    per_day = len(frame) / 183 / 5000
    assert 1.5 < per_day < 2.5  # U(0, 4) transactions a day on average
    assert 0.004 < frame.is_fraud.mean() < 0.02  # handbook: 0.84 %
    assert set(np.unique(frame.scenario[frame.is_fraud == 1])) == {1, 2, 3}
    assert np.all(frame.amount[frame.scenario == 1] > 220)
    assert np.all(frame.is_fraud[frame.amount > 220] == 1)


def test_every_transaction_gets_its_label_exactly_one_delay_later() -> None:
    sim = TransactionSimulator(TxSimConfig(n_customers=200, n_terminals=400, days=12, seed=1))
    events = list(sim.events())
    txs = {r["transaction_id"]: r for k, r in events if k == "transaction"}
    labels = [r for k, r in events if k == "label"]
    assert len(labels) == len(txs)
    for lab in labels:
        assert lab["label_time"] - txs[lab["transaction_id"]]["event_time"] == 7 * DAY_MS
    times = [r["label_time"] if k == "label" else r["event_time"] for k, r in events]
    assert times == sorted(times)  # one merged stream in time order


def test_drift_adds_a_new_pattern_only_after_the_drift_day() -> None:
    cfg = TxSimConfig(n_customers=500, n_terminals=1000, days=30, drift_day=20, seed=2)
    f = simulate_frame(cfg)
    day = (f.event_time - cfg.start_ms) // DAY_MS
    new = f.scenario == 4
    assert new.any() and day[new].min() >= 20
    hour = (f.event_time[new] % DAY_MS) // 3_600_000
    assert np.all(hour < 6) and np.all(f.amount[new] <= 5)


def test_records_follow_the_avro_contract() -> None:
    from finscore.schemas.codec import Codec

    sim = TransactionSimulator(TxSimConfig(n_customers=100, n_terminals=200, days=10, seed=0))
    codecs = {"transaction": Codec("transaction"), "label": Codec("fraud_label")}
    for kind, rec in itertools.islice(sim.events(), 500):
        assert codecs[kind].decode(codecs[kind].encode(rec)) == rec


@pytest.mark.skipif(not (data_dir() / "fraud_handbook_sim").exists(), reason="handbook data absent")
def test_the_handbook_dataset_loads_with_its_published_counts() -> None:
    from finscore.sim.handbook import load_handbook_frame

    f = load_handbook_frame()
    assert len(f) == 1_754_155 and int(f.is_fraud.sum()) == 14_681

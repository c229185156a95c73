"""The whole fraud row, declared (``fraud_declared.toml``): DeclaredFeatures gives exactly the
hand-coded FraudFeatures' 23 columns, offline (:func:`featurize` against
:func:`featurize_frame`) and online in batches of several sizes (labels as they become known,
the state evicted after each batch), on simulated frames with every fraud scenario. And the
habit filter and the streak, on hand-made labels: what they mean beyond fraud."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from finscore.families import (
    DeclaredFeatures,
    FamilySpec,
    FamilySpecError,
    builtin_family,
    featurize,
    load_family,
)
from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures, featurize_frame
from finscore.sim.data import data_dir
from finscore.sim.transactions import DAY_MS, TxSimConfig, simulate_frame
from tests.families.test_fraud_handbook import _merged, label_columns, tx_columns

HABIT = ("TERMINAL_ID_HABIT_RISK_1DAY_WINDOW", "TERMINAL_ID_HABIT_RISK_7DAY_WINDOW",
         "TERMINAL_ID_HABIT_RISK_30DAY_WINDOW", "TERMINAL_ID_HABIT_FRAUD_STREAK")  # fmt: skip


@pytest.fixture(scope="module", params=[(21, None), (22, 30)], ids=["seed21", "seed22-drift"])
def frame(request):  # noqa: ANN001, ANN201
    """Frauds of every scenario: large amounts, compromised terminals, compromised cards and
    (from day 30 of the second frame) card testing."""
    seed, drift = request.param
    fr = simulate_frame(TxSimConfig(n_customers=300, n_terminals=400, days=60, seed=seed,
                                    drift_day=drift))  # fmt: skip
    scenarios = set(np.unique(fr.scenario[fr.is_fraud.astype(bool)]).tolist())
    assert scenarios == ({1, 2, 3} if drift is None else {1, 2, 3, 4})
    return fr


@pytest.fixture(scope="module")
def hand_coded(frame):  # noqa: ANN001, ANN201
    return featurize_frame(frame)


@pytest.fixture(scope="module")
def spec() -> FamilySpec:
    return builtin_family("fraud_declared")


def test_the_declaration_names_every_fraud_feature_in_order(spec, tmp_path) -> None:  # noqa: ANN001
    assert spec.feature_names == FRAUD_FEATURE_NAMES
    assert spec.label_fields == ("transaction_id", "tx_time", "label_time", "is_fraud",
                                 "terminal_id", "customer_id", "amount")  # fmt: skip
    assert FamilySpec.from_dict(spec.to_dict()) == spec
    (tmp_path / "again.toml").write_text(spec.to_toml())
    assert load_family(tmp_path / "again.toml") == spec
    streak = spec.features[-1]
    assert (streak.stat, streak.positives, streak.habit_key, streak.habit_field,
            streak.habit_days, streak.habit_ratio) == ("streak", "habit", "customer_id",
                                                       "amount", 30, 2.5)  # fmt: skip
    # positives = "all" is the default, left out of the canonical TOML
    assert "positives" not in builtin_family("fraud_handbook").to_toml()


def test_offline_rows_are_the_hand_coded_ones_bit_for_bit(frame, hand_coded, spec) -> None:  # noqa: ANN001
    got = featurize(spec, tx_columns(frame), label_columns(frame))
    assert got.dtype == np.float32 and got.shape == (len(frame), len(FRAUD_FEATURE_NAMES))
    np.testing.assert_array_equal(got, hand_coded)
    habit = [FRAUD_FEATURE_NAMES.index(n) for n in HABIT]
    assert (got[:, habit] > 0).any(axis=0).all()  # every habit column is exercised
    # the habit filter leaves out some frauds the plain risk counts
    assert (got[:, 14] > got[:, 21]).any()


def test_offline_features_from_training_forms(frame, hand_coded, spec) -> None:  # noqa: ANN001
    """Integer ids and float amounts in units (a training frame's forms)."""
    cols = {"transaction_id": frame.transaction_id, "event_time": frame.event_time,
            "customer_id": frame.customer_id, "terminal_id": frame.terminal_id,
            "amount": frame.amount}  # fmt: skip
    labels = {"transaction_id": frame.transaction_id, "tx_time": frame.event_time,
              "label_time": frame.event_time + spec.label.delay_ms, "is_fraud": frame.is_fraud,
              "terminal_id": frame.terminal_id, "customer_id": frame.customer_id,
              "amount": frame.amount}  # fmt: skip
    np.testing.assert_array_equal(featurize(spec, cols, labels), hand_coded)


def _hand_labels(hand: FraudFeatures, lc: dict) -> None:
    hand.apply_label_columns(lc["transaction_id"], lc["customer_id"], lc["terminal_id"],
                             lc["tx_time"], lc["label_time"], lc["is_fraud"],
                             lc["amount"])  # fmt: skip


def _hand_rows(hand: FraudFeatures, tc: dict) -> np.ndarray:
    return hand.transform_columns(tc["transaction_id"], tc["event_time"], tc["customer_id"],
                                  tc["terminal_id"], tc["amount"])  # fmt: skip


@pytest.mark.parametrize("sizes", [(5000,), (997,), (1, 40, 3000, 17, 800)])
def test_online_batches_give_the_hand_coded_rows(frame, hand_coded, spec, sizes) -> None:  # noqa: ANN001
    is_label, row = _merged(frame)
    declared, hand = DeclaredFeatures(spec), FraudFeatures()
    got = np.full((len(frame), len(FRAUD_FEATURE_NAMES)), np.nan, dtype=np.float32)
    cut, k = 0, 0
    while cut < len(row):
        end = min(cut + sizes[k % len(sizes)], len(row))
        k += 1
        labs = row[cut:end][is_label[cut:end]]
        txs = row[cut:end][~is_label[cut:end]]
        cut = end
        if len(labs):
            lc = label_columns(frame, labs)
            declared.apply_label_columns(lc)
            _hand_labels(hand, lc)
        if len(txs):
            tc = tx_columns(frame, txs)
            got[txs] = declared.transform_columns(tc)
            want = _hand_rows(hand, tc)
            np.testing.assert_array_equal(got[txs], want)
        declared.evict()
        hand.evict()
    np.testing.assert_array_equal(got, hand_coded)


def test_late_and_replayed_labels_give_the_hand_coded_rows(frame, spec) -> None:  # noqa: ANN001
    """Labels arriving later than the delay (some by weeks), out of order and replayed: the
    late ones are recounted (the streak's run included) exactly as FraudFeatures does. The
    first 45 days (each late label costs both engines a recount per row that sees it)."""
    frame = frame.select(frame.event_time < frame.event_time[0] + 45 * DAY_MS)
    rng = np.random.default_rng(5)
    n = len(frame)
    extra = np.where(rng.random(n) < 0.03, rng.integers(1, 20 * DAY_MS, n), 0)
    label_t = frame.event_time + spec.label.delay_ms + extra
    when = np.r_[label_t, frame.event_time]
    is_label = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    order = np.lexsort((~is_label, when))
    is_label, row = is_label[order], np.r_[np.arange(n), np.arange(n)][order]
    declared, hand = DeclaredFeatures(spec), FraudFeatures()
    streak_rows = 0
    for cut in range(0, len(row), 700):
        labs = row[cut : cut + 700][is_label[cut : cut + 700]]
        txs = row[cut : cut + 700][~is_label[cut : cut + 700]]
        if len(labs):
            lc = label_columns(frame, labs)
            lc["label_time"] = label_t[labs]
            again = {c: (v[::3] if isinstance(v, np.ndarray) else v[::3]) for c, v in lc.items()}
            for cols in (lc, again):  # a replay of a third of them
                declared.apply_label_columns(cols)
                _hand_labels(hand, cols)
        if len(txs):
            tc = tx_columns(frame, txs)
            got = declared.transform_columns(tc)
            want = _hand_rows(hand, tc)
            np.testing.assert_array_equal(got, want)
            streak_rows += int((want[:, 22] > 0).sum())
        declared.evict()
        hand.evict()
    assert streak_rows > 0 and (extra > 0).any()


# The protocol window of bench/handbook_replay.py (DEFAULT_START, DEFAULT_DAYS): the rows
# bench/compress_fraud.py featurises, the test week and the delay + 30 days before it.
PROTOCOL_START_MS = 1528588800000  # 2018-06-10T00:00:00Z
PROTOCOL_DAYS = 66


@pytest.mark.skipif(not (data_dir() / "fraud_handbook_sim").exists(), reason="handbook data absent")
def test_the_handbook_protocol_window_gives_the_hand_coded_rows(spec) -> None:  # noqa: ANN001
    """The handbook's own transactions (632,496 rows of the protocol window): every value of
    the 23 columns is the hand-coded one."""
    from finscore.sim.handbook import load_handbook_frame

    full = load_handbook_frame()
    fr = full.select(full.between(PROTOCOL_START_MS, PROTOCOL_START_MS + PROTOCOL_DAYS * DAY_MS))
    cols = {
        "transaction_id": fr.transaction_id,
        "event_time": fr.event_time,
        "customer_id": fr.customer_id,
        "terminal_id": fr.terminal_id,
        "amount": fr.amount,
    }
    labels = {**{c: cols[c] for c in ("transaction_id", "customer_id", "terminal_id", "amount")},
              "tx_time": fr.event_time, "label_time": fr.event_time + spec.label.delay_ms,
              "is_fraud": fr.is_fraud}  # fmt: skip
    got = featurize(spec, cols, labels)
    assert got.shape == (632_496, len(FRAUD_FEATURE_NAMES))
    np.testing.assert_array_equal(got, featurize_frame(fr))


# -- the vocabulary on hand-made labels ---------------------------------------------------------
def _tables(features: list[dict]) -> dict:
    tables = copy.deepcopy(builtin_family("fraud_declared").to_dict())
    tables["features"] = features
    return tables


def _risk(name: str, stat: str, **more: object) -> dict:
    return {"name": name, "kind": "label_risk", "key": "terminal_id", "days": 30,
            "stat": stat, **more}  # fmt: skip


HABIT_OPTIONS = {"positives": "habit", "habit_key": "customer_id", "habit_field": "amount",
                 "habit_days": 30, "habit_ratio": 2.5}  # fmt: skip


def test_habit_filter_and_streak_on_hand_made_labels() -> None:
    """Card c spends ~10 a day; its frauds at terminal T: 12 (habit: < 2.5 x its mean), then
    100 (not: the card's own outlier), then 11 and 9 (habit); a genuine outcome breaks a run."""
    spec = FamilySpec.from_dict(_tables([
        _risk("SHARE", "share", **HABIT_OPTIONS),
        _risk("SUM", "sum", **HABIT_OPTIONS),
        _risk("STREAK", "streak", **HABIT_OPTIONS),
        _risk("ALL_STREAK", "streak"),
        _risk("ALL_SUM", "sum"),
    ]))  # fmt: skip
    engine = DeclaredFeatures(spec)
    t0 = 100 * DAY_MS
    # (day, terminal, amount in cents, fraud)
    history = [(d, "U", 1000, 0) for d in range(10)]  # the card's habit, elsewhere
    history += [(10, "T", 1200, 1), (11, "T", 10000, 1), (12, "T", 1100, 1), (13, "T", 900, 1)]
    n = len(history)
    tx_t = np.array([t0 + d * DAY_MS for d, *_ in history])
    engine.apply_label_columns({
        "transaction_id": [f"x{i}" for i in range(n)], "tx_time": tx_t,
        "label_time": tx_t + DAY_MS, "is_fraud": np.array([f for *_, f in history], bool),
        "terminal_id": [term for _, term, _, _ in history], "customer_id": ["c"] * n,
        "amount": np.array([a for _, _, a, _ in history], np.int64),
    })  # fmt: skip
    now = t0 + 14 * DAY_MS + spec.label.delay_ms + DAY_MS
    row = engine.transform_columns({"transaction_id": ["q"], "event_time": np.array([now]),
                                    "terminal_id": ["T"]})[0]  # fmt: skip
    share, total, streak, all_streak, all_sum = row.tolist()
    assert (total, all_sum) == (3, 4)  # 100 is explained by the card
    assert share == np.float32(3 / 4)
    assert streak == np.float32(np.log1p(2))  # 11 and 9 after the 100
    assert all_streak == np.float32(np.log1p(4))  # every label at T is a fraud


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (_risk("X", "share", positives="habit"), "positives 'habit' needs 'habit_key'"),
        (_risk("X", "share", positives="big"), "positives: 'big' is not one of all, habit"),
        (_risk("X", "share", habit_key="customer_id"), "'habit_key' needs positives = 'habit'"),
        (_risk("X", "count", **HABIT_OPTIONS), "stat 'count' counts every label"),
        (_risk("X", "share", **{**HABIT_OPTIONS, "habit_ratio": 0}),
         "habit_ratio: a positive number is needed"),
        (_risk("X", "share", **{**HABIT_OPTIONS, "habit_field": "currency"}),
         "habit_field: no field 'currency' in schema 'fraud_label'"),
        (_risk("X", "share", **{**HABIT_OPTIONS, "habit_key": "currency"}),
         "habit_key: no field 'currency' in schema 'fraud_label'"),
        (_risk("X", "share", **{**HABIT_OPTIONS, "habit_days": -1}),
         "habit_days: a positive number of days is needed"),
    ],
)  # fmt: skip
def test_invalid_habit_options_are_named(feature: dict, message: str) -> None:
    with pytest.raises(FamilySpecError) as err:
        FamilySpec.from_dict(_tables([feature]))
    assert message in str(err.value)


def test_a_habit_over_the_risk_key_itself() -> None:
    """A card's frauds within its own habit (habit_key = key): its store is kept apart from
    the habit's source, and the result is the share recomputed by hand."""
    spec = FamilySpec.from_dict(_tables([
        {**_risk("OWN", "sum", **HABIT_OPTIONS), "key": "customer_id"},
    ]))  # fmt: skip
    engine = DeclaredFeatures(spec)
    t0 = 100 * DAY_MS
    amounts = [1000, 1000, 1000, 9000, 1100]
    fraud = [0, 0, 0, 1, 1]
    tx_t = t0 + np.arange(5) * DAY_MS
    engine.apply_label_columns({
        "transaction_id": [f"x{i}" for i in range(5)], "tx_time": tx_t, "label_time": tx_t,
        "is_fraud": np.array(fraud, bool), "terminal_id": ["T"] * 5, "customer_id": ["c"] * 5,
        "amount": np.array(amounts, np.int64),
    })  # fmt: skip
    now = t0 + 5 * DAY_MS + spec.label.delay_ms
    got = engine.transform_columns({"transaction_id": ["q"], "event_time": np.array([now]),
                                    "customer_id": ["c"]})  # fmt: skip
    assert got[0, 0] == 1  # 9000 is above 2.5 x the mean (2600); 1100 is below (2620)


def test_the_declared_fraud_family_trains_from_a_csv_with_the_same_features(tmp_path) -> None:  # noqa: ANN001
    """A CSV of the fraud family's own fields (labels in the same rows, known 7 days later)
    reads into exactly the features the worker computes: the habit keys and amounts of the
    labels come from each row's own event."""
    import csv

    from finscore.families import featurize
    from finscore.families.data import read_events
    from finscore.features.fraud import featurize_frame
    from finscore.sim.transactions import TxSimConfig, simulate_frame

    frame = simulate_frame(TxSimConfig(n_customers=120, n_terminals=150, days=45, seed=5))
    path = tmp_path / "transactions.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["transaction_id", "event_time", "customer_id", "terminal_id", "amount",
                    "is_fraud"])  # fmt: skip
        for i in range(len(frame)):
            w.writerow([int(frame.transaction_id[i]), int(frame.event_time[i]),
                        int(frame.customer_id[i]), int(frame.terminal_id[i]),
                        f"{float(frame.amount[i]):.2f}", int(frame.is_fraud[i] != 0)])  # fmt: skip
    spec = builtin_family("fraud_declared")
    table = read_events(path, spec)
    x = featurize(spec, table.columns, table.labels)
    np.testing.assert_array_equal(x, featurize_frame(frame))

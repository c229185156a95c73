"""The handbook's fraud features, declared (``fraud_handbook.toml``), give exactly the
hand-coded FraudFeatures' first 15 columns, offline and online in batches of any size; and the
vocabulary reproduces four of the extra fraud columns too (ratio, z-score, card risk)."""

from __future__ import annotations

import numpy as np
import pytest

from finscore.families import DeclaredFeatures, FamilySpec, builtin_family, featurize
from finscore.features.fraud import (
    FRAUD_FEATURE_NAMES,
    HANDBOOK_FEATURES,
    FraudFeatures,
    featurize_frame,
)
from finscore.sim.transactions import (
    DAY_MS,
    TxSimConfig,
    label_record,
    simulate_frame,
    transaction_record,
)

DELAY = 7 * DAY_MS
EXTRAS = [  # four of the eight extra fraud columns, in the vocabulary
    {"name": "CUSTOMER_AMOUNT_RATIO_30DAY", "kind": "window", "key": "customer_id", "days": 30,
     "stat": "ratio", "field": "amount"},
    {"name": "CUSTOMER_AMOUNT_ZSCORE_30DAY", "kind": "window", "key": "customer_id", "days": 30,
     "stat": "zscore", "field": "amount"},
    {"name": "CUSTOMER_ID_RISK_30DAY_WINDOW", "kind": "label_risk", "key": "customer_id",
     "days": 30, "stat": "share"},
    {"name": "CUSTOMER_ID_NB_FRAUD_30DAY_WINDOW", "kind": "label_risk", "key": "customer_id",
     "days": 30, "stat": "sum"},
]  # fmt: skip


@pytest.fixture(scope="module", params=[11, 12])
def frame(request):  # noqa: ANN001, ANN201
    return simulate_frame(
        TxSimConfig(n_customers=300, n_terminals=400, days=60, seed=request.param)
    )


@pytest.fixture(scope="module")
def hand_coded(frame):  # noqa: ANN001, ANN201
    return featurize_frame(frame)


@pytest.fixture(scope="module")
def spec() -> FamilySpec:
    return builtin_family("fraud_handbook")


def tx_columns(frame, rows=slice(None)) -> dict:  # noqa: ANN001
    """The transaction columns as the columnar decoder gives them (amounts in cents)."""
    return {
        "transaction_id": frame.transaction_id[rows].astype(str).tolist(),
        "event_time": frame.event_time[rows],
        "customer_id": frame.customer_id[rows].astype(str).tolist(),
        "terminal_id": frame.terminal_id[rows].astype(str).tolist(),
        "amount": np.round(frame.amount[rows] * 100).astype(np.int64),
    }


def label_columns(frame, rows=slice(None)) -> dict:  # noqa: ANN001
    """Every transaction's outcome, known DELAY later (the fraud_label fields)."""
    cols = tx_columns(frame, rows)
    return {
        "transaction_id": cols["transaction_id"],
        "customer_id": cols["customer_id"],
        "terminal_id": cols["terminal_id"],
        "tx_time": cols["event_time"],
        "label_time": cols["event_time"] + DELAY,
        "is_fraud": frame.is_fraud[rows].astype(bool),
        "amount": cols["amount"],
    }


def test_the_declaration_names_the_handbook_features(spec) -> None:  # noqa: ANN001
    assert spec.feature_names == HANDBOOK_FEATURES
    assert spec.label.delay_ms == DELAY
    assert spec.input.schema.ref == "transaction"


def test_offline_features_are_the_hand_coded_ones_bit_for_bit(frame, hand_coded, spec) -> None:  # noqa: ANN001
    # the frame as training reads it: integer ids, float amounts in units
    cols = {"transaction_id": frame.transaction_id, "event_time": frame.event_time,
            "customer_id": frame.customer_id, "terminal_id": frame.terminal_id,
            "amount": frame.amount}  # fmt: skip
    labels = {"transaction_id": frame.transaction_id, "tx_time": frame.event_time,
              "label_time": frame.event_time + DELAY, "is_fraud": frame.is_fraud,
              "terminal_id": frame.terminal_id}  # fmt: skip
    got = featurize(spec, cols, labels)
    assert got.dtype == np.float32 and got.shape == (len(frame), 15)
    np.testing.assert_array_equal(got, hand_coded[:, :15])
    assert (got[:, 10] > 0).any()  # terminal risk is exercised


def _merged(frame) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The stream a worker reads: (is_label, row) in time order, each label at its label
    time, before the transactions of that time."""
    n = len(frame)
    when = np.r_[frame.event_time + DELAY, frame.event_time]
    is_label = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    order = np.lexsort((~is_label, when))
    return is_label[order], np.r_[np.arange(n), np.arange(n)][order]


@pytest.mark.parametrize("sizes", [(5000,), (997,), (1, 40, 3000, 17, 800)])
def test_online_batches_give_the_hand_coded_features(frame, hand_coded, spec, sizes) -> None:  # noqa: ANN001
    is_label, row = _merged(frame)
    declared, hand = DeclaredFeatures(spec), FraudFeatures()
    got = np.full((len(frame), 15), np.nan, dtype=np.float32)
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
            hand.apply_label_columns(lc["transaction_id"], lc["customer_id"],
                                     lc["terminal_id"], lc["tx_time"], lc["label_time"],
                                     lc["is_fraud"], lc["amount"])  # fmt: skip
        if len(txs):
            tc = tx_columns(frame, txs)
            got[txs] = declared.transform_columns(tc)
            want = hand.transform_columns(
                tc["transaction_id"],
                tc["event_time"],
                tc["customer_id"],
                tc["terminal_id"],
                tc["amount"],
            )
            np.testing.assert_array_equal(got[txs], want[:, :15])
        declared.evict()
        hand.evict()
    np.testing.assert_array_equal(got, hand_coded[:, :15])


def test_records_give_the_same_features_as_columns(frame, hand_coded, spec) -> None:  # noqa: ANN001
    """Dict records (Decimal amounts, string ids) through transform / apply_labels."""
    rows = np.flatnonzero(frame.event_time < frame.event_time[0] + 12 * DAY_MS)
    declared = DeclaredFeatures(spec)
    early = rows[frame.event_time[rows] + DELAY <= frame.event_time[rows[-1]]]
    declared.apply_labels(label_record(frame, int(i), DELAY) for i in early)
    got = declared.transform(transaction_record(frame, int(i)) for i in rows)
    np.testing.assert_array_equal(got, hand_coded[rows, :15])


def test_ratio_zscore_and_the_cards_risk_are_the_hand_coded_columns(
    frame, hand_coded, spec
) -> None:  # noqa: ANN001
    tables = spec.to_dict()
    tables["features"] += EXTRAS
    extended = FamilySpec.from_dict(tables)
    got = featurize(extended, tx_columns(frame), label_columns(frame))
    names = [e["name"] for e in EXTRAS]
    cols = [FRAUD_FEATURE_NAMES.index(n) for n in names]
    assert extended.feature_names[15:] == tuple(names) and cols == [15, 16, 17, 18]
    np.testing.assert_array_equal(got, hand_coded[:, :19])

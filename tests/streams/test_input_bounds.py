"""Every input is untrusted (issue 14): bounds on transactions, labels, ticks and changelogs,
checked on the pure pipelines (no broker). Each record is scored or becomes a dead letter with
a reason; no single record moves what a store can hold or makes a later record fail."""

from __future__ import annotations

import hashlib
import itertools
import struct
from decimal import Decimal

import numpy as np
import pytest

from finscore.app.console.produce import transaction_events
from finscore.features.exceptions import FeatureStateError
from finscore.features.fraud import FraudFeatures
from finscore.features.market import N_FEATURES
from finscore.features.market_windows import MarketWindows
from finscore.features.timestore import ROWS_MAGIC
from finscore.schemas.codec import Codec
from finscore.schemas.samples import sample
from finscore.sim.market import MarketSimConfig, MarketSimulator
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.pipeline import MarketPipeline
from finscore.streams.pipeline import DeadLetter, DeadLetterEncoder
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact

TX = Codec("transaction")
LABEL = Codec("fraud_label")
TICKS = Codec("market_tick")
DEAD = Codec("dead_letter")
NOW_S = 1.9e9  # 2030: after every simulated record
DAY_MS = 86_400_000


def _transactions(n: int, seed: int = 5) -> list[dict]:
    txs = (r for _, _, s, r in transaction_events("", seed=seed, days=30) if s == "transaction")
    return list(itertools.islice(txs, n))


def _msgs(topic: str, codec: Codec, records: list[dict], enc: str = "avro") -> list[Message]:
    return [
        Message(topic, 0, i, b"k", codec.encode(r, enc), 1000 + i) for i, r in enumerate(records)
    ]


def _fraud(features: FraudFeatures | None = None) -> FraudPipeline:
    slot = ModelSlot(Scorer(artifact("fraud", "3")))
    return FraudPipeline(features or FraudFeatures(), slot, "fraud-flags", clock=lambda: NOW_S)


def _labels_pipeline(features: FraudFeatures) -> LabelsPipeline:
    return LabelsPipeline(features, clock=lambda: NOW_S)


# -- labels (observation 1) ------------------------------------------------------------------
@pytest.mark.parametrize("count", [3, 80])  # record by record and the columnar decoder
def test_impossible_labels_are_dead_letters_and_never_touch_the_state(count: int) -> None:
    good = [sample("fraud_label", i) for i in range(count)]
    year_2200 = {**sample("fraud_label", 900), "tx_time": 7_258_118_400_000}
    y2200_label = {**sample("fraud_label", 901), "label_time": 7_258_118_400_000}
    negative = {**sample("fraud_label", 902), "amount": Decimal("-99999.00")}
    epoch = {**sample("fraud_label", 903), "tx_time": 0, "label_time": 1}
    before = {**sample("fraud_label", 904), "label_time": sample("fraud_label", 904)["tx_time"] - 1}
    no_terminal = {**sample("fraud_label", 905), "terminal_id": ""}
    bad = [year_2200, y2200_label, negative, epoch, before, no_terminal]
    msgs = _msgs("fraud-labels", LABEL, good + bad)
    msgs.append(Message("fraud-labels", 0, len(msgs), b"k", b"\x00garbage", 0))
    features = FraudFeatures()
    res = _labels_pipeline(features).process(msgs)  # must not raise
    assert res.scored == len(good)
    dead = {d.message.offset: d for d in res.dead_letters}
    assert sorted(dead) == list(range(len(good), len(good) + len(bad) + 1))
    assert {d.error_type for d in res.dead_letters} == {"ImpossibleValue", "DecodeError"}
    assert "amount" in dead[len(good) + 2].reason
    assert "label_time" in dead[len(good) + 4].reason
    # the state holds only the good labels, and a transaction of today's data still fits
    assert features.held()["cards"] == len(good)
    assert features.oldest()["cards"] == min(r["tx_time"] for r in good)


def test_a_poisoned_label_batch_keeps_its_valid_labels() -> None:
    """The year-2200 label used to raise out of the labels pipeline for the whole batch."""
    features = FraudFeatures()
    pipe = _labels_pipeline(features)
    first = [{**sample("fraud_label", 0), "tx_time": 7_258_118_400_000}]
    pipe.process(_msgs("fraud-labels", LABEL, first))
    res = pipe.process(_msgs("fraud-labels", LABEL, [sample("fraud_label", i) for i in range(5)]))
    assert res.scored == 5 and not res.dead_letters


# -- transactions (observations 2 and 9) -----------------------------------------------------
def test_a_transaction_from_1970_first_is_a_dead_letter_and_poisons_nothing() -> None:
    txs = _transactions(500)
    epoch = {**txs[0], "transaction_id": "epoch", "event_time": 0}
    pipe = _fraud()
    first = pipe.process(_msgs("transactions", TX, [epoch]))
    assert [d.error_type for d in first.dead_letters] == ["ImpossibleValue"]
    assert "event_time" in first.dead_letters[0].reason
    res = pipe.process(_msgs("transactions", TX, txs))
    assert res.dead_letters == [] and res.scored == 500


def test_far_past_or_far_future_rows_never_move_the_feature_state_range() -> None:
    """Even past the pipeline's bounds, the store's time range is fixed by its configuration,
    not by the first time it sees."""
    features = FraudFeatures()
    txs = _transactions(50)
    pipe = _fraud(features)
    pipe.process(
        _msgs(
            "transactions",
            TX,
            [{**txs[0], "transaction_id": "y2000", "event_time": 946_684_800_000}],
        )
    )  # 2000
    res = pipe.process(_msgs("transactions", TX, txs))
    assert res.dead_letters == [] and res.scored == 50


@pytest.mark.parametrize(
    ("amount", "needle"), [("9999999999.99", "amount"), ("-0.01", "negative amount")]
)
def test_amounts_outside_the_configured_range_are_dead_letters(amount: str, needle: str) -> None:
    txs = _transactions(5)
    huge = {**txs[0], "transaction_id": "huge", "amount": Decimal(amount)}
    res = _fraud().process(_msgs("transactions", TX, [*txs[1:], huge]))
    assert res.scored == 4
    assert [d.message.offset for d in res.dead_letters] == [4]
    assert needle in res.dead_letters[0].reason


def test_ids_must_be_non_empty_and_bounded() -> None:
    txs = _transactions(3)
    long_id = {**txs[0], "transaction_id": "x" * 10_000}
    no_id = {**txs[1], "transaction_id": ""}
    res = _fraud().process(_msgs("transactions", TX, [long_id, no_id, txs[2]]))
    assert res.scored == 1 and [d.message.offset for d in res.dead_letters] == [0, 1]


@pytest.mark.parametrize("n_other", [3, 100])  # record by record and the columnar decoder
def test_a_reused_transaction_id_with_other_content_is_a_marked_duplicate(n_other: int) -> None:
    """Policy: the first occurrence is scored; a repeat of its id for the same customer with a
    different amount or time is a ``duplicate_transaction_id`` dead letter (no second,
    disagreeing flag) and never enters the state; an identical repeat is a replay and is
    scored again, counted once."""
    txs = _transactions(n_other)
    first = txs[0]
    twice = {**first, "amount": Decimal("9999.00")}
    thrice = {**first, "amount": Decimal("1.00"), "event_time": first["event_time"] + 5}
    pipe = _fraud()
    res1 = pipe.process(_msgs("transactions", TX, txs))
    res2 = pipe.process(_msgs("transactions", TX, [twice, thrice, first]))
    assert res1.scored == n_other and not res1.dead_letters
    assert [d.message.offset for d in res2.dead_letters] == [0, 1]
    assert all(d.reason.startswith("duplicate_transaction_id") for d in res2.dead_letters)
    assert res2.scored == 1 and res2.duplicates == 2
    # the identical replay gets the same flag as the first time (same state, counted once)
    f1 = Codec("fraud_flag").decode(res1.outputs[0].value)
    f2 = Codec("fraud_flag").decode(res2.outputs[0].value)
    assert f1["transaction_id"] == f2["transaction_id"] and f1["score"] == f2["score"]


def test_duplicates_inside_one_batch_keep_the_first() -> None:
    txs = _transactions(4)
    other = {**txs[1], "amount": Decimal("777.77")}
    res = _fraud().process(_msgs("transactions", TX, [*txs, other, txs[1]]))
    assert res.scored == 5  # the identical repeat is a replay: scored
    assert [d.message.offset for d in res.dead_letters] == [4]
    assert res.dead_letters[0].reason.startswith("duplicate_transaction_id")


# -- dead letters always fit (observation 3) -------------------------------------------------
def test_an_oversized_original_is_truncated_with_its_size_and_hash() -> None:
    big = bytes(range(256)) * 3900  # 998,400 bytes: below the producer's default 1 MB
    m = Message("transactions", 2, 17, b"c1", big, 5)
    enc = DeadLetterEncoder("fraud@test")
    out = enc.encode(DeadLetter(m, "DecodeError", "x" * 5000), 1)
    assert len(out.value) + len(out.key or b"") < 1_000_000 - 64 * 1024
    rec = DEAD.decode(out.value)
    assert big.startswith(rec["value"]) and len(rec["value"]) < len(big)
    assert rec["value_size"] == len(big)
    assert rec["value_sha256"] == hashlib.sha256(big).hexdigest()
    small = DEAD.decode(enc.encode(DeadLetter(m, "DecodeError", "r"), 1).value)  # unchanged
    assert small["value"] == big[: len(small["value"])]
    tiny = Message("transactions", 0, 1, b"c1", b"\x00bad", 5)
    plain = DEAD.decode(enc.encode(DeadLetter(tiny, "DecodeError", "r"), 1).value)
    assert plain["value"] == b"\x00bad" and plain["value_size"] is None


# -- market ticks ----------------------------------------------------------------------------
def _ticks(n: int) -> list[dict]:
    cfg = MarketSimConfig(seed=4, instruments=("SIMA",))
    return list(itertools.islice(MarketSimulator(cfg).ticks(), n))


@pytest.mark.parametrize("n_good", [3, 60])  # record by record and columnar
def test_impossible_ticks_are_dead_letters(n_good: int) -> None:
    good = _ticks(n_good)
    last = good[-1]
    inf_ask = {**last, "sequence": last["sequence"] + 1,
               "asks": [{"price": float("inf"), "size": 1}, *last["asks"][1:]]}  # fmt: skip
    epoch = {**last, "sequence": last["sequence"] + 2, "event_time": 5}
    negative_seq = {**last, "sequence": -5}
    nameless = {**last, "sequence": last["sequence"] + 3, "instrument": ""}
    bad = [inf_ask, epoch, negative_seq, nameless]
    slot = ModelSlot(Scorer(artifact("market", "3", window=20)))
    pipe = MarketPipeline(MarketWindows(20), slot, "price-signals", clock=lambda: NOW_S)
    res = pipe.process(_msgs("market-ticks", TICKS, good + bad))
    assert sorted(d.message.offset for d in res.dead_letters) == list(
        range(n_good, n_good + len(bad))
    )
    assert {d.error_type for d in res.dead_letters} == {"ImpossibleValue"}


def test_a_corrupt_market_snapshot_is_refused_with_a_typed_error() -> None:
    w = MarketWindows(20)
    rows = np.zeros((3, N_FEATURES), np.float32)
    for snap in (
        b"\x01",  # truncated header
        struct.pack("<qi", 7, 5) + rows.tobytes(),  # claims 5 rows, holds 3
        struct.pack("<qi", 7, -1),  # negative count
        struct.pack("<qi", 7, 3) + np.full((3, N_FEATURES), np.nan, np.float32).tobytes(),
    ):
        with pytest.raises(FeatureStateError):
            w.restore("SIMA", snap)
    w.restore("SIMA", struct.pack("<qi", 7, 3) + rows.tobytes())  # a good one still works
    assert w.snapshot("SIMA") == struct.pack("<qi", 7, 3) + rows.tobytes()


# -- the fraud changelog on restore ----------------------------------------------------------
def test_restored_changelog_rows_outside_the_bounds_are_dropped_not_fatal() -> None:
    txs = _transactions(200)
    features = FraudFeatures()
    pipe = _fraud(features)
    pipe.process(_msgs("transactions", TX, txs))
    changes = features.take_changes(dict.fromkeys(features.customers(), 0))
    good = [(f"p{p}", rec) for p, rec in changes]
    # a record holding a 1970 entry and a year-2200 entry for a customer (old, poisoned state)
    names = b"cx"
    head = ROWS_MAGIC + struct.pack("<II", 1, 2) + struct.pack("<I", len(names))
    body = names + bytes(-(len(head) + len(names)) % 8)
    rows = np.array([[0, 0, 1, 100, 10_000], [0, 7_258_118_400_000, 2, 100, 10_000]], "<i8")
    poisoned = ("p0", head + body + rows.tobytes())
    fresh = FraudFeatures()
    fresh.add_changes([poisoned, *good])
    assert sorted(fresh.customers()) == sorted(features.customers())
    assert fresh.oldest()["customers"] == features.oldest()["customers"]
    later = _fraud(fresh).process(_msgs("transactions", TX, _transactions(400)[200:]))
    assert later.dead_letters == [] and later.scored == 200


def test_dead_letters_are_json_on_a_dlq_listed_in_the_json_topics() -> None:
    """`kcat -C -t transactions-dlq` shows what was rejected, and why, when the DLQ is listed in
    FINSCORE_JSON_TOPICS (with or without the topic prefix); other DLQs stay Avro."""
    import base64
    import json

    from finscore.streams.pipeline import DeadLetter, DeadLetterEncoder
    from finscore.streams.transport import Message

    enc = DeadLetterEncoder("w", json_topics=frozenset({"transactions-dlq"}), topic_prefix="p-")
    bad = Message("p-transactions", 0, 5, b"c42", b"not a transaction", 1)
    doc = json.loads(enc.encode(DeadLetter(bad, "DecodeError", "not Avro"), 7).value)
    assert base64.b64decode(doc["value"]) == b"not a transaction" and doc["reason"] == "not Avro"
    label = Message("p-fraud-labels", 0, 5, b"t1", b"junk", 1)
    assert enc.encode(DeadLetter(label, "DecodeError", "x"), 7).value[:2] == b"\xc3\x01"

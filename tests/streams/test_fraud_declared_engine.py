"""The fraud stream's default mode (all_outcomes, single stage) runs on the fraud family's
declaration: DeclaredFraudFeatures behind FraudFeatures' interface gives the fraud pipeline the
same flags, dead letters and changelog records as the hand-coded engine, batch for batch; the
stream picks it under all_outcomes and keeps FraudFeatures under fraud_reports and for a
stage's half."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from finscore.app.console.produce import transaction_events
from finscore.families.fraud import DeclaredFraudFeatures, declared_covers
from finscore.features.fraud import FraudFeatureConfig, FraudFeatures
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact


def _messages(n: int) -> tuple[list[Message], list[Message]]:
    tx, lab = Codec("transaction"), Codec("fraud_label")
    txs: list[Message] = []
    labels: list[Message] = []
    for _topic, key, schema, rec in itertools.islice(transaction_events("", seed=9, days=60), n):
        if schema == "transaction":
            txs.append(Message(T.TRANSACTIONS, hash(key) % 3, len(txs), key.encode(),
                               tx.encode(rec), 1))  # fmt: skip
        else:
            labels.append(Message(T.FRAUD_LABELS, 0, len(labels), key.encode(),
                                  lab.encode(rec), 1))  # fmt: skip
    return txs, labels


def test_the_declared_engine_gives_the_pipeline_the_hand_coded_outputs() -> None:
    txs, labels = _messages(12000)
    # a reused id with another amount, and a replay, among the transactions
    codec = Codec("transaction")
    first = codec.decode(txs[100].value)
    moved = Message(T.TRANSACTIONS, txs[100].partition, 10**6, txs[100].key,
                    codec.encode({**first, "event_time": first["event_time"] + 1}), 1)  # fmt: skip
    txs[3000:3000] = [moved, txs[100]]
    slot = ModelSlot(Scorer(artifact("fraud", "1")))
    runs = {}
    for name, feats in (("hand", FraudFeatures()), ("declared", DeclaredFraudFeatures())):
        pipe = FraudPipeline(feats, slot, T.FRAUD_FLAGS, changelog_topic="state",
                             clock=lambda: 1.9e9)  # fmt: skip
        lab = LabelsPipeline(feats, clock=lambda: 1.9e9)
        out = []
        for a in range(0, len(txs), 700):
            lab.process(labels[a // 2 : a // 2 + 350])
            r = pipe.process(txs[a : a + 700])
            out.append(([o.value for o in r.outputs], [(d.error_type, d.reason)
                        for d in r.dead_letters], [(s.partition, s.value) for s in pipe.flush_state()]))  # fmt: skip
        runs[name] = (out, feats.held(), feats.oldest())
    hand, declared = runs["hand"], runs["declared"]
    assert any(d for _, d, _ in hand[0]) and any(s for _, _, s in hand[0])
    flags = Codec("fraud_flag")
    for (h_out, h_dead, h_state), (d_out, d_dead, d_state) in zip(hand[0], declared[0],
                                                                  strict=True):  # fmt: skip
        assert [flags.decode(v)["score"] for v in h_out] == [flags.decode(v)["score"]
                                                             for v in d_out]  # fmt: skip
        assert h_dead == d_dead and h_state == d_state
    assert hand[1] == declared[1] and hand[2] == declared[2]


def test_the_stream_runs_the_declaration_under_all_outcomes_only() -> None:
    assert declared_covers(FraudFeatureConfig())
    assert not declared_covers(FraudFeatureConfig(label_contract="fraud_reports"))
    assert not declared_covers(FraudFeatureConfig(), part="cards")
    assert not declared_covers(FraudFeatureConfig(habit_ratio=3.0))
    with pytest.raises(ValueError, match="fraud_reports"):
        DeclaredFraudFeatures(FraudFeatureConfig(label_contract="fraud_reports"))

    from finscore.streams.fraud.stream import FraudStream
    from finscore.streams.worker import WorkerConfig

    class Slot:
        live = challenger = None

    for contract, kind in (("all_outcomes", DeclaredFraudFeatures),
                           ("fraud_reports", FraudFeatures)):  # fmt: skip
        cfg = WorkerConfig(stream="fraud", client={"bootstrap.servers": "localhost:1"},
                           label_contract=contract)  # fmt: skip
        features = FraudStream(cfg, Slot()).features  # type: ignore[arg-type]
        assert type(features) is kind
        assert features.cfg.time_origin_ms == cfg.bounds.min_event_time_ms


def test_dict_records_and_snapshots_match_the_hand_coded_engine() -> None:
    rng = np.random.default_rng(3)
    t0 = 1_700_000_000_000
    txs = [{"transaction_id": f"t{i}", "event_time": t0 + i * 60_000, "customer_id": f"c{i % 7}",
            "terminal_id": f"T{i % 5}", "amount": f"{rng.integers(100, 9999) / 100:.2f}"}
           for i in range(400)]  # fmt: skip
    labels = [{"transaction_id": tx["transaction_id"], "customer_id": tx["customer_id"],
               "terminal_id": tx["terminal_id"], "tx_time": tx["event_time"],
               "label_time": tx["event_time"] + 7 * 86_400_000 - 5, "is_fraud": i % 9 == 0,
               "amount": tx["amount"]} for i, tx in enumerate(txs[:200])]  # fmt: skip
    hand, declared = FraudFeatures(), DeclaredFraudFeatures()
    for e in (hand, declared):
        e.apply_labels(labels)
    np.testing.assert_array_equal(declared.transform(txs), hand.transform(txs))
    customers = sorted(hand.customers())
    assert sorted(declared.customers()) == customers
    assert sorted(declared.terminals()) == sorted(hand.terminals())
    assert declared.snapshot_customers(customers) == hand.snapshot_customers(customers)
    fresh = DeclaredFraudFeatures()
    fresh.restore_customer(customers[0], hand.snapshot_customer(customers[0]))
    assert fresh.customers() == customers[:1]
    assert declared.watermark_ms() == hand.watermark_ms() and declared.latest_ms == hand.latest_ms
    assert declared.take_terminal_entries() == [] and declared.add_terminal_entries([b"x"]) == 0
    assert declared.unmatched_reports == 0

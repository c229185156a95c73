"""The two-stage fraud pipelines, pure (no broker): cards → rows records → terminals give the
same flags, byte for byte, as the one-stage pipeline under fraud_reports; a record on the
repartition topic that is not a rows record is a dead letter with the reason and the rest of
its batch is scored."""

from __future__ import annotations

import numpy as np

from finscore.features.fraud import FraudFeatureConfig, FraudFeatures
from finscore.streams.fraud.pipeline import FraudPipeline
from finscore.streams.fraud.repartition import decode_rows
from finscore.streams.fraud.stages import CardsPipeline, TerminalsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact
from tests.streams import test_fraud_pipeline as fraud_cases

REPORTS = FraudFeatureConfig(label_contract="fraud_reports")
TOPIC = "g-transactions-by-terminal-repartition"


def cards(partitions: int = 3) -> CardsPipeline:
    return CardsPipeline(FraudFeatures(REPORTS, part="cards"), ModelSlot(), TOPIC,
                         partitions=partitions, changelog_topic="state", clock=lambda: 2e9)  # fmt: skip


def terminals(slot: ModelSlot) -> TerminalsPipeline:
    return TerminalsPipeline(FraudFeatures(REPORTS, part="terminals"), slot, "fraud-flags",
                             clock=lambda: 2e9)  # fmt: skip


def rows_messages(msgs: list[Message], partitions: int = 3) -> list[Message]:
    """The cards stage's outputs for ``msgs``, as the terminals stage consumes them."""
    out = cards(partitions).process(msgs).outputs
    offsets = dict.fromkeys(range(partitions), 0)
    got = []
    for r in out:
        assert r.topic == TOPIC and r.partition is not None
        got.append(Message(TOPIC, r.partition, offsets[r.partition], r.key, r.value, 0))
        offsets[r.partition] += 1
    return got


def test_two_stages_write_the_one_stage_flags_byte_for_byte() -> None:
    txs = fraud_cases._transactions(600)
    msgs = fraud_cases._messages(txs, ["avro"] * 600)
    live = Scorer(artifact("fraud", "1"))
    one = FraudPipeline(FraudFeatures(REPORTS), ModelSlot(live), "fraud-flags",
                        changelog_topic="state", clock=lambda: 2e9)  # fmt: skip
    want = {(r.key, r.value) for r in one.process(msgs).outputs}
    rows = rows_messages(msgs)
    assert 1 < len(rows) <= 3  # one record per destination partition
    got = terminals(ModelSlot(live)).process(rows).outputs
    assert len(got) == len(want) == 600
    assert {(r.key, r.value) for r in got} == want  # same bytes: same features, source, key
    assert all(r.timestamp_ms >= 1000 for r in got)  # the transaction's own timestamp


def test_cards_records_hold_every_row_once_in_the_partition_of_its_terminal() -> None:
    msgs = fraud_cases._messages(fraud_cases._transactions(300), ["avro"] * 300)
    rows = [decode_rows(m.value) for m in rows_messages(msgs, 4)]
    offsets = np.concatenate([r.source_offset for r in rows])
    assert sorted(offsets.tolist()) == [m.offset for m in msgs]
    from finscore.streams.fraud.repartition import terminal_partition

    for m, r in zip(rows_messages(msgs, 4), rows, strict=True):
        assert set(terminal_partition(r.terminal_id, 4).tolist()) == {m.partition}


def test_a_record_that_is_not_rows_is_a_dead_letter_and_the_batch_goes_on() -> None:
    msgs = fraud_cases._messages(fraud_cases._transactions(200), ["avro"] * 200)
    rows = rows_messages(msgs)
    bad = [Message(TOPIC, 0, 99, b"rows", b"FTR1\xff\xff", 0), Message(TOPIC, 1, 98, None, None, 0)]
    result = terminals(ModelSlot(Scorer(artifact("fraud", "1")))).process([bad[0], *rows, bad[1]])
    assert len(result.outputs) == 200
    assert [(d.message.offset, d.error_type) for d in result.dead_letters] == [
        (99, "RepartitionRecordError"),
        (98, "RepartitionRecordError"),
    ]
    assert all(d.reason for d in result.dead_letters)


def test_without_a_model_the_transactions_are_dead_letters_naming_them() -> None:
    msgs = fraud_cases._messages(fraud_cases._transactions(50), ["avro"] * 50)
    result = terminals(ModelSlot()).process(rows_messages(msgs))
    assert not result.outputs
    assert sorted((d.message.topic, d.message.offset) for d in result.dead_letters) == [
        ("transactions", m.offset) for m in msgs
    ]

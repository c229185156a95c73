"""One record must not stop the fleet (issue 14, observations 1, 2, 3 and 9), on the embedded
broker with real workers: poison on ``fraud-labels`` and ``transactions`` becomes dead letters
at once, the worker keeps scoring every valid record, and it starts again over the same
history."""

from __future__ import annotations

import itertools
import time
from decimal import Decimal

import pytest

from finscore.app.console.produce import transaction_events
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.samples import sample
from tests.artifacts import artifact
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    produce_records,
    publish,
    running,
    wait_assigned,
    worker_config,
)

pytestmark = pytest.mark.broker

TX = Codec("transaction")
LABEL = Codec("fraud_label")
YEAR_2200_MS = 7_258_118_400_000


def _transactions(n: int, seed: int = 6) -> list[dict]:
    txs = (r for _, _, s, r in transaction_events("", seed=seed, days=30) if s == "transaction")
    return list(itertools.islice(txs, n))


def _tx_items(records: list[dict]) -> list[tuple[bytes | None, bytes]]:
    return [(r["customer_id"].encode(), TX.encode(r, "avro")) for r in records]


def _flags(client: dict, prefix: str, n: int) -> list[dict]:
    return decode_all(consume_all(client, prefix + T.FRAUD_FLAGS, n, settle=1.0), "fraud_flag")


def _dead(client: dict, prefix: str, topic: str, n: int, timeout: float = 30) -> list[dict]:
    return decode_all(consume_all(client, prefix + T.dlq(topic), n, timeout), "dead_letter")


def test_poisoned_labels_are_dead_letters_at_once_and_no_worker_crash_loops(client, prefix) -> None:
    """Observation 1: a label dated 2200 crashed every worker at start; a label of −99,999 was
    accepted; an undecodable label reached the DLQ only with the next transaction batch."""
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    year_2200 = {**sample("fraud_label", 1), "tx_time": YEAR_2200_MS}
    negative = {**sample("fraud_label", 2), "amount": Decimal("-99999.00")}
    labels = [
        (b"t0", LABEL.encode(sample("fraud_label", 0), "avro")),
        (b"t1", LABEL.encode(year_2200, "avro")),
        (b"t2", LABEL.encode(negative, "avro")),
    ]
    produce_records(client, prefix + T.FRAUD_LABELS, labels)
    cfg = worker_config(client, prefix, group_id=prefix + "g")
    with running(cfg) as w:
        wait_assigned(w)
        dead = _dead(client, prefix, T.FRAUD_LABELS, 2)  # no transaction sent yet
        assert sorted(d["source_offset"] for d in dead) == [1, 2]
        assert {d["error_type"] for d in dead} == {"ImpossibleValue"}
        produce_records(client, prefix + T.FRAUD_LABELS, [(b"t3", b"\x00garbage")])
        dead = _dead(client, prefix, T.FRAUD_LABELS, 3)  # still no transaction
        assert sorted(d["source_offset"] for d in dead) == [1, 2, 3]
        txs = _transactions(20)
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(txs))
        assert len(_flags(client, prefix, 20)) == 20
    with running(cfg) as again:  # a restart reads the same labels from the beginning
        wait_assigned(again)
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(_transactions(30)[20:]))
        assert len(_flags(client, prefix, 30)) == 30
        assert again.health()["status"] == "ok"


def test_a_transaction_from_1970_first_does_not_poison_the_state(client, prefix) -> None:
    """Observation 2: as a fresh worker's first event it made every later transaction a dead
    letter "out of the feature state's range", across restarts (through the changelog)."""
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    txs = _transactions(500)
    epoch = {**txs[0], "transaction_id": "epoch", "event_time": 0}
    produce_records(client, prefix + T.TRANSACTIONS, _tx_items([epoch]))
    cfg = worker_config(client, prefix, group_id=prefix + "g")
    with running(cfg):
        dead = _dead(client, prefix, T.TRANSACTIONS, 1)
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(txs[:400]))
        assert len(_flags(client, prefix, 400)) == 400
    with running(cfg):
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(txs[400:]))
        flags = _flags(client, prefix, 500)
    dead = _dead(client, prefix, T.TRANSACTIONS, 1)
    assert len(flags) == 500
    assert [d["source_offset"] for d in dead] == [0] and "event_time" in dead[0]["reason"]


def test_an_oversized_record_is_dead_lettered_truncated_and_the_worker_lives(
    client, prefix
) -> None:
    """Observation 3: a ~990 KB record's dead letter exceeded the message size and the worker
    died with MSG_SIZE_TOO_LARGE at every restart."""
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    big = b"\x00" + bytes(range(256)) * 3905 + b"x" * 169  # 999,850 bytes, undecodable
    txs = _transactions(30)
    produce_records(client, prefix + T.TRANSACTIONS, [(b"c", big), *_tx_items(txs[:10])])
    cfg = worker_config(client, prefix, group_id=prefix + "g")
    with running(cfg) as w:
        assert len(_flags(client, prefix, 10)) == 10
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(txs[10:20]))
        assert len(_flags(client, prefix, 20)) == 20
        assert w.health()["status"] == "ok"
    [dead] = _dead(client, prefix, T.TRANSACTIONS, 1)
    assert dead["source_offset"] == 0 and dead["value_size"] == len(big)
    assert big.startswith(dead["value"]) and len(dead["value"]) < len(big)
    with running(cfg):  # and it starts again over the same input
        produce_records(client, prefix + T.TRANSACTIONS, _tx_items(txs[20:]))
        assert len(_flags(client, prefix, 30)) == 30


def test_absurd_amounts_and_reused_ids_are_marked_not_scored(client, prefix) -> None:
    """Observation 9: 9,999,999,999.99 was scored as ordinary; one id sent with three amounts
    got three disagreeing flags."""
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    txs = _transactions(12)
    absurd = {**txs[0], "transaction_id": "absurd", "amount": Decimal("9999999999.99")}
    same = [{**txs[1], "amount": Decimal(a)} for a in ("12.00", "1200.00", "5.00")]
    items = _tx_items([*txs[2:], absurd, *same])
    produce_records(client, prefix + T.TRANSACTIONS, items)
    with running(worker_config(client, prefix)):
        flags = _flags(client, prefix, 11)
        dead = _dead(client, prefix, T.TRANSACTIONS, 3)
    assert sorted(f["transaction_id"] for f in flags) == sorted(
        [t["transaction_id"] for t in txs[2:]] + [txs[1]["transaction_id"]]
    )
    assert len(flags) == 11
    by_offset = {d["source_offset"]: d for d in dead}
    assert sorted(by_offset) == [10, 12, 13]
    assert "amount" in by_offset[10]["reason"]
    assert by_offset[12]["reason"].startswith("duplicate_transaction_id")
    assert by_offset[13]["reason"].startswith("duplicate_transaction_id")


def test_a_label_batch_without_transactions_is_dead_lettered_in_exactly_once_mode(
    client, prefix
) -> None:
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    cfg = worker_config(client, prefix, exactly_once=True, transactional_id=prefix + "tx")
    with running(cfg) as w:
        wait_assigned(w)
        time.sleep(0.5)
        produce_records(client, prefix + T.FRAUD_LABELS, [(b"t", b"\x00garbage")])
        dead = decode_all(
            consume_all(client, prefix + T.dlq(T.FRAUD_LABELS), 1, 30, read_committed=True),
            "dead_letter",
        )
        assert [d["source_offset"] for d in dead] == [0]

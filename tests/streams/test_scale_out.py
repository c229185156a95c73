"""Two workers in one consumer group share the partitions; every input is scored once."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest

from finscore.app.console.produce import produce, transaction_events
from finscore.schemas import topics as T
from tests.artifacts import artifact
from tests.streams.kit import consume_all, decode_all, make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker


def test_two_workers_share_the_load_and_score_each_transaction_once(client, prefix) -> None:
    make_topics(client, prefix, partitions=4)
    publish(client, prefix, artifact("fraud"))
    events = list(itertools.islice(transaction_events(prefix, seed=9), 6000))
    txs = [e for e in events if e[0] == prefix + T.TRANSACTIONS]
    with (
        running(worker_config(client, prefix, instance_id="a")) as a,
        running(worker_config(client, prefix, instance_id="b")) as b,
    ):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the group settles: 2 partitions each
            pa, pb = a.transport.assignment(), b.transport.assignment()
            if len(pa) == 2 and len(pb) == 2:
                break
            time.sleep(0.1)
        assert sorted(pa + pb) == [(prefix + T.TRANSACTIONS, p) for p in range(4)]
        produce(client, iter(txs))
        flags = decode_all(
            consume_all(client, prefix + T.FRAUD_FLAGS, len(txs), settle=1.0), "fraud_flag"
        )
        load = (a.metrics.events_in._value.get(), b.metrics.events_in._value.get())
    counts = Counter(f["transaction_id"] for f in flags)
    assert len(counts) == len(txs) and max(counts.values()) == 1
    assert sum(load) == len(txs) and min(load) > 0.2 * len(txs), load

"""The fraud worker end to end on the embedded broker: 1:1 accounting, dead letters."""

from __future__ import annotations

import json
import time

import pytest

from finscore.app.console.produce import produce, transaction_events
from finscore.features.timestore import ROWS_MAGIC
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


def test_every_transaction_gets_exactly_one_flag_naming_its_model(client, prefix) -> None:
    make_topics(client, prefix)
    publish(client, prefix, artifact("fraud", "7"))
    stats = produce(client, transaction_events(prefix, seed=3), count=3000)
    n_tx = stats.by_topic[prefix + T.TRANSACTIONS]
    sent_ids = [
        r["transaction_id"]
        for r in decode_all(consume_all(client, prefix + T.TRANSACTIONS, n_tx), "transaction")
    ]
    with running(worker_config(client, prefix)) as w:
        flags = decode_all(
            consume_all(client, prefix + T.FRAUD_FLAGS, n_tx, settle=1.0), "fraud_flag"
        )
        assert w.metrics.events_in._value.get() == n_tx
    ids = [f["transaction_id"] for f in flags]
    assert sorted(ids) == sorted(sent_ids)  # nothing missing, nothing twice
    assert {f["model_version"] for f in flags} == {"7"}
    assert all(0.0 <= f["score"] <= 1.0 for f in flags)
    assert all(f["processing_time"] >= f["event_time"] for f in flags)


def test_bad_records_go_to_the_dead_letter_topic_and_scoring_continues(client, prefix) -> None:
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    codec = Codec("transaction")
    good = [sample("transaction", i) for i in range(5)]
    now_ms = int(time.time() * 1000)
    negative = {**sample("transaction", 10), "amount": "-12.50"}
    future = {**sample("transaction", 11), "event_time": now_ms + 48 * 3600 * 1000}
    nan_json = json.dumps({**codec_json(sample("transaction", 12)), "amount": "NaN"}).encode()
    bad = [
        b"\x00\x01garbage",
        b"not json at all",
        codec.encode(good[0], "avro")[:7],  # truncated Avro
        json.dumps({"transaction_id": "x"}).encode(),  # schema-invalid JSON
        codec.encode(negative, "json"),
        codec.encode(future, "avro"),
        nan_json,
    ]
    items = [(b"c", codec.encode(r, "avro")) for r in good] + [(b"c", v) for v in bad]
    produce_records(client, prefix + T.TRANSACTIONS, items)
    with running(worker_config(client, prefix)) as w:
        flags = consume_all(client, prefix + T.FRAUD_FLAGS, len(good), settle=1.0)
        dead = decode_all(
            consume_all(client, prefix + T.dlq(T.TRANSACTIONS), len(bad)), "dead_letter"
        )
        counted = sum(
            s.value for s in w.metrics._dead.collect()[0].samples if s.name.endswith("_total")
        )
    assert len(flags) == len(good)
    assert len(dead) == len(bad) and counted == len(bad)
    assert sorted(d["value"] for d in dead) == sorted(bad)  # original bytes kept
    assert {d["source_topic"] for d in dead} == {prefix + T.TRANSACTIONS}
    assert sorted(d["source_offset"] for d in dead) == list(range(len(good), len(good) + len(bad)))
    reasons = " ".join(d["reason"] for d in dead)
    for needle in ("negative amount", "future", "NaN"):
        assert needle in reasons, reasons
    assert {d["error_type"] for d in dead} >= {"DecodeError", "ImpossibleValue"}


def codec_json(record: dict) -> dict:
    return json.loads(Codec("transaction").encode(record, "json"))


def test_a_corrupt_changelog_record_is_skipped_and_the_rest_restored(client, prefix) -> None:
    """State that cannot be read never stops a worker: the readable records are restored."""
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud"))
    stats = produce(client, transaction_events(prefix, seed=4), count=400)
    n_tx = stats.by_topic[prefix + T.TRANSACTIONS]
    cfg = worker_config(client, prefix, group_id=prefix + "g")
    with running(cfg) as first:
        consume_all(client, prefix + T.FRAUD_FLAGS, n_tx, settle=1.0)
    held = sorted(first.stream.features.customers())
    changelog = first.stream.changelog_topic
    produce_records(client, changelog, [(b"p0", ROWS_MAGIC + b"\xff" * 20)])  # truncated
    with running(cfg) as second:
        wait_assigned(second)
        deadline = time.monotonic() + 20
        while sorted(second.stream.features.customers()) != held and time.monotonic() < deadline:
            time.sleep(0.1)  # the restore runs in the assignment callback
        assert sorted(second.stream.features.customers()) == held and held
        assert second.health()["status"] == "ok"

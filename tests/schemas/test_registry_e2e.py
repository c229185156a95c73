"""The schema registry end to end: with a registry set, workers read and WRITE the Confluent wire
format, so Confluent's own ``AvroSerializer``/``AvroDeserializer`` interoperate with them.

The registry is a real one: Apicurio Registry (Confluent-compatible API, built by ``make setup``
into .cache/registry; :mod:`tests.schemas.apicurio`), or the server at
``FINSCORE_TEST_SCHEMA_REGISTRY_URL`` when that is set (e.g. Confluent's own). Where neither can
run (no Java or Maven), these tests are skipped with the reason; the schema tests' stand-in
(:mod:`tests.schemas.registry_server`) serves only the codec's unit tests.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from finscore.schemas.codec import Codec, load_schema
from finscore.schemas.columnar.codec import ColumnarCodec
from tests.artifacts import artifact
from tests.streams.kit import consume_all, make_topics, publish, running, worker_config

sr = pytest.importorskip(
    "confluent_kafka.schema_registry",
    reason="confluent-kafka[schemaregistry] extras not installed",
    exc_type=ImportError,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

REAL_URL = os.environ.get("FINSCORE_TEST_SCHEMA_REGISTRY_URL")


@pytest.fixture
def registry_url(schema_registry_url: str) -> str:
    """The session's real registry (tests/conftest.py: Apicurio, or FINSCORE_TEST_SCHEMA_REGISTRY_URL)."""
    return schema_registry_url


def _client(url: str) -> Any:
    return sr.SchemaRegistryClient({"url": url})


def _flag(i: int) -> dict:
    return {
        "transaction_id": f"tx-{i}", "customer_id": f"c{i}", "terminal_id": f"t{i}",
        "score": 0.25 + i / 100, "flagged": i % 2 == 0, "threshold": 0.5,
        "model_name": "fraud", "model_version": "4", "event_time": 1_700_000_000_000 + i,
        "processing_time": 1_700_000_000_500, "source_topic": "transactions",
        "source_partition": i % 3, "source_offset": 100 + i, "top_features": [],
    }  # fmt: skip


def test_confluent_bodies_are_byte_identical_to_confluent_kafkas_serializer(registry_url) -> None:  # noqa: ANN001
    """Codec.encode('confluent'), the columnar encoder behind ``header_for('confluent')`` and
    confluent_kafka's AvroSerializer write the same bytes, under the same subject and id."""
    topic = f"e2e-bytes-{time.monotonic_ns()}"
    client = _client(registry_url)
    codec = Codec("fraud_flag", registry=_client(registry_url), subject=f"{topic}-value")
    ser = AvroSerializer(client, json.dumps(load_schema("fraud_flag")))
    ctx = SerializationContext(topic, MessageField.VALUE)
    flags = [_flag(i) for i in range(4)]
    theirs = [ser(f, ctx) for f in flags]
    ours = [codec.encode(f, "confluent") for f in flags]
    assert ours == theirs
    assert theirs[0][:1] == b"\x00" and codec.header_for("confluent") == theirs[0][:5]
    cols = {k: [f[k] for f in flags] for k in flags[0]}
    cols["score"] = np.array(cols["score"])
    columnar = ColumnarCodec("fraud_flag").encode(4, cols, header=codec.header_for("confluent"))
    assert columnar == theirs
    assert codec.header_for("avro") + theirs[0][5:] == Codec("fraud_flag").encode(flags[0])
    de = AvroDeserializer(client)
    assert [de(b, ctx)["transaction_id"] for b in ours] == [f"tx-{i}" for i in range(4)]


@pytest.mark.broker
def test_a_worker_scores_a_confluent_transaction_and_its_flag_is_confluent(  # noqa: ANN201
    client,
    prefix,
    registry_url,  # noqa: ANN001
):
    """Acceptance: a transaction written by confluent_kafka's AvroSerializer is scored by a
    worker with the registry set, and its flag is decoded by confluent_kafka's
    AvroDeserializer; the flag subject is ``<topic>-value`` (TopicNameStrategy)."""
    from confluent_kafka import Producer

    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "4"))
    reg = _client(registry_url)
    tx_topic, flag_topic = prefix + "transactions", prefix + "fraud-flags"
    ser = AvroSerializer(reg, json.dumps(load_schema("transaction")))
    tx = {"transaction_id": "e2e-1", "event_time": int(time.time() * 1000), "customer_id": "c1",
          "terminal_id": "t1", "amount": Decimal("12.50"), "currency": "EUR"}  # fmt: skip
    value = ser(tx, SerializationContext(tx_topic, MessageField.VALUE))
    assert value[:1] == b"\x00"
    p = Producer(dict(client))
    p.produce(tx_topic, value, b"c1")
    assert p.flush(30) == 0
    with running(worker_config(client, prefix, schema_registry={"url": registry_url})):
        flags = consume_all(client, flag_topic, 1, timeout=30)
    dead = consume_all(client, tx_topic + "-dlq", 0, timeout=0.5)
    assert dead == [], [m.value()[:80] for m in dead]
    assert len(flags) == 1
    raw = flags[0].value()
    assert raw[:1] == b"\x00", raw[:10]  # the Confluent wire format, not single-object
    flag = AvroDeserializer(reg)(raw, SerializationContext(flag_topic, MessageField.VALUE))
    assert flag["transaction_id"] == "e2e-1" and flag["model_version"] == "4"
    latest = reg.get_latest_version(f"{flag_topic}-value")  # the worker registered its subject
    assert latest.schema_id == int.from_bytes(raw[1:5], "big")
    # finscore's own readers still decode it, given the registry
    assert Codec("fraud_flag", registry=registry_url).decode(raw)["transaction_id"] == "e2e-1"


def test_the_registry_refuses_an_incompatible_flag_schema(registry_url) -> None:  # noqa: ANN001
    """Subjects are real: under the registry's BACKWARD rule (Confluent's default), a flag schema that adds
    a field without a default cannot follow the one a worker registered."""
    from finscore.schemas.exceptions import EncodeError

    subject = f"e2e-compat-{time.monotonic_ns()}-value"
    Codec("fraud_flag", registry=registry_url, subject=subject).schema_id()
    changed = load_schema("fraud_flag")
    changed["fields"].append({"name": "required_new", "type": "string"})
    with pytest.raises(EncodeError, match="cannot register"):
        Codec(
            "fraud_flag", registry=registry_url, subject=subject, reader_schema=changed
        ).schema_id()

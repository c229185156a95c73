"""Every schema round-trips in every encoding, and independent readers agree with our bytes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import avro.io
import avro.schema
import fastavro
import pytest

from finscore.schemas import SCHEMA_NAMES, Codec, load_schema, sample
from finscore.schemas.codec import fingerprint, schema_path
from finscore.schemas.json_form import epoch


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@pytest.mark.parametrize("encoding", ["avro", "json"])
def test_round_trip(name: str, encoding: str) -> None:
    codec = Codec(name)
    for i in range(4):
        record = sample(name, i)
        assert codec.decode(codec.encode(record, encoding)) == record


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_round_trip_confluent(name: str, registry_client, registry_server) -> None:
    producer = Codec(name, registry=registry_client())
    consumer = Codec(name, registry=registry_client())  # own client cache: really fetches by id
    data = producer.encode(sample(name, 3), "confluent")
    assert data[:1] == b"\x00"
    assert int.from_bytes(data[1:5], "big") == producer.schema_id()
    assert consumer.decode(data) == sample(name, 3)
    assert ("GET", f"/schemas/ids/{producer.schema_id()}") in registry_server.state.requests


def test_confluent_registry_given_as_url(registry_client, registry_server) -> None:
    codec = Codec("transaction", registry=registry_server.url)
    data = codec.encode(sample("transaction", 1), "confluent")
    assert Codec("transaction", registry=registry_server.url).decode(data) == sample(
        "transaction", 1
    )


def test_decoded_values_follow_the_conventions() -> None:
    codec = Codec("fraud_label")
    rec = codec.decode(codec.encode(sample("fraud_label", 13)))
    assert type(rec["tx_time"]) is int and type(rec["amount"]) is Decimal
    assert rec["amount"].as_tuple().exponent == -2
    tick = Codec("market_tick")
    t = tick.decode(tick.encode(sample("market_tick", 3)))
    assert type(t["event_time"]) is int and t["trades"][0]["side"] == "BUY"
    update = Codec("model_update")
    assert type(update.decode(update.encode(sample("model_update")))["artifact"]) is bytes


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fastavro_alone_reads_our_single_object_bytes(name: str) -> None:
    """An independent Avro reader decodes what we write: plain fastavro with the .avsc file."""
    with open(schema_path(name)) as f:
        avsc = json.load(f)
    record = sample(name, 6)
    data = Codec(name).encode(record)
    assert data[:2] == b"\xc3\x01" and data[2:10] == fingerprint(name)
    read = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(avsc))
    for field in avsc["fields"]:  # fastavro's logical types give datetimes: compare instants
        logical = field["type"].get("logicalType") if isinstance(field["type"], dict) else None
        if logical in ("timestamp-millis", "timestamp-micros"):
            assert isinstance(read[field["name"]], datetime)
            read[field["name"]] = epoch(read[field["name"]], logical)
        items = field["type"].get("items") if isinstance(field["type"], dict) else None
        logical = items.get("logicalType") if isinstance(items, dict) else None
        if logical in ("timestamp-millis", "timestamp-micros"):  # an array of instants
            read[field["name"]] = [epoch(v, logical) for v in read[field["name"]]]
    assert read == record


@pytest.mark.parametrize("name", ["transaction", "market_tick", "dead_letter"])
def test_avro_reference_library_reads_our_bytes(name: str) -> None:
    """The Apache ``avro`` package (a second, unrelated implementation) reads our body too."""
    schema = avro.schema.parse(_without_logical_types(load_schema(name)))
    record = sample(name, 2)
    data = Codec(name).encode(record)
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    if name == "transaction":
        assert (
            Decimal(int.from_bytes(decoded.pop("amount"), "big", signed=True)).scaleb(-2)
            == (record["amount"])
        )
        record = {k: v for k, v in record.items() if k != "amount"}
    assert decoded == record


def _without_logical_types(schema):
    def strip(s):
        if isinstance(s, dict):
            return {
                k: strip(v) for k, v in s.items() if k not in ("logicalType", "precision", "scale")
            }
        if isinstance(s, list):
            return [strip(v) for v in s]
        return s

    return json.dumps(strip(schema))


def test_encode_accepts_datetimes_and_loose_decimals() -> None:
    codec = Codec("transaction")
    base = sample("transaction")
    when = datetime(2025, 1, 1, 0, 0, 1, 250_000, tzinfo=UTC)
    for amount, want in [
        (12, "12.00"),
        (12.5, "12.50"),
        ("7.125", "7.12"),
        (Decimal("3.1"), "3.10"),
    ]:
        rec = codec.decode(codec.encode(dict(base, event_time=when, amount=amount)))
        assert rec["event_time"] == 1_735_689_601_250
        assert rec["amount"] == Decimal(want) and str(rec["amount"]) == want
    naive = datetime(2025, 1, 1, 0, 0, 1, 250_000)  # naive = UTC
    assert (
        codec.decode(codec.encode(dict(base, event_time=naive)))["event_time"] == 1_735_689_601_250
    )
    tick = Codec("market_tick")
    rec = tick.decode(
        tick.encode(dict(sample("market_tick"), event_time=when.replace(microsecond=7)))
    )
    assert rec["event_time"] == 1_735_689_601_000_007


def test_batch_helpers_match_single_calls() -> None:
    codec = Codec("market_tick")
    records = [sample("market_tick", i) for i in range(20)]
    blobs = codec.encode_many(records)
    assert blobs == [codec.encode(r) for r in records]
    assert codec.decode_many(blobs) == records
    assert codec.decode_many(codec.encode_many(records, "json")) == records

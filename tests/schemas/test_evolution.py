"""Schema evolution both ways: a newer writer read by an older reader, and the reverse."""

from __future__ import annotations

import pytest

from finscore.schemas import Codec, DecodeError, load_schema, sample


def transaction_v2() -> dict:
    """transaction + a defaulted ``channel`` field (a compatible newer version)."""
    schema = load_schema("transaction")
    schema["fields"].append(
        {
            "name": "channel",
            "type": {"type": "enum", "name": "Channel", "symbols": ["POS", "WEB"]},
            "default": "POS",
            "doc": "Where the card was used.",
        }
    )
    return schema


def test_newer_writer_read_by_older_reader_single_object() -> None:
    new = Codec("transaction", reader_schema=transaction_v2())
    data = new.encode(dict(sample("transaction", 5), channel="WEB"))
    old = Codec("transaction", writer_schemas=[transaction_v2()])
    assert old.decode(data) == sample("transaction", 5)  # channel dropped


def test_older_writer_read_by_newer_reader_single_object() -> None:
    data = Codec("transaction").encode(sample("transaction", 5))
    new = Codec(
        "transaction", reader_schema=transaction_v2(), writer_schemas=[load_schema("transaction")]
    )
    assert new.decode(data) == dict(sample("transaction", 5), channel="POS")  # default filled


def test_single_object_from_an_unknown_version_is_a_decode_error() -> None:
    data = Codec("transaction", reader_schema=transaction_v2()).encode(
        dict(sample("transaction"), channel="WEB")
    )
    with pytest.raises(DecodeError) as err:
        Codec("transaction").decode(data, topic="transactions", partition=0, offset=9)
    assert "unknown writer schema fingerprint" in err.value.reason
    assert "transactions[0]@9" in str(err.value) and "Confluent" in err.value.hint


def test_register_writer_later() -> None:
    data = Codec("transaction", reader_schema=transaction_v2()).encode(
        dict(sample("transaction"), channel="WEB")
    )
    old = Codec("transaction")
    fp = old.register_writer(transaction_v2())
    assert fp == data[2:10] and fp in old.known_fingerprints
    assert old.decode(data) == sample("transaction")


def test_json_both_ways() -> None:
    newer_json = Codec("transaction", reader_schema=transaction_v2()).encode(
        dict(sample("transaction", 2), channel="WEB"), "json"
    )
    assert b'"channel":"WEB"' in newer_json
    assert Codec("transaction").decode(newer_json) == sample("transaction", 2)  # extra ignored
    older_json = Codec("transaction").encode(sample("transaction", 2), "json")
    new = Codec("transaction", reader_schema=transaction_v2())
    assert new.decode(older_json) == dict(sample("transaction", 2), channel="POS")  # default


def test_confluent_both_ways(registry_client) -> None:
    """Producers evolving on their own: the schema id in each message is enough."""
    new_producer = Codec("transaction", registry=registry_client(), reader_schema=transaction_v2())
    old_producer = Codec("transaction", registry=registry_client())
    new_bytes = new_producer.encode(dict(sample("transaction", 8), channel="WEB"), "confluent")
    old_bytes = old_producer.encode(sample("transaction", 8), "confluent")
    assert new_bytes[1:5] != old_bytes[1:5]
    old_reader = Codec("transaction", registry=registry_client())  # never told about v2
    assert old_reader.decode(new_bytes) == sample("transaction", 8)
    new_reader = Codec("transaction", registry=registry_client(), reader_schema=transaction_v2())
    assert new_reader.decode(old_bytes) == dict(sample("transaction", 8), channel="POS")
    assert new_reader.decode(new_bytes) == dict(sample("transaction", 8), channel="WEB")


def test_incompatible_writer_is_a_decode_error() -> None:
    """A writer that dropped a field the reader needs (no default) cannot be resolved."""
    schema = load_schema("transaction")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "terminal_id"]
    rec = {k: v for k, v in sample("transaction").items() if k != "terminal_id"}
    data = Codec("transaction", reader_schema=schema).encode(rec)
    with pytest.raises(DecodeError, match="transactions"):
        Codec("transaction", writer_schemas=[schema]).decode(
            data, topic="transactions", partition=1, offset=2
        )

"""The JSON encoding people type into kcat, and the JSON that ``finscore tail`` prints."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from finscore.schemas import Codec, sample, to_jsonable

TX = {"transaction_id": "tx-1", "customer_id": "c1", "terminal_id": "t1", "amount": "12.5"}


def _tx(**fields) -> bytes:
    return json.dumps({**TX, **fields}).encode()


@pytest.mark.parametrize(
    ("when", "ms"),
    [
        ("2025-01-01T00:00:01.250Z", 1_735_689_601_250),
        ("2025-01-01T01:00:01.250+01:00", 1_735_689_601_250),
        ("2025-01-01T00:00:01.250", 1_735_689_601_250),  # naive = UTC
        ("2025-01-01 00:00:01.25", 1_735_689_601_250),
        (1_735_689_601_250, 1_735_689_601_250),  # epoch ms
    ],
)
def test_timestamps_millis(when, ms: int) -> None:
    assert Codec("transaction").decode(_tx(event_time=when))["event_time"] == ms


def test_timestamps_micros_and_iso_output() -> None:
    codec = Codec("market_tick")
    doc = json.loads(codec.encode(sample("market_tick", 5), "json"))
    assert doc["event_time"] == "2025-01-01T00:00:05.000005Z"
    doc["event_time"] = "2025-01-01T00:00:05.000005+00:00"
    assert codec.decode(json.dumps(doc).encode())["event_time"] == 1_735_689_605_000_005
    doc["event_time"] = 1_735_689_605_000_005  # epoch µs
    assert codec.decode(json.dumps(doc).encode()) == sample("market_tick", 5)


def test_human_friendly_input() -> None:
    rec = Codec("transaction").decode(b"  \n" + _tx(transaction_id=42, amount=7.1, event_time=0))
    assert rec == {
        "transaction_id": "42",  # a number for an id: accepted, as its text
        "event_time": 0,
        "customer_id": "c1",
        "terminal_id": "t1",
        "amount": Decimal("7.10"),
        "currency": "EUR",  # default filled
    }
    assert Codec("transaction").decode(_tx(event_time=0, amount="3.14159"))["amount"] == Decimal(
        "3.14"
    )


def test_unions_bytes_and_defaults() -> None:
    codec = Codec("model_update")
    doc = json.loads(codec.encode(sample("model_update"), "json"))
    assert (
        doc["artifact"] == base64.b64encode(b"\x08\x01onnx").decode() and doc["signature"] is None
    )
    doc["signature"] = base64.b64encode(b"sig").decode()
    del doc["canary_share"]
    rec = codec.decode(json.dumps(doc).encode())
    assert rec["signature"] == b"sig" and rec["canary_share"] == 0.0
    label = Codec("fraud_label")
    assert label.decode(label.encode(sample("fraud_label", 13), "json"))["scenario"] == 2
    assert json.loads(label.encode(sample("fraud_label", 1), "json"))["scenario"] is None


def test_to_jsonable_is_what_json_encoding_writes() -> None:
    for name in ("transaction", "fraud_flag", "dead_letter", "market_tick"):
        record = sample(name, 7)
        doc = to_jsonable(record, name)
        assert json.loads(Codec(name).encode(record, "json")) == doc
        json.dumps(doc)  # serialisable as is
    doc = to_jsonable(sample("transaction", 7), "transaction")
    assert doc["amount"] == "164.33" and doc["event_time"] == "2025-01-01T00:00:07.000Z"
    dead = to_jsonable(sample("dead_letter"), "dead_letter")
    assert base64.b64decode(dead["value"]) == b"\x00garbage"

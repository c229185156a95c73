"""Bad input is always a DecodeError that says what is wrong and where the record was."""

from __future__ import annotations

import pytest

from finscore.schemas import Codec, DecodeError, EncodeError, sample

WHERE = {"topic": "transactions", "partition": 3, "offset": 1234}


def _decode_error(data: bytes, schema: str = "transaction") -> DecodeError:
    with pytest.raises(DecodeError) as err:
        Codec(schema).decode(data, **WHERE)
    error = err.value
    assert (error.topic, error.partition, error.offset) == ("transactions", 3, 1234)
    assert "transactions[3]@1234" in str(error)
    return error


GOOD = Codec("transaction").encode(sample("transaction"))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe garbage", b"hello", b"\x01\x02\x03", bytes(range(1, 256)), b"   ", b"[1, 2]"],
)
def test_garbage(data: bytes) -> None:
    error = _decode_error(data)
    assert "not Avro single-object, Confluent wire format or JSON" in error.reason


@pytest.mark.parametrize("cut", [10, 11, 15, len(GOOD) - 1])
def test_truncated_avro(cut: int) -> None:
    error = _decode_error(GOOD[:cut])
    assert error.encoding == "avro" and "Avro body" in error.reason


def test_truncated_headers() -> None:
    assert "header" in _decode_error(GOOD[:6]).reason
    assert "header" in _decode_error(b"\x00\x00\x01").reason


def test_trailing_bytes() -> None:
    assert "trailing bytes" in _decode_error(GOOD + b"\x00\x00").reason


def test_body_of_another_schema() -> None:
    """A market tick body behind a transaction header does not pass as a transaction."""
    tick = Codec("market_tick").encode(sample("market_tick", 1))
    _decode_error(GOOD[:10] + tick[10:])


def test_unknown_fingerprint() -> None:
    error = _decode_error(b"\xc3\x01" + b"\x12" * 8 + GOOD[10:])
    assert "unknown writer schema fingerprint 1212121212121212" in error.reason


def test_confluent_without_registry() -> None:
    error = _decode_error(b"\x00\x00\x00\x00\x07" + GOOD[10:])
    assert error.encoding == "confluent" and "no schema registry" in error.reason
    assert error.hint


def test_confluent_unknown_id(registry_client) -> None:
    with pytest.raises(DecodeError, match="schema id 999") as err:
        Codec("transaction", registry=registry_client()).decode(
            b"\x00\x00\x00\x03\xe7" + GOOD[10:], **WHERE
        )
    assert err.value.offset == 1234


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b'{"transaction_id": "x",', "invalid JSON"),
        (b"{not json}", "invalid JSON"),
        (b'{"transaction_id": "x"}', "missing required field Transaction.event_time"),
        (
            b'{"transaction_id":"x","event_time":"yesterday","customer_id":"c","terminal_id":"t",'
            b'"amount":"1"}',
            "Transaction.event_time",
        ),
        (
            b'{"transaction_id":"x","event_time":1,"customer_id":"c","terminal_id":"t",'
            b'"amount":"ten"}',
            "Transaction.amount",
        ),
        (
            b'{"transaction_id":"x","event_time":1,"customer_id":null,"terminal_id":"t",'
            b'"amount":"1"}',
            "Transaction.customer_id",
        ),
        (
            b'{"transaction_id":"x","event_time":1.5,"customer_id":"c","terminal_id":"t",'
            b'"amount":"1"}',
            "Transaction.event_time",
        ),
        (
            b'{"transaction_id":"x","event_time":1,"customer_id":"c","terminal_id":"t",'
            b'"amount":"-99999999999.99"}',
            "exceeds decimal precision 12",
        ),
        (
            b'{"transaction_id":"x","event_time":1,"customer_id":"c","terminal_id":"t",'
            b'"amount":"1e1000000"}',
            "Transaction.amount",
        ),
        (
            b'{"transaction_id":"x","event_time":1,"customer_id":"c","terminal_id":"t",'
            b'"amount":"NaN"}',
            "Transaction.amount",
        ),
    ],
)
def test_bad_json(text: bytes, says: str) -> None:
    error = _decode_error(text)
    assert error.encoding == "json" and says in error.reason


def test_schema_invalid_json() -> None:
    """Values that convert but break the schema (an int out of range) fail validation."""
    bad = (
        Codec("fraud_flag")
        .encode(sample("fraud_flag"), "json")
        .replace(b'"source_partition":0', b'"source_partition":99999999999')
    )
    assert b"99999999999" in bad
    error = _decode_error(bad, "fraud_flag")
    assert "schema-invalid JSON" in error.reason


def test_unknown_enum_symbol_in_json() -> None:
    text = (
        Codec("price_signal")
        .encode(sample("price_signal"), "json")
        .replace(b'"FLAT"', b'"SIDEWAYS"')
    )
    assert "PriceSignal.signal" in _decode_error(text, "price_signal").reason
    tick = (
        Codec("market_tick").encode(sample("market_tick", 0), "json").replace(b'"BUY"', b'"HOLD"')
    )
    assert "MarketTick.trades[0].side" in _decode_error(tick, "market_tick").reason


def test_unlocated_errors_and_at() -> None:
    with pytest.raises(DecodeError) as err:
        Codec("transaction").decode(b"junk")
    assert err.value.topic is None and " at " not in str(err.value)
    located = err.value.at("t", 0, 5)
    assert isinstance(located, DecodeError) and "t[0]@5" in str(located)
    assert located.reason == err.value.reason and err.value.offset is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"amount": "-99999999999.99"}, "precision"),
        ({"amount": float("nan")}, "finite"),
        ({"amount": "ten"}, "decimal"),
        ({"customer_id": None}, "does not fit"),
        ({"event_time": "2025-01-01"}, "does not fit"),
    ],
)
def test_encode_errors(change: dict, says: str) -> None:
    codec = Codec("transaction")
    for encoding in ("avro", "json"):
        with pytest.raises(EncodeError, match=says):
            codec.encode(dict(sample("transaction"), **change), encoding)


def test_confluent_encode_without_registry() -> None:
    with pytest.raises(EncodeError, match="schema registry"):
        Codec("transaction").encode(sample("transaction"), "confluent")
    with pytest.raises(EncodeError, match="unknown encoding"):
        Codec("transaction").encode(sample("transaction"), "xml")

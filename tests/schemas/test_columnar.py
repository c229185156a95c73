"""The columnar codec agrees with the per-record Codec: same records, same bytes, same rejects.

Random records come from a seeded generator (hypothesis is not installed here) that covers
empty and non-ASCII strings, negative and extreme longs, negative decimals, 0..10 book levels,
0..n trades and every enum symbol.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from finscore.schemas import Codec, DecodeError, EncodeError, sample
from finscore.schemas.columnar import write as columnar_write
from finscore.schemas.columnar.codec import ArrayColumn, ColumnarCodec, Unscaled
from finscore.schemas.samples import BASE_MS

ALPHABET = list("abcXYZ019-_ ") + ["é", "€", "日本", "😀", "\u0000", "ß"]
LONG_EDGES = [0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**55, -(2**55) - 1,
              2**62, 2**63 - 1, -(2**63)]  # fmt: skip
DECIMAL_EDGES = [0, 1, -1, 127, 128, -128, -129, 255, -256, 32767, -32768, 10**12 - 1,
                 -(10**12) + 1]  # fmt: skip


class Gen:
    """Seeded random values of every kind the schemas use."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def text(self) -> str:
        n = int(self.rng.integers(0, 13))
        return "".join(ALPHABET[int(k)] for k in self.rng.integers(0, len(ALPHABET), n))

    def long(self) -> int:
        if self.rng.random() < 0.3:
            return LONG_EDGES[int(self.rng.integers(len(LONG_EDGES)))]
        bits = int(self.rng.integers(1, 63))
        return int(self.rng.integers(-(2**bits), 2**bits))

    def int32(self) -> int:
        return int(self.rng.integers(-(2**31), 2**31))

    def double(self, *, finite: bool = True) -> float:
        edges = [0.0, -0.0, 1e308, -1e-308, 5e-324, 100.005]
        if not finite:
            edges += [math.inf, -math.inf, math.nan]
        if self.rng.random() < 0.2:
            return edges[int(self.rng.integers(len(edges)))]
        return float(self.rng.normal() * 10 ** int(self.rng.integers(-5, 8)))

    def amount(self) -> Decimal:
        if self.rng.random() < 0.4:
            u = DECIMAL_EDGES[int(self.rng.integers(len(DECIMAL_EDGES)))]
        else:
            u = int(self.rng.integers(-(10**12) + 1, 10**12))
        return Decimal(u).scaleb(-2)

    def pick(self, options: tuple | list):
        return options[int(self.rng.integers(len(options)))]

    def levels(self, n: int, *, finite: bool = True) -> list[dict]:
        return [{"price": self.double(finite=finite), "size": self.long()} for _ in range(n)]

    def record(self, name: str, *, finite: bool = True) -> dict:
        g = self
        if name == "transaction":
            return {"transaction_id": g.text(), "event_time": g.long(), "customer_id": g.text(),
                    "terminal_id": g.text(), "amount": g.amount(), "currency": g.text()}  # fmt: skip
        if name == "fraud_label":
            return {"transaction_id": g.text(), "customer_id": g.text(), "terminal_id": g.text(),
                    "tx_time": g.long(), "label_time": g.long(), "is_fraud": bool(g.rng.random() < .5),
                    "amount": g.amount(),
                    "scenario": None if g.rng.random() < 0.5 else g.int32()}  # fmt: skip
        if name == "market_tick":
            return {
                "instrument": g.text(),
                "event_time": g.long(),
                "sequence": g.long(),
                "bids": g.levels(int(g.rng.integers(0, 11)), finite=finite),
                "asks": g.levels(int(g.rng.integers(0, 11)), finite=finite),
                "trades": [
                    {"price": g.double(finite=finite), "size": g.long(), "side": g.pick(("BUY", "SELL"))}
                    for _ in range(int(g.rng.integers(0, 4)))
                ],
            }  # fmt: skip
        if name == "fraud_flag":
            return {
                "transaction_id": g.text(), "customer_id": g.text(), "terminal_id": g.text(),
                "score": g.double(finite=finite), "flagged": bool(g.rng.random() < 0.5),
                "threshold": g.double(finite=finite), "model_name": g.text(),
                "model_version": g.text(), "event_time": g.long(), "processing_time": g.long(),
                "source_topic": g.text(), "source_partition": g.int32(), "source_offset": g.long(),
                "top_features": [
                    {"feature": g.text(), "value": g.double(finite=finite),
                     "contribution": g.double(finite=finite)}
                    for _ in range(int(g.rng.integers(0, 4)))
                ],
            }  # fmt: skip
        if name == "price_signal":
            return {
                "instrument": g.text(), "sequence": g.long(), "horizon": g.int32(),
                "prob_down": g.double(finite=finite), "prob_flat": g.double(finite=finite),
                "prob_up": g.double(finite=finite), "signal": g.pick(("DOWN", "FLAT", "UP")),
                "mid_price": g.double(finite=finite), "model_name": g.text(),
                "model_version": g.text(), "event_time": g.long(), "processing_time": g.long(),
                "source_topic": g.text(), "source_partition": g.int32(), "source_offset": g.long(),
            }  # fmt: skip
        raise AssertionError(name)


DECODED = ("transaction", "market_tick", "fraud_label", "fraud_flag", "price_signal")
ENCODED = ("fraud_flag", "price_signal", "transaction", "fraud_label", "market_tick")


def columns_of(codec: ColumnarCodec, records: list[dict]) -> dict:
    return {f.name: [r[f.name] for r in records] for f in codec.fields}


@pytest.mark.parametrize("name", DECODED)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_equals_the_record_codec(name: str, seed: int) -> None:
    codec, cc, g = Codec(name), ColumnarCodec(name), Gen(seed)
    records = [g.record(name) for _ in range(300)]
    blobs = [codec.encode(r) for r in records]
    batch = cc.decode(blobs)
    assert batch.rest == [] and batch.ok.tolist() == list(range(len(blobs)))
    assert batch.records() == [codec.decode(b) for b in blobs]


def test_columns_have_the_documented_representations() -> None:
    codec, cc, g = Codec("market_tick"), ColumnarCodec("market_tick"), Gen(7)
    records = [g.record("market_tick") for _ in range(200)]
    batch = cc.decode([codec.encode(r) for r in records])
    assert batch["instrument"] == [r["instrument"] for r in records]
    assert batch["sequence"].dtype == np.int64
    assert batch["sequence"].tolist() == [r["sequence"] for r in records]
    bids: ArrayColumn = batch["bids"]
    assert bids.counts.tolist() == [len(r["bids"]) for r in records]
    assert bids["price"].dtype == np.float64
    assert bids["price"].tolist() == [lv["price"] for r in records for lv in r["bids"]]
    dense = bids.dense("size", 10, fill=-7)
    for i, r in enumerate(records):
        want = [lv["size"] for lv in r["bids"]] + [-7] * (10 - len(r["bids"]))
        assert dense[i].tolist() == want
    trades = batch["trades"]
    sides = [t["side"] for r in records for t in r["trades"]]
    assert [batch.symbols["trades.side"][k] for k in trades["side"]] == sides
    start, length = batch.spans["instrument"]
    assert [batch.buffer[a : a + n].decode() for a, n in zip(start, length, strict=True)] == [
        r["instrument"] for r in records
    ]


def test_decimals_are_unscaled_int64_and_unions_have_null_masks() -> None:
    codec, cc, g = Codec("fraud_label"), ColumnarCodec("fraud_label"), Gen(3)
    records = [g.record("fraud_label") for _ in range(200)]
    batch = cc.decode([codec.encode(r) for r in records])
    assert batch.scales == {"amount": 2}
    assert batch["amount"].dtype == np.int64
    assert batch["amount"].tolist() == [int(r["amount"].scaleb(2)) for r in records]
    assert batch.nulls["scenario"].tolist() == [r["scenario"] is None for r in records]
    assert batch["is_fraud"].dtype == np.bool_


def _malformed(name: str, good: list[bytes], rng: np.random.Generator) -> list[bytes | None]:
    """Every kind of input the fast path must leave to Codec.decode."""
    codec = Codec(name)
    header = good[0][:10]
    other = "market_tick" if name != "market_tick" else "transaction"
    bad: list[bytes | None] = [None, b"", b"\xc3", header, header[:9], b"{}", b"  {\"x\": 1}",
                               b"\x00\x00\x00\x00\x07" + good[0][10:], b"\xc3\x01" + b"\x12" * 8 + good[0][10:],
                               b"\xc4\x01" + good[0][2:], header + Codec(other).encode(sample(other))[10:],
                               header + b"\xff" * 12, header + b"\x80" * 11 + b"\x00"]  # fmt: skip
    bad.append(codec.encode(sample(name), "json"))
    for blob in good[:40]:
        bad.append(blob + b"\x00")
        bad.append(blob[: int(rng.integers(10, len(blob)))])
        flipped = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(10, len(blob)))
            flipped[k] ^= 1 << int(rng.integers(8))
        bad.append(bytes(flipped))
        bad.append(
            blob[:10] + bytes(rng.integers(0, 256, int(rng.integers(0, 60)), dtype=np.uint8))
        )
    return bad


@pytest.mark.parametrize("name", DECODED)
def test_anything_odd_lands_in_rest_and_never_raises(name: str) -> None:
    codec, cc, g = Codec(name), ColumnarCodec(name), Gen(11)
    rng = np.random.default_rng(5)
    good = [codec.encode(g.record(name)) for _ in range(200)]
    values = good + _malformed(name, good, rng)
    order = rng.permutation(len(values))
    values = [values[i] for i in order]
    batch = cc.decode(values)
    assert sorted(batch.ok.tolist() + batch.rest) == list(range(len(values)))
    assert batch.rest == sorted(batch.rest)
    for j, i in enumerate(batch.ok.tolist()):  # accepted: exactly what Codec reads
        assert batch.record(j) == codec.decode(values[i])
    goods = set(good)
    rest = set(batch.rest)
    assert all(i not in rest for i, v in enumerate(values) if v in goods)
    for i in batch.rest:  # every reject Codec also rejects (the worker's dead letters)
        v = values[i]
        if v is None or v in goods:
            continue
        try:
            codec.decode(v)
        except DecodeError:
            continue
        # Codec may accept what the fast path leaves to it (e.g. a decimal it rounds): fine.


def test_strings_that_are_not_utf8_go_to_rest() -> None:
    codec, cc = Codec("transaction"), ColumnarCodec("transaction")
    good = codec.encode(sample("transaction"))
    body = bytearray(good)
    body[11] = 0xFF  # first byte of transaction_id ("tx-0")
    batch = cc.decode([good, bytes(body), good])
    assert batch.ok.tolist() == [0, 2] and batch.rest == [1]
    with pytest.raises(DecodeError):
        codec.decode(bytes(body))


def test_empty_batches() -> None:
    cc = ColumnarCodec("market_tick")
    batch = cc.decode([])
    assert len(batch) == 0 and batch.rest == [] and batch["bids"].counts.tolist() == []
    assert cc.decode([None, None]).rest == [0, 1]
    assert ColumnarCodec("price_signal").encode(0, {}) == []


@pytest.mark.parametrize("name", ENCODED)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("groups", [0, 48, 10**6])  # always gather / default / always group
def test_encode_is_byte_identical(
    name: str, seed: int, groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columnar_write, "MAX_GROUPS", groups)
    codec, cc, g = Codec(name), ColumnarCodec(name), Gen(100 + seed)
    records = [g.record(name, finite=False) for _ in range(300)]
    assert cc.encode(len(records), columns_of(cc, records)) == [codec.encode(r) for r in records]
    flat, bounds = cc.encode_flat(len(records), columns_of(cc, records))
    assert flat.tobytes() == b"".join(codec.encode(r) for r in records)
    assert np.diff(bounds).tolist() == [len(codec.encode(r)) for r in records]


def test_encode_with_a_few_row_layouts() -> None:
    """Rows grouped by layout (string and varint lengths) come back in input order."""
    codec, cc, g = Codec("price_signal"), ColumnarCodec("price_signal"), Gen(8)
    records = [g.record("price_signal") for _ in range(500)]
    for i, r in enumerate(records):
        r.update(instrument=("A", "BB", "CCCC")[i % 3], sequence=60 + i, source_offset=8190 + i)
    assert cc.encode(500, columns_of(cc, records)) == [codec.encode(r) for r in records]


def test_encode_broadcasts_scalars_and_takes_arrays() -> None:
    codec, cc, g = Codec("price_signal"), ColumnarCodec("price_signal"), Gen(4)
    records = [g.record("price_signal") for _ in range(100)]
    for r in records:
        r.update(model_name="market", model_version="7", horizon=10, source_topic="market-ticks",
                 processing_time=BASE_MS)  # fmt: skip
    cols = {
        "instrument": [r["instrument"] for r in records],
        "sequence": np.array([r["sequence"] for r in records]),
        "horizon": 10,
        "prob_down": np.array([r["prob_down"] for r in records]),
        "prob_flat": np.array([r["prob_flat"] for r in records]),
        "prob_up": np.array([r["prob_up"] for r in records]),
        "signal": np.array([("DOWN", "FLAT", "UP").index(r["signal"]) for r in records]),
        "mid_price": np.array([r["mid_price"] for r in records]),
        "model_name": "market",
        "model_version": "7",
        "event_time": np.array([r["event_time"] for r in records]),
        "processing_time": BASE_MS,
        "source_topic": "market-ticks",
        "source_partition": np.array([r["source_partition"] for r in records], dtype=np.int32),
        "source_offset": np.array([r["source_offset"] for r in records]),
    }
    assert cc.encode(100, cols) == [codec.encode(r) for r in records]


def test_fraud_flags_with_and_without_top_features() -> None:
    codec, cc, g = Codec("fraud_flag"), ColumnarCodec("fraud_flag"), Gen(9)
    records = [g.record("fraud_flag") for _ in range(100)]
    cols = columns_of(cc, records)
    tops = [r["top_features"] for r in records]
    cols["top_features"] = ArrayColumn(
        np.array([len(t) for t in tops]),
        {
            "feature": [c["feature"] for t in tops for c in t],
            "value": np.array([c["value"] for t in tops for c in t]),
            "contribution": np.array([c["contribution"] for t in tops for c in t]),
        },
    )
    assert cc.encode(100, cols) == [codec.encode(r) for r in records]
    del cols["top_features"]  # the schema default: []
    assert cc.encode(100, cols) == [codec.encode(dict(r, top_features=[])) for r in records]


def test_decimals_encode_from_unscaled_and_from_values() -> None:
    codec, cc, g = Codec("transaction"), ColumnarCodec("transaction"), Gen(6)
    records = [g.record("transaction") for _ in range(200)]
    cols = columns_of(cc, records)
    want = [codec.encode(r) for r in records]
    assert cc.encode(200, cols) == want
    cols["amount"] = Unscaled(np.array([int(r["amount"].scaleb(2)) for r in records]))
    assert cc.encode(200, cols) == want
    cols["amount"] = [str(r["amount"]) for r in records]
    assert cc.encode(200, cols) == want


@pytest.mark.parametrize(
    "change",
    [
        {"signal": ["SIDEWAYS"]},
        {"signal": np.array([3])},
        {"sequence": ["x"]},
        {"instrument": [7]},
        {"mid_price": [1.0, 2.0]},
    ],
)
def test_encode_errors(change: dict) -> None:
    cc = ColumnarCodec("price_signal")
    cols = dict(sample("price_signal"))
    cols.update(change)
    with pytest.raises(EncodeError):
        cc.encode(1, cols)


def test_missing_field_without_default() -> None:
    cols = dict(sample("price_signal"))
    del cols["instrument"]
    with pytest.raises(EncodeError, match="instrument"):
        ColumnarCodec("price_signal").encode(1, cols)
    with pytest.raises(EncodeError):
        ColumnarCodec("transaction").encode(1, dict(sample("transaction"), amount=Decimal("1e15")))

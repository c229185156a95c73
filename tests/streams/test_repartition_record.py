"""The repartition record (cards stage → terminals stage): bit-exact round trips, routing by
terminal, and every malformed record refused with :class:`RepartitionRecordError` (pure, no
broker)."""

from __future__ import annotations

import contextlib
import random
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finscore.features.fraud import N_FEATURES
from finscore.streams.fraud.repartition import (
    MAGIC,
    RepartitionRecordError,
    TerminalRows,
    decode_rows,
    encode_rows,
    split_by_partition,
    terminal_partition,
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
IDS = st.text(max_size=24)  # any Unicode, non-ASCII included (no lone surrogates: not UTF-8)


def make_rows(n: int, seed: int = 0, *, topics: list[str] | None = None, f: int = N_FEATURES):
    """``n`` rows of made-up values (some None keys, some non-ASCII ids)."""
    rng = np.random.default_rng(seed)
    ids = [f"T{seed:03d}-{i:012d}-é" if i % 5 == 0 else f"T{seed:03d}-{i:016d}" for i in range(n)]
    return TerminalRows(
        source_topic=topics if topics is not None else ["transactions"] * n,
        source_partition=rng.integers(0, 2**31 - 1, n, dtype=np.int32),
        source_offset=rng.integers(0, 2**63 - 1, n, dtype=np.int64),
        timestamp_ms=rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
        key=[None if i % 7 == 3 else f"c{i}".encode() for i in range(n)],
        transaction_id=ids,
        customer_id=[f"C{i % 13:019d}" for i in range(n)],
        terminal_id=[f"term-{i % 17}-ü" if i % 3 == 0 else f"term-{i % 17}" for i in range(n)],
        event_time=rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
        cents=rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
        below=rng.integers(0, 2, n, dtype=np.int64),
        features=rng.standard_normal((n, f)).astype(np.float32),
    )


def assert_same(a: TerminalRows, b: TerminalRows) -> None:
    """Every column equal, numeric ones bit for bit (NaN payloads included) and typed."""
    for name in ("source_topic", "key", "transaction_id", "customer_id", "terminal_id"):
        assert getattr(a, name) == getattr(b, name), name
    for name, dtype in [
        ("source_partition", np.int32),
        ("source_offset", np.int64),
        ("timestamp_ms", np.int64),
        ("event_time", np.int64),
        ("cents", np.int64),
        ("below", np.int64),
        ("features", np.float32),
    ]:
        x, y = np.asarray(getattr(a, name)), getattr(b, name)
        assert y.dtype == dtype and y.shape == x.shape, name
        assert x.astype(dtype).tobytes() == y.tobytes(), name


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 50, 1000])
def test_round_trip_is_bit_exact(n: int) -> None:
    rows = make_rows(n, seed=n)
    back = decode_rows(encode_rows(rows))
    assert len(back) == n
    assert_same(rows, back)


def test_round_trip_keeps_special_floats_and_mixed_topics() -> None:
    rows = make_rows(6, topics=["transactions", "tx-replay", "transactions", "ß", "", "x"])
    rows.features[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    rows.features[1, 0] = np.frombuffer(b"\x01\x00\xc0\x7f", "<f4")[0]  # NaN with a payload
    rows.key[2] = b""  # an empty key is not None
    assert_same(rows, decode_rows(encode_rows(rows)))


def test_one_source_topic_is_written_once() -> None:
    one, mixed = make_rows(100), make_rows(100, topics=["transactions"] * 99 + ["other"])
    assert len(encode_rows(mixed)) - len(encode_rows(one)) >= 99 * len("transactions")
    assert decode_rows(encode_rows(one)).source_topic == ["transactions"] * 100


def test_decode_copies_out_of_the_record() -> None:
    data = bytearray(encode_rows(make_rows(3)))
    rows = decode_rows(bytes(data))
    assert rows.features.flags.writeable and rows.cents.flags.writeable
    rows.features[:] = 0  # would fail on a read-only view of the record's bytes


def test_features_width_travels_in_the_record() -> None:
    for f in (0, 1, 3):
        assert decode_rows(encode_rows(make_rows(4, f=f))).features.shape == (4, f)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["transactions", "tx-2", "ü"]),
            st.integers(0, 2**31 - 1),
            st.integers(0, 2**63 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.none() | st.binary(max_size=12),
            IDS,
            IDS,
            IDS,
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(0, 1),
            st.lists(st.floats(width=32), min_size=3, max_size=3),
        ),
        max_size=20,
    )
)
def test_generated_rows_round_trip(rows: list[tuple]) -> None:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 12
    t = TerminalRows(
        list(cols[0]),
        np.array(cols[1], np.int32),
        np.array(cols[2], np.int64),
        np.array(cols[3], np.int64),
        list(cols[4]),
        list(cols[5]),
        list(cols[6]),
        list(cols[7]),
        np.array(cols[8], np.int64),
        np.array(cols[9], np.int64),
        np.array(cols[10], np.int64),
        np.array(cols[11], np.float32).reshape(len(rows), 3),
    )
    assert_same(t, decode_rows(encode_rows(t)))


def test_encode_refuses_columns_of_different_lengths() -> None:
    rows = make_rows(3)
    rows.cents = rows.cents[:2]
    with pytest.raises(ValueError):
        encode_rows(rows)


# ---- routing ---------------------------------------------------------------------------------


def test_terminal_partition_is_crc32_mod_n() -> None:
    ids = [f"term-{i}" for i in range(200)] + ["ü", "", "終端"]
    for n in (1, 3, 8, 12):
        expected = [zlib.crc32(t.encode("utf-8")) % n for t in ids]
        assert terminal_partition(ids, n).tolist() == expected
    assert terminal_partition(["T1"], 5).tolist() == [zlib.crc32(b"T1") % 5]  # a fixed value
    with pytest.raises(ValueError):
        terminal_partition(ids, 0)


@pytest.mark.parametrize("partitions", [1, 3, 12, 64])
def test_split_by_partition_covers_each_row_once_in_order(partitions: int) -> None:
    rows = make_rows(300, seed=7)
    rows.source_offset = np.arange(300, dtype=np.int64)  # a row's identity
    groups = split_by_partition(rows, partitions)
    seen: list[int] = []
    for p, part in groups:
        offsets = part.source_offset.tolist()
        assert offsets == sorted(offsets)  # order kept within the partition
        assert set(terminal_partition(part.terminal_id, partitions).tolist()) == {p}
        assert part.features.tobytes() == rows.features[offsets].tobytes()
        assert part.key == [rows.key[i] for i in offsets]
        seen += offsets
    assert sorted(seen) == list(range(300))
    assert [p for p, _ in groups] == sorted({p for p, _ in groups})


def test_split_of_no_rows_is_empty() -> None:
    assert split_by_partition(make_rows(0), 4) == []


# ---- malformed records -----------------------------------------------------------------------


def refused(data: bytes | None) -> None:
    with pytest.raises(RepartitionRecordError):
        decode_rows(data)


def only_refused(data: bytes) -> None:
    """Decodes ``data``; a refusal is fine, any other exception fails the test."""
    with contextlib.suppress(RepartitionRecordError):
        decode_rows(data)


VALID = encode_rows(make_rows(9, seed=3, topics=["a", "b", "a", "ü", "a", "a", "a", "a", "a"]))
VALID_ONE_TOPIC = encode_rows(make_rows(5, seed=4))


def test_every_truncation_is_refused() -> None:
    for valid in (VALID, VALID_ONE_TOPIC, encode_rows(make_rows(0))):
        for size in range(len(valid)):
            refused(valid[:size])


def test_trailing_bytes_and_wrong_magic_are_refused() -> None:
    refused(VALID + b"\x00")
    refused(b"FTR2" + VALID[4:])
    refused(b"")
    refused(MAGIC)
    refused(None)  # type: ignore[arg-type]


def test_forged_counts_fail_fast() -> None:
    header = struct.Struct("<IHH")
    for n, f in [(2**31, N_FEATURES), (2**32 - 1, 2**16 - 1), (1, 2**16 - 1), (10, N_FEATURES)]:
        refused(MAGIC + header.pack(n, f, 0) + VALID[12:])
    # a forged string length, then a forged key length
    rows = make_rows(1, seed=5)
    data = bytearray(encode_rows(rows))
    at = data.index(b"transactions") - 4  # the source topic's length
    forged = data[:at] + struct.pack("<I", 2**32 - 1) + data[at + 4 :]
    refused(bytes(forged))
    key_len_at = len(data) - len(rows.key[0] or b"") - 4
    for bad in (2**31 - 1, -2, -(2**31)):
        refused(bytes(data[:key_len_at] + struct.pack("<i", bad) + data[key_len_at + 4 :]))
    rows.key = [b""]  # a key length below -1 in an otherwise consistent record
    data = bytearray(encode_rows(rows))
    refused(bytes(data[:-4] + struct.pack("<i", -2)))
    assert decode_rows(bytes(data[:-4] + struct.pack("<i", -1))).key == [None]


def test_invalid_fields_are_refused() -> None:
    rows = make_rows(2, seed=6)
    for name, value in [("below", 2), ("source_partition", -1), ("source_offset", -1)]:
        bad = make_rows(2, seed=6)
        getattr(bad, name)[1] = value
        refused(encode_rows(bad))
    for flags in (2, 0x8000):
        data = encode_rows(rows)
        refused(data[:10] + struct.pack("<H", flags | 1) + data[12:])
    refused(MAGIC + struct.pack("<IHH", 0, 0, 1) + b"\x00" * 4)  # one-topic flag, no rows
    bad_utf8 = make_rows(1)
    bad_utf8.transaction_id = ["\xe9\xe9"]  # éé: 4 UTF-8 bytes, patched to invalid ones
    data = encode_rows(bad_utf8)
    refused(data.replace("\xe9\xe9".encode(), b"\xc3\x28ab"))
    refused(data.replace("\xe9\xe9".encode(), b"\xed\xa0\x80a"))  # a lone surrogate
    refused(data.replace("\xe9\xe9".encode(), b"ab\xc3\xa9"[::-1]))  # split sequence


def test_byte_flips_never_escape() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        data = bytearray(rng.choice((VALID, VALID_ONE_TOPIC)))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        only_refused(bytes(data))


def test_random_bytes_are_refused() -> None:
    rng = random.Random(2)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(64))
        refused(rng.choice((b"", MAGIC)) + body if body[:4] != MAGIC else b"x" + body)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([VALID, VALID_ONE_TOPIC]), st.integers(0, 400))
def test_generated_mutations_only_raise_the_record_error(
    noise: bytes, valid: bytes, at: int
) -> None:
    at = min(at, len(valid))
    for data in (noise, MAGIC + noise, valid[:at] + noise, valid[:at] + noise + valid[at:]):
        only_refused(data)

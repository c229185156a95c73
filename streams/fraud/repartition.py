"""Rows the cards stage sends the terminals stage over the repartition topic.

One record holds many rows (:class:`TerminalRows`), columnar, little-endian::

    b"FTR1"  header <IHH: rows n, features F, flags (bit 0: one source topic for all rows)
    int32[n] source_partition   int64[n] source_offset, timestamp_ms, event_time, cents
    uint8[n] below              float32[n*F] features (row-major)
    strings: source_topic (1 entry when flag bit 0, else n), transaction_id, customer_id,
             terminal_id -- each uint32[count] UTF-8 byte lengths, then the concatenated bytes
    keys:    int32[n] lengths (-1: None), then the concatenated bytes

:func:`decode_rows` accepts exactly that and nothing else: every count is checked against the
bytes that remain before anything is allocated, and any malformed record (bad magic, unknown
flags, truncation, trailing bytes, invalid UTF-8, a key length below -1, a negative partition
or offset, a habit flag outside {0, 1}) raises :class:`RepartitionRecordError` with the reason.
Features need not be finite (the terminals stage only passes them on).

Rows are routed by terminal: :func:`terminal_partition` is ``zlib.crc32(utf-8 id) % partitions``,
stable across processes, hosts and Python versions (unlike ``hash``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence, Sized
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAGIC",
    "RepartitionRecordError",
    "TerminalRows",
    "decode_rows",
    "encode_rows",
    "split_by_partition",
    "terminal_partition",
]

MAGIC = b"FTR1"
_HEADER = struct.Struct("<IHH")
_ONE_TOPIC = 1
_INTS = ("source_offset", "timestamp_ms", "event_time", "cents")  # the int64[n] columns
_STRINGS = ("transaction_id", "customer_id", "terminal_id")


class RepartitionRecordError(ValueError):
    """A record on the repartition topic that is not a valid rows record (the reason says what)."""


@dataclass
class TerminalRows:
    """Rows the cards stage hands the terminals stage: where each transaction came from and its
    card features (one entry per row; ``features`` is float32 ``[n, F]``)."""

    source_topic: list[str]
    source_partition: np.ndarray  # int32
    source_offset: np.ndarray  # int64
    timestamp_ms: np.ndarray  # int64: the input record's timestamp
    key: list[bytes | None]  # the input record's key
    transaction_id: list[str]
    customer_id: list[str]
    terminal_id: list[str]
    event_time: np.ndarray  # int64 ms
    cents: np.ndarray  # int64
    below: np.ndarray  # int64 0/1 habit flags
    features: np.ndarray  # float32 [n, F]

    def __len__(self) -> int:
        return len(self.transaction_id)

    def take(self, rows: np.ndarray) -> TerminalRows:
        """The given rows (integer positions), in the given order."""
        r = np.asarray(rows, dtype=np.intp)
        at = r.tolist()
        return TerminalRows(
            [self.source_topic[i] for i in at],
            self.source_partition[r],
            self.source_offset[r],
            self.timestamp_ms[r],
            [self.key[i] for i in at],
            [self.transaction_id[i] for i in at],
            [self.customer_id[i] for i in at],
            [self.terminal_id[i] for i in at],
            self.event_time[r],
            self.cents[r],
            self.below[r],
            self.features[r],
        )


def _strings(values: Sequence[str]) -> bytes:
    joined = "".join(values)
    if joined.isascii():  # one encode for the batch; lengths in characters are lengths in bytes
        lengths, blob = [len(s) for s in values], joined.encode("ascii")
    else:
        encoded = [s.encode("utf-8") for s in values]
        lengths, blob = [len(b) for b in encoded], b"".join(encoded)
    return np.asarray(lengths, dtype="<u4").tobytes() + blob


def encode_rows(rows: TerminalRows) -> bytes:
    """One record holding ``rows`` (see the module docstring for the layout).

    Raises ValueError when the columns disagree in length or a value does not fit its field."""
    n = len(rows)
    feats = np.asarray(rows.features, dtype="<f4")
    f = feats.shape[1] if feats.ndim == 2 else -1
    sized: list[Sized] = [rows.source_topic, rows.key, rows.customer_id, rows.terminal_id]
    sized += [rows.source_partition, rows.below, *(getattr(rows, c) for c in _INTS)]
    if feats.shape != (n, f) or any(len(c) != n for c in sized) or not 0 <= f < 2**16:
        raise ValueError(f"columns disagree with {n} rows and features {feats.shape}")
    one = n > 0 and rows.source_topic.count(rows.source_topic[0]) == n
    keys = [b"" if k is None else k for k in rows.key]
    key_lengths = np.asarray([-1 if k is None else len(k) for k in rows.key], dtype="<i4")
    return b"".join(
        [
            MAGIC,
            _HEADER.pack(n, f, _ONE_TOPIC if one else 0),
            np.asarray(rows.source_partition, dtype="<i4").tobytes(),
            *(np.asarray(getattr(rows, c), dtype="<i8").tobytes() for c in _INTS),
            np.asarray(rows.below, dtype=np.uint8).tobytes(),
            feats.tobytes(),
            _strings(rows.source_topic[:1] if one else rows.source_topic),
            *(_strings(getattr(rows, c)) for c in _STRINGS),
            key_lengths.tobytes(),
            *keys,
        ]
    )


class _Reader:
    """Reads ``data`` front to back, checking each size against the bytes that remain."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int, what: str) -> int:
        """Consumes ``size`` bytes and returns where they start (error when fewer remain)."""
        if size > len(self.data) - self.pos:
            raise RepartitionRecordError(f"truncated: {what} needs {size} bytes")
        start, self.pos = self.pos, self.pos + size
        return start

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """``count`` little-endian values, copied out into a native array."""
        dt = np.dtype(dtype)
        start = self.take(count * dt.itemsize, what)
        return np.frombuffer(self.data, dt, count, start).astype(dt.newbyteorder("="))

    def strings(self, count: int, what: str) -> list[str]:
        """``count`` length-prefixed UTF-8 strings."""
        lengths = self.array("<u4", count, f"{what} lengths").astype(np.int64)
        ends = np.cumsum(lengths)
        total = int(ends[-1]) if count else 0
        blob = self.data[self.take(total, what) : self.pos]
        bounds = zip((ends - lengths).tolist(), ends.tolist(), strict=True)
        if blob.isascii():  # decode once, slice characters
            text = blob.decode("ascii")
            return [text[a:b] for a, b in bounds]
        try:
            return [blob[a:b].decode("utf-8") for a, b in bounds]
        except UnicodeDecodeError as e:
            raise RepartitionRecordError(f"{what}: invalid UTF-8 ({e.reason})") from None

    def keys(self, count: int) -> list[bytes | None]:
        """``count`` keys, each None or bytes."""
        lengths = self.array("<i4", count, "key lengths").astype(np.int64)
        if count and lengths.min() < -1:
            raise RepartitionRecordError("key length below -1")
        sizes = np.maximum(lengths, 0)
        ends = np.cumsum(sizes)
        blob = self.data[self.take(int(ends[-1]) if count else 0, "keys") : self.pos]
        bounds = zip(lengths.tolist(), (ends - sizes).tolist(), ends.tolist(), strict=True)
        return [None if ln < 0 else blob[a:b] for ln, a, b in bounds]


def decode_rows(data: bytes | None) -> TerminalRows:
    """The rows held by one record; raises :class:`RepartitionRecordError` for anything else
    (a None value, a tombstone, included)."""
    if data is None:
        raise RepartitionRecordError("no value (a tombstone)")
    data = bytes(data)
    if data[:4] != MAGIC:
        raise RepartitionRecordError(f"bad magic {data[:4]!r} (expected {MAGIC!r})")
    r = _Reader(data)
    r.take(4, "magic")
    n, f, flags = _HEADER.unpack_from(data, r.take(_HEADER.size, "header"))
    if flags & ~_ONE_TOPIC:
        raise RepartitionRecordError(f"unknown flags {flags:#06x}")
    one = bool(flags & _ONE_TOPIC)
    if one and n == 0:
        raise RepartitionRecordError("one-topic flag on an empty record")
    partition = r.array("<i4", n, "source_partition")
    offset, timestamp, event_time, cents = (r.array("<i8", n, c) for c in _INTS)
    below = r.array("u1", n, "below")
    features = r.array("<f4", n * f, "features").reshape(n, f)
    if n and (partition.min() < 0 or offset.min() < 0):
        raise RepartitionRecordError("negative source partition or offset")
    if n and below.max() > 1:
        raise RepartitionRecordError("habit flag outside {0, 1}")
    topics = r.strings(1 if one else n, "source_topic")
    tx, customer, terminal = (r.strings(n, c) for c in _STRINGS)
    key = r.keys(n)
    if r.pos != len(data):
        raise RepartitionRecordError(f"{len(data) - r.pos} trailing bytes")
    return TerminalRows(
        topics * n if one else topics,
        partition,
        offset,
        timestamp,
        key,
        tx,
        customer,
        terminal,
        event_time,
        cents,
        below.astype(np.int64),
        features,
    )


def terminal_partition(terminal_ids: Sequence[str], partitions: int) -> np.ndarray:
    """The partition of each terminal (int64): ``zlib.crc32(id.encode("utf-8")) % partitions``.

    Stable across processes, hosts and versions, so every cards worker routes a terminal to the
    same terminals partition."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    crc = np.fromiter((zlib.crc32(t.encode("utf-8")) for t in terminal_ids), np.int64)
    return crc % partitions


def split_by_partition(rows: TerminalRows, partitions: int) -> list[tuple[int, TerminalRows]]:
    """Rows grouped by the partition of their terminal (:func:`terminal_partition`), partitions
    ascending, only those with rows, order kept within each."""
    parts = terminal_partition(rows.terminal_id, partitions)
    order = np.argsort(parts, kind="stable")
    cuts = np.flatnonzero(np.diff(parts[order])) + 1
    groups = np.split(order, cuts) if len(order) else []
    return [(int(parts[g[0]]), rows.take(g)) for g in groups]

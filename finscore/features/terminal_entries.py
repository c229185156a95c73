"""Terminal entries: the compact record a fraud worker publishes for the other workers.

Under the ``fraud_reports`` label contract a terminal's transaction counts come from the
transactions themselves, but a worker scores only its own customers' transactions (the input
is keyed by customer) while a terminal is shared by customers of every worker. So each worker
publishes, once per commit interval, one entry per transaction it scored: the terminal, the
event time, the idempotence tag (CRC-32 of the transaction id) and the habit flag (amount within
``habit_ratio`` times the card's 30-day mean, known only to the card's owner). Every worker
reads every such record and inserts the entries into its terminal store; the features read
windows that end ``label_delay`` (7 days) in the past, so a record that arrives seconds or
minutes after its transactions changes no feature: the exchange has a week of slack.

Record (:data:`ENTRIES_MAGIC`), little-endian: magic, key count (uint32), row count (uint32),
the UTF-8 length of each terminal name (uint32), the names, zero padding to 8 bytes, then
columns: times (int64), key index into the names (uint32), tags (uint32), flags (uint8).
Entries are coalesced per terminal (each name once per record): 17 bytes a transaction plus
the names of the terminals that changed in the interval, against an Avro label record
(~60 bytes, decoded and validated per record) per transaction under ``all_outcomes``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from finscore.features.exceptions import FeatureStateError

ENTRIES_MAGIC: Final = b"FTE1"
ROW_BYTES: Final = 17  # int64 time + uint32 key + uint32 tag + uint8 flags


@dataclass(frozen=True)
class TerminalEntries:
    """A decoded record: terminal names and one row per transaction (``key`` indexes names)."""

    names: list[str]
    key: np.ndarray  # int64 index into names
    times: np.ndarray  # int64 ms
    tags: np.ndarray  # int64, 0 <= tag < 2**32
    flags: np.ndarray  # int64 0/1: the amount is within the card's habit

    def __len__(self) -> int:
        return len(self.times)


def encode_entries(
    names: list[str], key: np.ndarray, times: np.ndarray, tags: np.ndarray, flags: np.ndarray
) -> bytes:
    """One record of entries (see the module docstring). ``key`` indexes ``names``; tags must
    fit in 32 bits and flags in 0/1. Raises ValueError when they do not."""
    key = np.asarray(key, dtype=np.int64)
    tags = np.asarray(tags, dtype=np.int64)
    flags = np.asarray(flags, dtype=np.int64)
    n = len(key)
    if not (len(times) == len(tags) == len(flags) == n):
        raise ValueError("entry columns differ in length")
    if n and (key.min() < 0 or key.max() >= len(names)):
        raise ValueError("an entry names no terminal of the record")
    if n and (tags.min() < 0 or tags.max() >= 1 << 32):
        raise ValueError("a tag does not fit in 32 bits")
    if n and (flags.min() < 0 or flags.max() > 1):
        raise ValueError("a flag is not 0 or 1")
    blobs = [name.encode() for name in names]
    lengths = np.fromiter(map(len, blobs), np.uint32, len(blobs))
    head = ENTRIES_MAGIC + struct.pack("<II", len(names), n) + lengths.tobytes()
    text = b"".join(blobs)
    pad = bytes(-(len(head) + len(text)) % 8)
    return b"".join((
        head, text, pad,
        np.ascontiguousarray(times, dtype="<i8").tobytes(),
        key.astype("<u4").tobytes(),
        tags.astype("<u4").tobytes(),
        flags.astype("u1").tobytes(),
    ))  # fmt: skip


def decode_entries(value: bytes) -> TerminalEntries:
    """A record of :func:`encode_entries`; raises
    :class:`~finscore.features.exceptions.FeatureStateError` when it is not one or is corrupt
    (wrong length, a row naming no terminal, a flag not 0/1)."""
    if value[:4] != ENTRIES_MAGIC:
        raise FeatureStateError("not a terminal-entries record")
    try:
        n_keys, n_rows = struct.unpack_from("<II", value, 4)
        lengths = np.frombuffer(value, "<u4", n_keys, 12).astype(np.int64)
        ends = 12 + 4 * n_keys + np.cumsum(lengths)
        starts = ends - lengths
        names = [value[a:b].decode() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise FeatureStateError(f"corrupt terminal-entries record: {exc}") from exc
    at = int(ends[-1]) if n_keys else 12 + 4 * n_keys
    at += -at % 8
    if len(value) != at + ROW_BYTES * n_rows:
        raise FeatureStateError("corrupt terminal-entries record: length does not match counts")
    times = np.frombuffer(value, "<i8", n_rows, at).astype(np.int64)
    at += 8 * n_rows
    key = np.frombuffer(value, "<u4", n_rows, at).astype(np.int64)
    tags = np.frombuffer(value, "<u4", n_rows, at + 4 * n_rows).astype(np.int64)
    flags = np.frombuffer(value, "u1", n_rows, at + 8 * n_rows).astype(np.int64)
    if n_rows and (key.max() >= n_keys or flags.max() > 1):
        raise FeatureStateError("corrupt terminal-entries record: a row names no terminal")
    return TerminalEntries(names, key, times, tags, flags)


__all__ = ["ENTRIES_MAGIC", "ROW_BYTES", "TerminalEntries", "decode_entries", "encode_entries"]

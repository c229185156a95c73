"""Online per-instrument windows of market feature rows: the market worker's state.

Each instrument keeps its last ``window`` rows in a flat float32 buffer that a batch extends in
bulk, so the rows of a batch and the window before them are contiguous and every window the
batch completes is a slice of that buffer. :meth:`MarketWindows.push_rows` hands those windows
back as a :class:`ReadyWindows` that copies them on demand, a few hundred at a time, into one
reused (cache-resident) array for the model: one copy per window, no per-tick allocation.

A declared family's ``sequence`` feature (``finscore/families/market.toml``) compiles into
this state: :func:`declared_windows`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from finscore.features.exceptions import FeatureStateError
from finscore.features.market import (
    BOOK_LAYOUT,
    N_FEATURES,
    book_array,
    layout_width,
    rows_from_book_array,
)

if TYPE_CHECKING:
    from finscore.families.spec import FamilySpec

__all__ = [
    "SCORE_CHUNK",
    "MarketWindows",
    "ReadyWindows",
    "declared_windows",
]

SCORE_CHUNK = 256  # windows per copy + inference: [256, 100, 40] float32 is 4 MB


class _Ring:
    """``buf[end - count : end]`` are the instrument's last ``count`` (≤ ``window``) rows."""

    __slots__ = ("buf", "end", "count", "window")

    def __init__(self, window: int, width: int = N_FEATURES) -> None:
        self.window = window
        self.buf = np.zeros((2 * window, width), dtype=np.float32)
        self.end = 0
        self.count = 0

    def extend(self, rows: np.ndarray) -> int:
        """Append ``rows``; returns the index in ``buf`` of the first of them."""
        k, keep = len(rows), self.count
        if self.end + k > len(self.buf):
            old = self.buf[self.end - keep : self.end]
            if keep + k > len(self.buf):
                width = self.buf.shape[1]
                self.buf = np.empty((keep + k + self.window, width), dtype=np.float32)
            self.buf[:keep] = old  # numpy copies overlapping slices safely
            self.end = keep
        first = self.end
        self.buf[first : first + k] = rows
        self.end += k
        self.count = min(keep + k, self.window)
        return first

    def rows(self) -> np.ndarray:
        return self.buf[self.end - self.count : self.end]


class ReadyWindows:
    """The windows one :meth:`MarketWindows.push_rows` call completed, copied on demand.

    ``index[k]`` is the input index of window ``k``. Windows are grouped by instrument (in
    order of first appearance) and in input order within one. They read the instruments'
    buffers, so they are valid until the next ``push_rows``/``push``/``restore``.
    """

    def __init__(self, window: int, scratch: np.ndarray) -> None:
        self.window = window
        self._parts: list[tuple[np.ndarray, int]] = []  # (buffer, start of the first window)
        self._indices: list[np.ndarray] = []
        self._bounds = [0]
        self._scratch = scratch
        self._index: np.ndarray | None = None

    def _add(self, buf: np.ndarray, index: np.ndarray, first_start: int) -> None:
        """Windows starting at ``buf`` rows ``first_start, first_start + 1, …`` (one per index)."""
        self._parts.append((buf, first_start))
        self._indices.append(index)
        self._bounds.append(self._bounds[-1] + len(index))
        self._index = None

    @property
    def index(self) -> np.ndarray:
        """The input index of every window (int64)."""
        if self._index is None:
            self._index = (
                np.concatenate(self._indices) if self._indices else np.zeros(0, dtype=np.int64)
            )
        return self._index

    def __len__(self) -> int:
        return self._bounds[-1]

    def fill(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """Copy windows ``lo:hi`` into ``out[: hi - lo]`` (float32 [≥ hi - lo, T, 40]); returns it.

        An instrument's windows start at consecutive rows of its buffer, so they are a plain
        slice of an (overlapping, read-only) strided view of it: one ``copyto`` per instrument.
        """
        t = self.window
        for (buf, s0), a, b in zip(self._parts, self._bounds, self._bounds[1:], strict=False):
            s, e = max(lo, a), min(hi, b)
            if s < e:
                rs, cs = buf.strides
                view = np.lib.stride_tricks.as_strided(
                    buf, (len(buf) - t + 1, t, buf.shape[1]), (rs, rs, cs), writeable=False
                )
                np.copyto(out[s - lo : e - lo], view[s0 + s - a : s0 + e - a])
        return out[: hi - lo]

    def batches(self, size: int = SCORE_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """``(lo, windows lo:lo+size)`` chunks, all in one reused array (valid until the next)."""
        size = min(size, len(self._scratch))
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            yield lo, self.fill(lo, hi, self._scratch)

    def array(self) -> np.ndarray:
        """Every window in one new array [len, T, 40]."""
        out = np.empty((len(self), self.window, self._scratch.shape[2]), dtype=np.float32)
        return self.fill(0, len(self), out)


class MarketWindows:
    """Online per-instrument windows of the last ``window`` rows; idempotent by ``sequence``.

    ``layout`` (see :mod:`finscore.features.market`) fixes the row width (:attr:`width`):
    :meth:`push` computes rows of that layout, :meth:`push_rows` expects them."""

    def __init__(self, window: int = 100, layout: str = BOOK_LAYOUT) -> None:
        self.window = window
        self.layout = layout
        self.width = layout_width(layout)
        self._rings: dict[str, _Ring] = {}
        self._last_seq: dict[str, int] = {}
        self.duplicates = 0
        self._scratch = np.zeros((SCORE_CHUNK, window, self.width), dtype=np.float32)

    def push(self, ticks: list[dict]) -> list[tuple[int, np.ndarray]]:
        """Add ticks in order; returns (index in ``ticks``, window [T, 40] copy) for every tick
        whose instrument now has a full window, in the order of ``ticks``. Ticks with a sequence
        already seen are skipped. (The record form of :meth:`push_rows`.)"""
        if not ticks:
            return []
        rows = rows_from_book_array(book_array(ticks), self.layout)
        keys = [t["instrument"] for t in ticks]
        seqs = np.fromiter((int(t["sequence"]) for t in ticks), dtype=np.int64, count=len(ticks))
        ready = self.push_rows(keys, seqs, rows)
        windows = ready.array()
        order = np.argsort(ready.index, kind="stable")
        return [(int(ready.index[k]), windows[k]) for k in order]

    def sequence_jumps(
        self, instruments: list[str], sequences: np.ndarray, max_gap: int
    ) -> np.ndarray:
        """Boolean mask of the ticks whose sequence is more than ``max_gap`` above their
        instrument's last sequence (for an instrument not seen yet: above the lowest sequence
        it has in this batch). Such a tick must not be pushed: its sequence would make every
        later tick of the instrument a replay."""
        seqs = np.asarray(sequences, dtype=np.int64)
        n = len(seqs)
        if n == 0:
            return np.zeros(0, dtype=bool)
        codes_of = {s: k for k, s in enumerate(dict.fromkeys(instruments))}
        codes = np.fromiter(map(codes_of.__getitem__, instruments), dtype=np.int64, count=n)
        ref = np.full(len(codes_of), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(ref, codes, seqs)  # the batch's lowest, for instruments not seen yet
        for inst, k in codes_of.items():
            last = self._last_seq.get(inst)
            if last is not None:
                ref[k] = last
        # seqs - ref cannot overflow past the bound test: compare as ref + gap, saturated
        limit = np.where(
            ref > np.iinfo(np.int64).max - max_gap, np.iinfo(np.int64).max, ref + max_gap
        )
        return seqs > limit[codes]

    def push_rows(
        self, instruments: list[str], sequences: np.ndarray, rows: np.ndarray
    ) -> ReadyWindows:
        """Add ``N`` ticks (instrument, sequence, feature row [40]) in input order; returns the
        windows of the ticks whose instrument now has a full window (see :class:`ReadyWindows`).

        A tick whose sequence is not above every sequence seen before for its instrument is a
        replay: skipped and counted in :attr:`duplicates`.
        """
        ready = ReadyWindows(self.window, self._scratch)
        n = len(instruments)
        if n == 0:
            return ready
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of {self.layout!r} are {self.width} wide, got {rows.shape}")
        codes_of = {s: k for k, s in enumerate(dict.fromkeys(instruments))}
        codes = np.fromiter(map(codes_of.__getitem__, instruments), dtype=np.int64, count=n)
        seqs = np.asarray(sequences, dtype=np.int64)
        if len(codes_of) == 1:
            groups = [np.arange(n)]
        else:
            by = np.argsort(codes, kind="stable")
            groups = np.split(by, np.cumsum(np.bincount(codes, minlength=len(codes_of)))[:-1])
        for inst, idx in zip(codes_of, groups, strict=True):
            s = seqs[idx]
            last = self._last_seq.get(inst, -1)
            fresh = s > np.maximum.accumulate(np.concatenate(([last], s[:-1])))
            if not fresh.all():
                self.duplicates += int((~fresh).sum())
                idx = idx[fresh]
            if not len(idx):
                continue
            self._last_seq[inst] = max(last, int(s.max()))
            ring = self._rings.get(inst)
            if ring is None:
                ring = self._rings[inst] = _Ring(self.window, self.width)
            before = ring.count
            first = ring.extend(rows[idx])
            skip = max(0, self.window - 1 - before)  # new rows before the window is full
            if skip < len(idx):
                ready._add(ring.buf, idx[skip:], first + skip - (self.window - 1))
        return ready

    def snapshot(self, instrument: str) -> bytes:
        """The instrument's window and last sequence as bytes (for a compacted changelog)."""
        ring = self._rings.get(instrument)
        rows = ring.rows() if ring is not None else np.zeros((0, self.width), np.float32)
        header = struct.pack("<qi", self._last_seq.get(instrument, -1), len(rows))
        return header + rows.astype(np.float32).tobytes()

    def restore(self, instrument: str, snap: bytes) -> None:
        """Replace an instrument's window with a snapshot (:meth:`snapshot`). A snapshot that
        is not one (wrong length, a negative count or sequence, non-finite rows) raises
        :class:`FeatureStateError` and changes nothing."""
        if len(snap) < 12:
            raise FeatureStateError(f"corrupt market snapshot for {instrument!r}: too short")
        seq, n = struct.unpack_from("<qi", snap)
        if n < 0 or seq < -1 or len(snap) != 12 + 4 * self.width * n:
            raise FeatureStateError(
                f"corrupt market snapshot for {instrument!r}: {n} rows, sequence {seq}, "
                f"{len(snap)} bytes"
            )
        rows = np.frombuffer(snap, dtype=np.float32, offset=12).reshape(n, self.width)
        if not np.isfinite(rows).all():
            raise FeatureStateError(f"corrupt market snapshot for {instrument!r}: non-finite")
        ring = _Ring(self.window, self.width)
        ring.extend(rows[-self.window :] if n else rows)
        self._rings[instrument] = ring
        self._last_seq[instrument] = seq


def declared_windows(spec: FamilySpec) -> MarketWindows:
    """The state a family's ``sequence`` feature compiles into: :class:`MarketWindows` of its
    ``events`` rows of its ``layout`` (the coded state itself, so the same windows bit for bit).
    :class:`ValueError` for a family without one."""
    seq = spec.sequence
    if seq is None:
        raise ValueError(f"family {spec.name!r} declares no sequence feature")
    return MarketWindows(window=seq.events, layout=seq.layout)

"""THE definition of market features, shared by training and the market worker.

A book snapshot becomes 40 numbers in DeepLOB order — for each of 10 levels: ask price, ask
size, bid price, bid size — made instrument-invariant: prices as offsets from the current mid
in basis points, sizes as ``log1p``. Missing levels are padded one tick beyond the last known
level with size 0. A model sees the last ``window`` rows of an instrument.

Labels follow FI-2010/DeepLOB: with m₋ the mean of the previous k mids (current included) and
m₊ the mean of the next k mids, l = (m₊ − m₋)/m₋; up if l > α, down if l < −α, flat otherwise.
Classes: down = 0, flat = 1, up = 2.
"""

from __future__ import annotations

import struct

import numpy as np

LEVELS = 10
N_FEATURES = 4 * LEVELS
DOWN, FLAT, UP = 0, 1, 2


def _pad(levels: list[dict], sign: float) -> tuple[list[float], list[float]]:
    prices = [lv["price"] for lv in levels[:LEVELS]]
    sizes = [float(lv["size"]) for lv in levels[:LEVELS]]
    if len(prices) < LEVELS:
        tick = abs(prices[-1] - prices[-2]) if len(prices) > 1 else prices[-1] * 1e-4
        while len(prices) < LEVELS:
            prices.append(prices[-1] + sign * tick)
            sizes.append(0.0)
    return prices, sizes


def mid_price(record: dict) -> float:
    return (record["bids"][0]["price"] + record["asks"][0]["price"]) / 2


def tick_to_row(record: dict) -> np.ndarray:
    """One ``market_tick`` record → float32 [40]."""
    ap, asz = _pad(record["asks"], +1.0)
    bp, bsz = _pad(record["bids"], -1.0)
    book = np.empty(N_FEATURES, dtype=np.float64)
    book[0::4], book[1::4], book[2::4], book[3::4] = ap, asz, bp, bsz
    return rows_from_book_array(book[None, :])[0]


def rows_from_book_array(book: np.ndarray) -> np.ndarray:
    """[N, 40] books in LOBSTER order (AskP1, AskS1, BidP1, BidS1, …) → float32 features."""
    book = np.asarray(book, dtype=np.float64)
    mid = (book[:, 0] + book[:, 2]) / 2
    out = np.empty_like(book)
    for col in (0, 2):
        out[:, col::4] = (book[:, col::4] - mid[:, None]) / mid[:, None] * 1e4
    for col in (1, 3):
        out[:, col::4] = np.log1p(np.maximum(book[:, col::4], 0))
    return out.astype(np.float32)


def direction_labels(mid: np.ndarray, horizon: int, alpha: float) -> np.ndarray:
    """FI-2010 smoothed direction labels; −1 where the window is incomplete (the edges)."""
    mid = np.asarray(mid, dtype=np.float64)
    n = len(mid)
    y = np.full(n, -1, dtype=np.int8)
    if n < 2 * horizon:
        return y
    c = np.r_[0.0, np.cumsum(mid)]
    idx = np.arange(horizon - 1, n - horizon)
    m_minus = (c[idx + 1] - c[idx + 1 - horizon]) / horizon
    m_plus = (c[idx + 1 + horizon] - c[idx + 1]) / horizon
    change = (m_plus - m_minus) / m_minus
    y[idx] = np.where(change > alpha, UP, np.where(change < -alpha, DOWN, FLAT))
    return y


def make_windows(
    rows: np.ndarray, labels: np.ndarray, window: int = 100, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ending at each labelled index (a view, copied only for the chosen indices)."""
    ends = np.arange(window - 1, len(rows), stride)
    ends = ends[labels[ends] >= 0]
    view = np.lib.stride_tricks.sliding_window_view(rows, (window, rows.shape[1]))[:, 0]
    return np.ascontiguousarray(view[ends - window + 1]), labels[ends].astype(np.int64)


def book_array(ticks: list[dict]) -> np.ndarray:
    """[N, 40] LOBSTER-order books from ``market_tick`` records (padded to 10 levels)."""
    out = np.empty((len(ticks), N_FEATURES), dtype=np.float64)
    for i, tick in enumerate(ticks):
        asks, bids = tick["asks"], tick["bids"]
        if len(asks) >= LEVELS and len(bids) >= LEVELS:
            out[i, 0::4] = [lv["price"] for lv in asks[:LEVELS]]
            out[i, 1::4] = [lv["size"] for lv in asks[:LEVELS]]
            out[i, 2::4] = [lv["price"] for lv in bids[:LEVELS]]
            out[i, 3::4] = [lv["size"] for lv in bids[:LEVELS]]
        else:
            ap, asz = _pad(asks, +1.0)
            bp, bsz = _pad(bids, -1.0)
            out[i, 0::4], out[i, 1::4], out[i, 2::4], out[i, 3::4] = ap, asz, bp, bsz
    return out


class _Ring:
    """The last ``window`` rows of one instrument in a flat buffer (no per-row allocations)."""

    __slots__ = ("buf", "pos", "count", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.buf = np.zeros((2 * window, N_FEATURES), dtype=np.float32)
        self.pos = 0
        self.count = 0

    def append(self, row: np.ndarray) -> None:
        if self.pos == len(self.buf):
            keep = self.window - 1
            self.buf[:keep] = self.buf[self.pos - keep : self.pos]
            self.pos = keep
        self.buf[self.pos] = row
        self.pos += 1
        self.count = min(self.count + 1, self.window)

    def rows(self) -> np.ndarray:
        return self.buf[self.pos - self.count : self.pos]


class MarketWindows:
    """Online per-instrument windows of the last ``window`` rows; idempotent by ``sequence``."""

    def __init__(self, window: int = 100) -> None:
        self.window = window
        self._rings: dict[str, _Ring] = {}
        self._last_seq: dict[str, int] = {}
        self.duplicates = 0

    def push(self, ticks: list[dict]) -> list[tuple[int, np.ndarray]]:
        """Add ticks in order; returns (index in ``ticks``, window [T, 40] copy) for every tick
        whose instrument now has a full window. Ticks with a sequence already seen are skipped."""
        fresh = []
        for i, tick in enumerate(ticks):
            inst, seq = tick["instrument"], int(tick["sequence"])
            if seq <= self._last_seq.get(inst, -1):
                self.duplicates += 1
                continue
            self._last_seq[inst] = seq
            fresh.append(i)
        if not fresh:
            return []
        rows = rows_from_book_array(book_array([ticks[i] for i in fresh]))
        ready = []
        for row, i in zip(rows, fresh, strict=True):
            inst = ticks[i]["instrument"]
            ring = self._rings.get(inst)
            if ring is None:
                ring = self._rings[inst] = _Ring(self.window)
            ring.append(row)
            if ring.count == self.window:
                ready.append((i, ring.rows().copy()))
        return ready

    def snapshot(self, instrument: str) -> bytes:
        """The instrument's window and last sequence as bytes (for a compacted changelog)."""
        ring = self._rings.get(instrument)
        rows = ring.rows() if ring is not None else np.zeros((0, N_FEATURES), np.float32)
        header = struct.pack("<qi", self._last_seq.get(instrument, -1), len(rows))
        return header + rows.astype(np.float32).tobytes()

    def restore(self, instrument: str, snap: bytes) -> None:
        """Replace an instrument's window with a snapshot."""
        seq, n = struct.unpack("<qi", snap[:12])
        ring = _Ring(self.window)
        for row in np.frombuffer(snap[12:], dtype=np.float32).reshape(n, N_FEATURES):
            ring.append(row)
        self._rings[instrument] = ring
        self._last_seq[instrument] = seq

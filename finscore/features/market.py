"""THE definition of market features, shared by training and the market worker.

A book snapshot becomes 40 numbers in DeepLOB order — for each of 10 levels: ask price, ask
size, bid price, bid size — made instrument-invariant: prices as offsets from the current mid
in basis points, sizes as ``log1p``. Missing levels are padded one tick beyond the last known
level with size 0. A model sees the last ``window`` rows of an instrument.

Layouts (a model's manifest ``params["layout"]`` names the one it reads; absent means
``book40``): ``book40`` is the 40 book-shape numbers above; ``book40+mid`` adds a 41st column,
the snapshot's own mid price as ``1e4·ln(mid)`` (:data:`PATH_LAYOUT`). Every snapshot is still
computed alone (no state), yet a window of ``book40+mid`` rows carries the mid-price path: the
model takes each row's log-mid relative to the window's last one (a difference in basis
points), so the absolute level never reaches its weights.

The window models (:mod:`finscore.compression.market`) take windows of :data:`MIN_WINDOW` to
:data:`MAX_WINDOW` rows: the students summarise the last 10 rows of a window, and a chunk of
windows scored at once (``SCORE_CHUNK`` of them, :mod:`finscore.features.market_windows`)
stays within about 40 MB.

Labels follow FI-2010/DeepLOB: with m₋ the mean of the previous k mids (current included) and
m₊ the mean of the next k mids, l = (m₊ − m₋)/m₋; up if l > α, down if l < −α, flat otherwise.
Classes: down = 0, flat = 1, up = 2.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BOOK_LAYOUT",
    "DOWN",
    "FLAT",
    "LAYOUTS",
    "LEVELS",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "N_FEATURES",
    "PATH_LAYOUT",
    "UP",
    "book_array",
    "book_from_levels",
    "direction_labels",
    "layout_width",
    "make_windows",
    "mid_price",
    "rows_from_book_array",
    "rows_from_levels",
    "tick_to_row",
    "window_ends",
    "with_layout",
]

LEVELS = 10
N_FEATURES = 4 * LEVELS
DOWN, FLAT, UP = 0, 1, 2
BOOK_LAYOUT = "book40"
PATH_LAYOUT = "book40+mid"
LAYOUTS = {BOOK_LAYOUT: N_FEATURES, PATH_LAYOUT: N_FEATURES + 1}
#: the window lengths (rows) the market models take (see the module docstring)
MIN_WINDOW, MAX_WINDOW = 10, 1000


def layout_width(layout: str) -> int:
    """Values per feature row of ``layout``; :class:`ValueError` for an unknown layout."""
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(
            f"unknown market feature layout {layout!r}; known: {list(LAYOUTS)}"
        ) from None


def with_layout(rows: np.ndarray, mid: np.ndarray, layout: str) -> np.ndarray:
    """``rows`` [N, 40] float32 extended to ``layout`` (the one place that defines the extra
    columns, for the offline and the online path alike)."""
    if layout == BOOK_LAYOUT:
        return rows
    layout_width(layout)
    out = np.empty((len(rows), N_FEATURES + 1), dtype=np.float32)
    out[:, :N_FEATURES] = rows
    out[:, N_FEATURES] = np.log(np.asarray(mid, dtype=np.float64).reshape(-1)) * 1e4
    return out


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


def rows_from_book_array(book: np.ndarray, layout: str = BOOK_LAYOUT) -> np.ndarray:
    """[N, 40] books in LOBSTER order (AskP1, AskS1, BidP1, BidS1, …) → float32 features
    (``layout``: see the module docstring)."""
    book = np.asarray(book, dtype=np.float64)
    mid = (book[:, 0] + book[:, 2]) / 2
    out = np.empty_like(book)
    for col in (0, 2):
        out[:, col::4] = (book[:, col::4] - mid[:, None]) / mid[:, None] * 1e4
    for col in (1, 3):
        out[:, col::4] = np.log1p(np.maximum(book[:, col::4], 0))
    return with_layout(out.astype(np.float32), mid, layout)


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


def window_ends(labels: np.ndarray, window: int = 100, stride: int = 1) -> np.ndarray:
    """The last index of every window :func:`make_windows` returns (int64, ascending)."""
    ends = np.arange(window - 1, len(labels), stride)
    return ends[labels[ends] >= 0]


def make_windows(
    rows: np.ndarray, labels: np.ndarray, window: int = 100, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ending at each labelled index (a view, copied only for the chosen indices)."""
    ends = window_ends(labels, window, stride)
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


def book_from_levels(
    ask_price: np.ndarray,
    ask_size: np.ndarray,
    ask_count: np.ndarray,
    bid_price: np.ndarray,
    bid_size: np.ndarray,
    bid_count: np.ndarray,
) -> np.ndarray:
    """:func:`book_array` of ``N`` books given as dense level arrays: ``[N, 10]`` prices and
    sizes per side (best first; entries past a side's count are ignored) and the number of
    levels each side has (at least 1; only the first 10 are used). The padding is computed
    exactly as :func:`book_array` does (one tick beyond the last level, added level by level),
    so the result is bit-identical."""
    out = np.empty((len(ask_count), N_FEATURES), dtype=np.float64)
    out[:, 0::4], out[:, 1::4] = _padded(ask_price, ask_size, ask_count, +1.0)
    out[:, 2::4], out[:, 3::4] = _padded(bid_price, bid_size, bid_count, -1.0)
    return out


def rows_from_levels(
    ask_price: np.ndarray,
    ask_size: np.ndarray,
    ask_count: np.ndarray,
    bid_price: np.ndarray,
    bid_size: np.ndarray,
    bid_count: np.ndarray,
    layout: str = BOOK_LAYOUT,
) -> np.ndarray:
    """``rows_from_book_array(book_from_levels(...), layout)`` without the ``[N, 40]`` float64 book
    in between: the same operations on the same values, so bit-identical (the worker's path)."""
    ap, asz = _padded(ask_price, ask_size, ask_count, +1.0)
    bp, bsz = _padded(bid_price, bid_size, bid_count, -1.0)
    mid = ((ap[:, 0] + bp[:, 0]) / 2)[:, None]
    out = np.empty((len(ap), N_FEATURES), dtype=np.float32)
    out[:, 0::4] = (ap - mid) / mid * 1e4
    out[:, 1::4] = np.log1p(np.maximum(asz, 0))
    out[:, 2::4] = (bp - mid) / mid * 1e4
    out[:, 3::4] = np.log1p(np.maximum(bsz, 0))
    return with_layout(out, (ap[:, 0] + bp[:, 0]) / 2, layout)


def _padded(
    price: np.ndarray, size: np.ndarray, count: np.ndarray, sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """One side's first 10 prices and sizes (float64), padded as :func:`_pad` does."""
    p = np.array(price[:, :LEVELS], dtype=np.float64)
    q = np.array(size[:, :LEVELS], dtype=np.float64)
    c = np.minimum(np.asarray(count, dtype=np.int64), LEVELS)
    short = np.flatnonzero(c < LEVELS)
    if len(short):
        cs, ps = c[short], p[short]
        last = ps[np.arange(len(short)), np.maximum(cs - 1, 0)]
        prev = ps[np.arange(len(short)), np.maximum(cs - 2, 0)]
        step = sign * np.where(cs > 1, np.abs(last - prev), last * 1e-4)
        for k in range(1, LEVELS):  # sequential additions, as _pad appends
            pad = cs <= k
            ps[pad, k] = ps[pad, k - 1] + step[pad]
        p[short] = ps
        q[short] = np.where(np.arange(LEVELS) < cs[:, None], q[short], 0.0)
    return p, q

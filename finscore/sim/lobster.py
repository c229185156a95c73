"""LOBSTER sample files (NASDAQ, 2012-06-21): load the 10-level book and replay it as ticks.

Order-book files have no header; each row is AskP1, AskS1, BidP1, BidS1, … with prices ×10000;
message files are Time (s after midnight), Type, OrderID, Size, Price, Direction. Executions
(types 4 and 5) become trades; executing a visible buy limit order (direction +1) means a
seller was the aggressor, so it is a SELL trade (and vice versa).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from finscore.sim.data import cache_dir, data_dir, open_text, require

SAMPLE = "lobster_sample_2012-06-21"


@dataclass
class LobsterDay:
    time_s: np.ndarray  # seconds after midnight
    book: np.ndarray  # [n, 4·levels], prices in dollars, LOBSTER order
    msg_type: np.ndarray
    msg_size: np.ndarray
    msg_price: np.ndarray
    msg_direction: np.ndarray
    levels: int


def lobster_files(
    symbol: str = "GOOG", levels: int = 10, root: Path | None = None
) -> tuple[Path, Path]:
    base = (root or data_dir()) / SAMPLE
    stem = f"{symbol}_2012-06-21_34200000_57600000"
    return (
        require(base / f"{stem}_orderbook_{levels}.csv.xz"),
        require(base / f"{stem}_message_{levels}.csv.xz"),
    )


def load_lobster(symbol: str = "GOOG", levels: int = 10, root: Path | None = None) -> LobsterDay:
    """Parse (and cache as .npz) one LOBSTER sample day."""
    book_path, msg_path = lobster_files(symbol, levels, root)
    st = book_path.stat()
    cached = cache_dir() / f"lobster-{symbol}-{levels}-{st.st_size}-{int(st.st_mtime)}.npz"
    if cached.exists():
        z = np.load(cached)
        return LobsterDay(**{k: z[k] for k in z.files}, levels=levels)
    with open_text(book_path) as f:
        book = np.loadtxt(f, delimiter=",", dtype=np.float64)
    with open_text(msg_path) as f:
        msg = np.loadtxt(f, delimiter=",", dtype=np.float64)
    book[:, 0::2] /= 10000.0
    day = LobsterDay(
        time_s=msg[:, 0], book=book, msg_type=msg[:, 1].astype(np.int8), msg_size=msg[:, 3].astype(np.int64),
        msg_price=msg[:, 4] / 10000.0, msg_direction=msg[:, 5].astype(np.int8), levels=levels,
    )  # fmt: skip
    np.savez(cached, **{k: getattr(day, k) for k in ("time_s", "book", "msg_type", "msg_size",
                                                      "msg_price", "msg_direction")})  # fmt: skip
    return day


def replay_ticks(day: LobsterDay, instrument: str, date: str = "2012-06-21") -> Iterator[dict]:
    """The day as ``market_tick`` records (one per message, book after it)."""
    midnight_us = int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp() * 1_000_000)
    lv = day.levels
    for i in range(len(day.time_s)):
        row = day.book[i]
        asks = [
            {"price": float(row[4 * k]), "size": int(row[4 * k + 1])}
            for k in range(lv)
            if row[4 * k + 1] > 0
        ]
        bids = [
            {"price": float(row[4 * k + 2]), "size": int(row[4 * k + 3])}
            for k in range(lv)
            if row[4 * k + 3] > 0
        ]
        trades = []
        if day.msg_type[i] in (4, 5):
            side = "SELL" if day.msg_direction[i] > 0 else "BUY"
            trades.append(
                {"price": float(day.msg_price[i]), "size": int(day.msg_size[i]), "side": side}
            )
        yield {
            "instrument": instrument,
            "event_time": midnight_us + int(round(day.time_s[i] * 1_000_000)),
            "sequence": i,
            "bids": bids,
            "asks": asks,
            "trades": trades,
        }


def lobster_ticks(symbol: str = "GOOG") -> Iterator[dict]:
    """Replay of the GOOG (default) sample day from FINSCORE_DATA_DIR."""
    return replay_ticks(load_lobster(symbol), symbol)

"""A limit-order-book simulator: 10-level snapshots and trades with a learnable mid process.

Per instrument, a latent order-flow imbalance ``z`` follows an AR(1) process; it skews the
best-level sizes (bid size ∝ 1 + z, ask size ∝ 1 − z) and biases the direction of the next
mid-price move (up with probability sigmoid(k·z)), as order-book imbalance does in real
markets. Moves are one tick; the spread is one or two ticks; deeper levels are one tick apart
with noisy sizes. Books are never crossed and prices sit on the tick grid. Deterministic by seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

LEVELS = 10


@dataclass(frozen=True)
class MarketSimConfig:
    instruments: tuple[str, ...] = ("SIMA", "SIMB")
    levels: int = LEVELS
    tick_size: float = 0.01
    start_price: float = 100.0
    seed: int = 0
    start_time_us: int = 1_735_725_600_000_000  # 2025-01-01T10:00:00Z
    mean_interarrival_us: int = 20_000
    move_probability: float = 0.12
    imbalance_persistence: float = 0.97
    imbalance_strength: float = 3.0


@dataclass
class BookArrays:
    """n snapshots as arrays (best level first): prices in currency units, integer sizes."""

    time_us: np.ndarray
    ask_p: np.ndarray
    ask_s: np.ndarray
    bid_p: np.ndarray
    bid_s: np.ndarray
    trade_side: np.ndarray  # +1 buy aggressor, −1 sell aggressor, 0 none
    trade_size: np.ndarray

    def lobster_order(self) -> np.ndarray:
        """[n, 4·levels] in LOBSTER order: AskP1, AskS1, BidP1, BidS1, AskP2, …"""
        n, lv = self.ask_p.shape
        out = np.empty((n, 4 * lv), dtype=np.float64)
        out[:, 0::4], out[:, 1::4] = self.ask_p, self.ask_s
        out[:, 2::4], out[:, 3::4] = self.bid_p, self.bid_s
        return out


def simulate_book(
    n: int, cfg: MarketSimConfig = MarketSimConfig(), seed: int | None = None
) -> BookArrays:
    """``n`` consecutive snapshots of one instrument."""
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    lv = cfg.levels
    z = np.zeros(n)
    noise = rng.normal(0, 0.25, size=n)
    for i in range(1, n):
        z[i] = cfg.imbalance_persistence * z[i - 1] + noise[i]
    zc = np.clip(z, -0.9, 0.9)
    p_up = 1 / (1 + np.exp(-cfg.imbalance_strength * z))
    moves = rng.random(n) < cfg.move_probability
    up = rng.random(n) < p_up
    step = np.where(moves, np.where(up, 1, -1), 0)
    step[0] = 0
    bid_ticks = int(round(cfg.start_price / cfg.tick_size)) + np.cumsum(step)
    spread = 1 + (rng.random(n) < 0.3).astype(np.int64)
    base = rng.gamma(4.0, 50.0, size=(n, lv))
    bid_s = np.maximum(1, base * (1 + np.r_[zc[:, None]] * np.linspace(1, 0.1, lv))).astype(
        np.int64
    )
    base2 = rng.gamma(4.0, 50.0, size=(n, lv))
    ask_s = np.maximum(1, base2 * (1 - np.r_[zc[:, None]] * np.linspace(1, 0.1, lv))).astype(
        np.int64
    )
    offs = np.arange(lv)
    bid_p = (bid_ticks[:, None] - offs) * cfg.tick_size
    ask_p = (bid_ticks[:, None] + spread[:, None] + offs) * cfg.tick_size
    gaps = rng.exponential(cfg.mean_interarrival_us, size=n).astype(np.int64) + 1
    time_us = cfg.start_time_us + np.cumsum(gaps)
    trade_side = step.copy()
    trade_size = np.where(step != 0, rng.integers(1, 300, size=n), 0)
    return BookArrays(
        time_us, np.round(ask_p, 4), ask_s, np.round(bid_p, 4), bid_s, trade_side, trade_size
    )


def book_record(b: BookArrays, i: int, instrument: str, sequence: int) -> dict:
    """Snapshot ``i`` as a ``market_tick`` record."""
    trades = []
    if b.trade_side[i] != 0:
        side = "BUY" if b.trade_side[i] > 0 else "SELL"
        price = b.ask_p[i - 1, 0] if side == "BUY" and i else b.bid_p[max(i - 1, 0), 0]
        trades.append({"price": float(price), "size": int(b.trade_size[i]), "side": side})
    return {
        "instrument": instrument,
        "event_time": int(b.time_us[i]),
        "sequence": sequence,
        "bids": [
            {"price": float(p), "size": int(s)} for p, s in zip(b.bid_p[i], b.bid_s[i], strict=True)
        ],
        "asks": [
            {"price": float(p), "size": int(s)} for p, s in zip(b.ask_p[i], b.ask_s[i], strict=True)
        ],
        "trades": trades,
    }


class MarketSimulator:
    """Interleaved ticks of several instruments, generated in chunks, forever (or ``limit``)."""

    def __init__(self, cfg: MarketSimConfig = MarketSimConfig(), chunk: int = 20_000) -> None:
        self.cfg = cfg
        self.chunk = chunk

    def ticks(self, limit: int | None = None) -> Iterator[dict]:
        sent = 0
        seqs = {inst: 0 for inst in self.cfg.instruments}
        round_ = 0
        books: dict[str, BookArrays] = {}
        cfgs = {inst: self.cfg for inst in self.cfg.instruments}
        while limit is None or sent < limit:
            for k, inst in enumerate(self.cfg.instruments):
                books[inst] = b = simulate_book(
                    self.chunk, cfgs[inst], seed=self.cfg.seed * 7919 + k * 104729 + round_
                )
                cfgs[inst] = dataclasses.replace(  # the next chunk continues this one
                    cfgs[inst], start_price=float(b.bid_p[-1, 0]), start_time_us=int(b.time_us[-1])
                )
            for i in range(self.chunk):
                for inst in self.cfg.instruments:
                    yield book_record(books[inst], i, inst, seqs[inst])
                    seqs[inst] += 1
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
            round_ += 1

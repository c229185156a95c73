"""Market ticks as columns: a batch of messages decoded, validated and turned into book rows.

:func:`decode_ticks` decodes a batch with :class:`ColumnarCodec`; the messages it leaves (other
encodings, other writer versions, anything odd) go through :func:`decode_batch` one by one, so
undecodable ones become the same dead letters as before, and the records that do decode join
the columns at their place in the batch. :func:`impossible_ticks` applies the rules of
:func:`validate_tick` to all rows at once and gives the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from finscore.features.market import LEVELS
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.streams.bounds import DEFAULT_BOUNDS, InputBounds, lengths
from finscore.streams.pipeline import DeadLetter, decode_batch
from finscore.streams.transport import Message

SMALL_BATCH = 32  # messages; at most this many are decoded (and encoded) record by record


def validate_tick(tick: dict, now_us: int, bounds: InputBounds = DEFAULT_BOUNDS) -> str | None:
    """Why a decoded book snapshot is impossible, or None when it is fine: the rules of
    :func:`impossible_ticks`, on one record."""
    _, reasons = impossible_ticks(_from_records([0], [tick]), now_us, bounds)
    return reasons[0] if reasons else None


@dataclass
class TickColumns:
    """``N`` ticks: ``index`` (position in the message batch), instrument, event time,
    sequence, and per side ``[N, 10]`` prices (float64) and sizes (int64) with level counts
    (a count may exceed 10; levels past the 10th are not kept). Trades are not read."""

    index: np.ndarray
    instrument: list[str]
    event_time: np.ndarray
    sequence: np.ndarray
    bid_price: np.ndarray
    bid_size: np.ndarray
    bid_count: np.ndarray
    ask_price: np.ndarray
    ask_size: np.ndarray
    ask_count: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> TickColumns:
        """The ticks at ``rows`` (an index array or a boolean mask)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        out: dict[str, Any] = {}
        for f in fields(self):
            col = getattr(self, f.name)
            out[f.name] = [col[i] for i in rows.tolist()] if f.name == "instrument" else col[rows]
        return TickColumns(**out)

    @staticmethod
    def concat(parts: list[TickColumns]) -> TickColumns:
        out: dict[str, Any] = {}
        for f in fields(TickColumns):
            cols = [getattr(p, f.name) for p in parts]
            out[f.name] = (
                [s for c in cols for s in c] if f.name == "instrument" else np.concatenate(cols)
            )
        return TickColumns(**out)

    def mid(self) -> np.ndarray:
        """Mid price of every tick (best bid + best ask) / 2."""
        return (self.bid_price[:, 0] + self.ask_price[:, 0]) / 2


def _from_records(index: list[int], records: list[dict]) -> TickColumns:
    n = len(records)
    side: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in ("bids", "asks"):
        price = np.full((n, LEVELS), np.nan)
        size = np.zeros((n, LEVELS), dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        for i, r in enumerate(records):
            levels = r[name]
            count[i] = len(levels)
            for k, lv in enumerate(levels[:LEVELS]):
                price[i, k], size[i, k] = lv["price"], lv["size"]
        side[name] = (price, size, count)
    return TickColumns(
        np.asarray(index, dtype=np.int64),
        [r["instrument"] for r in records],
        np.asarray([r["event_time"] for r in records], dtype=np.int64),
        np.asarray([r["sequence"] for r in records], dtype=np.int64),
        *side["bids"],
        *side["asks"],
    )


def decode_ticks(
    columnar: ColumnarCodec, codec: Codec, messages: list[Message]
) -> tuple[TickColumns, list[DeadLetter]]:
    """Every decodable message of the batch as columns (in batch order) and the dead letters
    of the others (those of :func:`decode_batch`). Batches of at most :data:`SMALL_BATCH`
    messages are decoded record by record: below that the columnar decoder's fixed cost per
    batch (a few hundred numpy calls) is more than fastavro's per record."""
    if len(messages) <= SMALL_BATCH:
        good, dead = decode_batch(codec, messages)
        where = {id(m): i for i, m in enumerate(messages)}
        return _from_records([where[id(m)] for m, _ in good], [r for _, r in good]), dead
    batch = columnar.decode([m.value for m in messages])
    bids, asks = batch["bids"], batch["asks"]
    ticks = TickColumns(
        batch.ok,
        batch["instrument"],
        batch["event_time"],
        batch["sequence"],
        bids.dense("price", LEVELS, np.nan),
        bids.dense("size", LEVELS, 0),
        bids.counts,
        asks.dense("price", LEVELS, np.nan),
        asks.dense("size", LEVELS, 0),
        asks.counts,
    )
    if not batch.rest:
        return ticks, []
    rest = [messages[i] for i in batch.rest]
    good, dead = decode_batch(codec, rest)
    if good:
        where = {id(m): i for m, i in zip(rest, batch.rest, strict=True)}
        extra = _from_records([where[id(m)] for m, _ in good], [r for _, r in good])
        both = TickColumns.concat([ticks, extra])
        ticks = both.take(np.argsort(both.index, kind="stable"))
    return ticks, dead


def impossible_ticks(
    t: TickColumns, now_us: int, bounds: InputBounds = DEFAULT_BOUNDS
) -> tuple[np.ndarray, list[str]]:
    """(rows of ``t`` out of bounds, the reason of each), in this order of rules: instrument
    non-empty and at most ``bounds.max_id_length`` characters; sequence non-negative; both
    book sides non-empty; at most 10 levels a side; every level's price positive and finite
    and size non-negative; the book not crossed; event time (µs) within the bounds' window
    of the wall clock ``now_us``."""
    nb, na = t.bid_count, t.ask_count
    names = lengths(t.instrument)
    nameless = (names == 0) | (names > bounds.max_id_length)
    sequence = ~nameless & (t.sequence < 0)
    rest = ~nameless & ~sequence
    empty = rest & ((nb == 0) | (na == 0))
    rest &= ~empty
    over = rest & ((nb > LEVELS) | (na > LEVELS))
    rest &= ~over
    j = np.arange(LEVELS)
    bid_bad = (j < nb[:, None]) & (
        ~np.isfinite(t.bid_price) | ~(t.bid_price > 0) | (t.bid_size < 0)
    )
    ask_bad = (j < na[:, None]) & (
        ~np.isfinite(t.ask_price) | ~(t.ask_price > 0) | (t.ask_size < 0)
    )
    level = rest & (bid_bad.any(axis=1) | ask_bad.any(axis=1))
    rest &= ~level
    crossed = rest & (t.bid_price[:, 0] >= t.ask_price[:, 0])
    rest &= ~crossed
    now_ms = now_us // 1000
    past = rest & (t.event_time < bounds.earliest_ms(now_ms) * 1000)
    future = rest & (t.event_time > bounds.latest_ms(now_ms) * 1000)
    bad = np.flatnonzero(nameless | sequence | empty | over | level | crossed | past | future)
    reasons = []
    for i in bad.tolist():
        if nameless[i]:
            reasons.append(f"instrument of {int(names[i])} characters "
                           f"(1 to {bounds.max_id_length})")  # fmt: skip
        elif sequence[i]:
            reasons.append(f"negative sequence {int(t.sequence[i])}")
        elif empty[i]:
            reasons.append("empty book side")
        elif over[i]:
            reasons.append("more than 10 levels on a side")
        elif level[i]:
            price, size, flags = (
                (t.bid_price, t.bid_size, bid_bad) if bid_bad[i].any() else (t.ask_price, t.ask_size, ask_bad)
            )  # fmt: skip
            k = int(flags[i].argmax())
            lvl = {"price": float(price[i, k]), "size": int(size[i, k])}
            reasons.append(f"impossible level {lvl}")
        elif crossed[i]:
            reasons.append(
                f"crossed book: bid {float(t.bid_price[i, 0])} >= ask {float(t.ask_price[i, 0])}"
            )
        elif past[i]:
            reasons.append(f"event_time {int(t.event_time[i])} is before the earliest accepted "
                           f"time {bounds.earliest_ms(now_ms) * 1000}")  # fmt: skip
        else:
            reasons.append(f"event_time {int(t.event_time[i])} is more than "
                           f"{bounds.max_future_ms // 1000} s in the future")  # fmt: skip
    return bad, reasons

"""Shared market features: record and array paths agree; windows are online == offline."""

from __future__ import annotations

import itertools

import numpy as np

from finscore.features.market import (
    MarketWindows,
    book_array,
    make_windows,
    rows_from_book_array,
    tick_to_row,
)
from finscore.sim.market import MarketSimConfig, MarketSimulator


def ticks(n: int = 3000) -> list[dict]:
    return list(itertools.islice(MarketSimulator(MarketSimConfig(seed=5), chunk=1000).ticks(), n))


def test_record_and_array_paths_give_identical_rows() -> None:
    ts = ticks(500)
    np.testing.assert_array_equal(
        np.stack([tick_to_row(t) for t in ts]), rows_from_book_array(book_array(ts))
    )


def test_rows_are_instrument_invariant() -> None:
    t = ticks(1)[0]
    scaled = dict(t, bids=[{"price": lv["price"] * 7, "size": lv["size"]} for lv in t["bids"]],
                  asks=[{"price": lv["price"] * 7, "size": lv["size"]} for lv in t["asks"]])  # fmt: skip
    np.testing.assert_allclose(tick_to_row(scaled), tick_to_row(t), rtol=1e-5, atol=1e-4)


def test_online_windows_equal_offline_windows_and_ignore_replays() -> None:
    ts = [t for t in ticks(2000) if t["instrument"] == "SIMA"]
    rows = rows_from_book_array(book_array(ts))
    labels = np.zeros(len(ts), dtype=np.int8)
    offline, _ = make_windows(rows, labels, window=50)
    w = MarketWindows(window=50)
    online = []
    for i in range(0, len(ts), 137):
        online += [win for _, win in w.push(ts[i : i + 137])]
        w.push(ts[max(0, i - 20) : i])  # replayed ticks: skipped by sequence
    np.testing.assert_array_equal(np.stack(online), offline)
    assert w.duplicates > 0


def test_snapshot_restore_continues_the_same_windows() -> None:
    ts = [t for t in ticks(1000) if t["instrument"] == "SIMB"]
    a = MarketWindows(window=30)
    full = [win for _, win in a.push(ts)]
    b = MarketWindows(window=30)
    b.push(ts[:200])
    c = MarketWindows(window=30)
    c.restore("SIMB", b.snapshot("SIMB"))
    rest = [win for _, win in c.push(ts[200:])]
    np.testing.assert_array_equal(np.stack(rest), np.stack(full[-len(rest) :]))

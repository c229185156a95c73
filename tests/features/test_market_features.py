"""Shared market features: record and array paths agree; windows are online == offline."""

from __future__ import annotations

import itertools

import numpy as np

from finscore.features.market import (
    LEVELS,
    book_array,
    book_from_levels,
    make_windows,
    rows_from_book_array,
    rows_from_levels,
    tick_to_row,
)
from finscore.features.market_windows import MarketWindows
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


def test_dense_levels_give_the_same_books_as_records() -> None:
    """The worker's columnar path (book_from_levels) is bit-identical to book_array, padding
    of short books (1..9 levels) and truncation of long ones (> 10) included."""
    rng = np.random.default_rng(3)
    ts = []
    for t in ticks(400):
        nb, na = (int(k) for k in rng.integers(1, 13, 2))
        deeper = [{"price": lv["price"] - 0.5, "size": lv["size"] + 1} for lv in t["bids"][-2:]]
        ts.append(dict(t, bids=(t["bids"] + deeper)[:nb], asks=(t["asks"] + t["asks"][-2:])[:na]))
    dense = {}
    for side in ("asks", "bids"):
        price = np.full((len(ts), LEVELS), np.nan)
        size = np.zeros((len(ts), LEVELS), dtype=np.int64)
        for i, t in enumerate(ts):
            for k, lv in enumerate(t[side][:LEVELS]):
                price[i, k], size[i, k] = lv["price"], lv["size"]
        dense[side] = (price, size, np.array([len(t[side]) for t in ts]))
    got = book_from_levels(*dense["asks"], *dense["bids"])
    np.testing.assert_array_equal(got, book_array(ts))
    rows = rows_from_levels(*dense["asks"], *dense["bids"])
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, rows_from_book_array(book_array(ts)))


def test_push_rows_groups_windows_by_instrument() -> None:
    ts = ticks(600)
    rows = rows_from_book_array(book_array(ts))
    w = MarketWindows(window=40)
    got = w.push_rows([t["instrument"] for t in ts], np.array([t["sequence"] for t in ts]), rows)
    ready, windows = got.index, got.array()
    assert windows.dtype == np.float32 and windows.flags.c_contiguous
    chunks = [x.copy() for _, x in got.batches(7)]
    np.testing.assert_array_equal(np.concatenate(chunks), windows)
    insts = [ts[i]["instrument"] for i in ready]
    firsts = list(dict.fromkeys(t["instrument"] for t in ts))
    assert insts == sorted(insts, key=firsts.index)  # grouped, in order of first appearance
    for inst in firsts:
        idx = [i for i, t in enumerate(ts) if t["instrument"] == inst]
        mine = ready[[k for k, i in enumerate(insts) if i == inst]]
        assert mine.tolist() == idx[39:]
        np.testing.assert_array_equal(windows[insts.index(inst)], rows[idx[:40]])

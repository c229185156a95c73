"""The ``book40+mid`` feature layout: one definition for every path (record, array, dense
levels, online windows), the book columns unchanged, the path column the log-mid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from finscore.features.market import (
    LEVELS,
    N_FEATURES,
    PATH_LAYOUT,
    book_array,
    layout_width,
    make_windows,
    rows_from_book_array,
    rows_from_levels,
)
from finscore.features.market_windows import MarketWindows
from finscore.sim.market import MarketSimConfig, MarketSimulator


def ticks(n: int, instrument: str | None = None) -> list[dict]:
    ts = list(itertools.islice(MarketSimulator(MarketSimConfig(seed=8), chunk=1000).ticks(), n))
    return [t for t in ts if instrument is None or t["instrument"] == instrument]


def dense(ts: list[dict]) -> list[np.ndarray]:
    out = []
    for side in ("asks", "bids"):
        price = np.full((len(ts), LEVELS), np.nan)
        size = np.zeros((len(ts), LEVELS))
        count = np.array([min(len(t[side]), LEVELS) for t in ts])
        for i, t in enumerate(ts):
            for k, lv in enumerate(t[side][:LEVELS]):
                price[i, k], size[i, k] = lv["price"], lv["size"]
        out += [price, size, count]
    return out


def test_path_layout_adds_the_log_mid_beside_the_unchanged_book() -> None:
    ts = ticks(400)
    book = book_array(ts)
    rows = rows_from_book_array(book, PATH_LAYOUT)
    assert rows.shape == (len(ts), layout_width(PATH_LAYOUT)) == (len(ts), N_FEATURES + 1)
    np.testing.assert_array_equal(rows[:, :N_FEATURES], rows_from_book_array(book))
    mid = np.array([(t["bids"][0]["price"] + t["asks"][0]["price"]) / 2 for t in ts])
    np.testing.assert_array_equal(rows[:, N_FEATURES], (np.log(mid) * 1e4).astype(np.float32))


def test_dense_levels_path_is_bit_identical_to_the_array_path() -> None:
    ts = ticks(400)
    want = rows_from_book_array(book_array(ts), PATH_LAYOUT)
    np.testing.assert_array_equal(rows_from_levels(*dense(ts), PATH_LAYOUT), want)


def test_online_path_windows_equal_offline_and_survive_a_snapshot() -> None:
    ts = ticks(1500, "SIMA")
    rows = rows_from_book_array(book_array(ts), PATH_LAYOUT)
    offline, _ = make_windows(rows, np.zeros(len(ts), dtype=np.int8), window=40)
    w = MarketWindows(window=40, layout=PATH_LAYOUT)
    online = [win for _, win in w.push(ts[:300])]
    restored = MarketWindows(window=40, layout=PATH_LAYOUT)
    restored.restore("SIMA", w.snapshot("SIMA"))
    for i in range(300, len(ts), 111):
        online += [win for _, win in restored.push(ts[i : i + 111])]
    np.testing.assert_array_equal(np.stack(online), offline)


def test_rows_of_another_layout_and_unknown_layouts_are_refused() -> None:
    ts = ticks(50, "SIMA")
    w = MarketWindows(window=10, layout=PATH_LAYOUT)
    with pytest.raises(ValueError, match="41 wide"):
        w.push_rows(["SIMA"] * len(ts), np.arange(len(ts)), rows_from_book_array(book_array(ts)))
    with pytest.raises(ValueError, match="unknown market feature layout"):
        MarketWindows(window=10, layout="book40+vol")

"""Cash-flow features: daily takings per terminal and forecast rows (no look-ahead)."""

from __future__ import annotations

import numpy as np
import pytest

from finscore.features.cashflow import (
    CASHFLOW_FEATURE_NAMES,
    DAY_MS,
    daily_takings,
    forecast_rows,
    seasonal_naive_scale,
    weekday,
)
from finscore.sim.transactions import TxSimConfig, simulate_frame


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(TxSimConfig(n_customers=60, n_terminals=40, days=12, seed=3))


def test_daily_takings_equal_a_brute_force_loop(frame) -> None:  # noqa: ANN001
    t = daily_takings(frame.terminal_id, frame.event_time, frame.amount)
    first = int(frame.event_time.min()) // DAY_MS
    n_days = int(frame.event_time.max()) // DAY_MS - first + 1
    want: dict[tuple[int, int], float] = {}
    for tid, ts, amt in zip(frame.terminal_id, frame.event_time, frame.amount, strict=True):
        key = (int(tid), int(ts) // DAY_MS - first)
        want[key] = want.get(key, 0.0) + float(amt)
    assert t.first_day == first and t.values.shape == (len(set(frame.terminal_id)), n_days)
    assert list(t.terminals) == sorted(set(int(x) for x in frame.terminal_id))
    for i, tid in enumerate(t.terminals):
        for k in range(n_days):
            assert t.values[i, k] == pytest.approx(want.get((int(tid), k), 0.0), abs=1e-9)
    assert (t.values == 0).any()  # zero-filled days exist in this small frame


def test_daily_takings_fixed_terminals_and_days() -> None:
    tid = np.array([5, 7, 5, 9])
    ts = np.array([0, DAY_MS + 1, 2 * DAY_MS - 1, 3 * DAY_MS])
    amt = np.array([1.0, 2.0, 4.0, 8.0])
    t = daily_takings(tid, ts, amt, first_day=0, n_days=3, terminals=np.array([3, 5, 7]))
    # terminal 9 is not listed and day 3 is outside: both ignored; terminal 3 takes nothing
    np.testing.assert_array_equal(t.values, [[0, 0, 0], [1, 4, 0], [0, 2, 0]])


def test_rows_are_aligned_and_never_look_ahead() -> None:
    n_t, n_days, lookback, horizon = 3, 40, 28, 7
    rng = np.random.default_rng(0)
    v = rng.uniform(1, 10, size=(n_t, n_days))
    origins = np.array([28, 30, 33])
    x, y, scale = forecast_rows(v, origins, first_day=17_532, lookback=lookback, horizon=horizon)
    assert x.shape == (9, len(CASHFLOW_FEATURE_NAMES)) and y is not None and y.shape == (9, 7)
    for j, d in enumerate(origins):
        for i in range(n_t):
            r = j * n_t + i
            window = v[i, d - lookback : d]
            assert scale[r] == pytest.approx(window.mean())
            np.testing.assert_allclose(x[r, :lookback] * scale[r], window, rtol=1e-5)
            np.testing.assert_allclose(y[r] * scale[r], v[i, d : d + horizon], rtol=1e-5)
            assert x[r, lookback] == pytest.approx(np.log1p(scale[r]), rel=1e-6)
            assert np.argmax(x[r, lookback + 1 :]) == weekday(17_532 + d)
    # no look-ahead: changing any target day (or later) leaves the inputs unchanged
    v2 = v.copy()
    v2[:, 28:] += 1000.0
    x2, y2, _ = forecast_rows(v2, np.array([28]), first_day=17_532)
    x1, y1, _ = forecast_rows(v, np.array([28]), first_day=17_532)
    np.testing.assert_array_equal(x1, x2)
    assert y2 is not None and y1 is not None and not np.allclose(y1, y2)


def test_rows_reject_origins_without_history_or_targets() -> None:
    v = np.ones((2, 40))
    with pytest.raises(ValueError):
        forecast_rows(v, np.array([27]), first_day=0)
    with pytest.raises(ValueError):
        forecast_rows(v, np.array([34]), first_day=0)
    x, y, _ = forecast_rows(v, np.array([40]), first_day=0, with_targets=False)
    assert y is None and x.shape[0] == 2


def test_scale_is_floored_for_idle_terminals() -> None:
    v = np.zeros((1, 35))
    x, y, scale = forecast_rows(v, np.array([28]), first_day=0, min_scale=1.0)
    assert scale[0] == 1.0 and np.isfinite(x).all() and y is not None and (y == 0).all()


def test_weekday_and_seasonal_naive_scale() -> None:
    assert int(weekday(0)) == 3  # 1970-01-01 was a Thursday
    assert int(weekday(17_532)) == 0  # 2018-01-01 was a Monday
    w = np.array([[1, 2, 3, 4, 5, 6, 7, 2, 2, 3, 4, 5, 6, 9.0]])
    # |2-1| + 0 ... + |9-7| over 7 differences
    assert seasonal_naive_scale(w)[0] == pytest.approx((1 + 0 + 0 + 0 + 0 + 0 + 2) / 7)

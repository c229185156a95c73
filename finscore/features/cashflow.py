"""Cash-flow features: per-terminal daily takings and the forecaster's input rows (issue 18).

numpy only (the ground layer: never imports finscore.app, streams, compression or torch).

**Takings.** A terminal's takings on a UTC day are the sum of the amounts of its transactions
whose ``event_time`` falls in that day (``[k·86 400 000, (k+1)·86 400 000)`` ms since the
epoch); a day without transactions takes 0. :func:`daily_takings` returns a dense
terminals × days matrix over a contiguous range of days.

**Rows.** A forecast *origin* ``d`` is a day index: the forecast is made once day ``d − 1``
has closed, from the takings of the ``lookback`` days ``[d − lookback, d)``, for the
``horizon`` days ``[d, d + horizon)``. A target day is therefore never among its inputs.

**Scaling.** Each row is divided by its terminal's *recent mean*: the mean takings over the
row's own input window, floored at ``min_scale`` (default 1.0 currency unit, so an idle
terminal does not divide by zero); the targets use the same scale, so a forecast in currency
is ``output × scale``. The scale is computed from the inputs only (no look-ahead) and is
returned beside each row (the worker needs it to turn outputs back into currency).

**Input row** (:data:`CASHFLOW_FEATURE_NAMES`, ``lookback + 8`` values): the scaled takings of
the window, oldest first (``lag_28`` … ``lag_1`` for ``lookback = 28``); ``log_scale``
(``log1p(scale)``: the terminal's size, lost by scaling); a one-hot of the weekday of the first
target day (``dow_0`` = Monday … ``dow_6`` = Sunday; target day ``h`` falls on weekday
``(dow + h) mod 7``).

**Declared.** These are the features ``finscore/families/cashflow.toml`` declares (a
``daily_series`` feature, a ``quantiles`` output): :class:`finscore.families.series.DailySeries`
compiles a declaration into these functions' arguments, and the cash-flow family's training
(``finscore compress cashflow``) and worker (``finscore worker cashflow``) read them through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CASHFLOW_FEATURE_NAMES",
    "DAY_MS",
    "HORIZON",
    "LOOKBACK",
    "QUANTILES",
    "SEASON",
    "DailyTakings",
    "cashflow_feature_names",
    "daily_takings",
    "forecast_rows",
    "seasonal_naive_scale",
    "weekday",
]

DAY_MS = 86_400_000
LOOKBACK = 28  # days of takings a row looks back
HORIZON = 7  # days forecast from each origin
QUANTILES = (0.1, 0.5, 0.9)  # the forecaster's output levels
SEASON = 7  # days of the weekly season (seasonal naive, MASE)


def cashflow_feature_names(lookback: int = LOOKBACK) -> list[str]:
    """Input column names: ``lag_{lookback}`` … ``lag_1``, ``log_scale``, ``dow_0`` … ``dow_6``."""
    return (
        [f"lag_{k}" for k in range(lookback, 0, -1)]
        + ["log_scale"]
        + [f"dow_{i}" for i in range(7)]
    )


CASHFLOW_FEATURE_NAMES = cashflow_feature_names()


def weekday(day: np.ndarray | int) -> np.ndarray:
    """Weekday (0 = Monday … 6 = Sunday) of epoch day numbers (1970-01-01 was a Thursday)."""
    return (np.asarray(day, dtype=np.int64) + 3) % 7


@dataclass(frozen=True)
class DailyTakings:
    """Takings per terminal and UTC day: ``values[i, k]`` is terminal ``terminals[i]``'s sum of
    amounts on epoch day ``first_day + k`` (0 when it had no transaction)."""

    terminals: np.ndarray  # int64, sorted, unique
    first_day: int  # epoch day number of column 0
    values: np.ndarray  # float64 [n_terminals, n_days]

    @property
    def days(self) -> np.ndarray:
        """Epoch day numbers of the columns."""
        return self.first_day + np.arange(self.values.shape[1], dtype=np.int64)

    def select(self, rows: np.ndarray) -> DailyTakings:
        """The takings of the terminals at ``rows`` (indices or a boolean mask)."""
        return DailyTakings(self.terminals[rows], self.first_day, self.values[rows])


def daily_takings(
    terminal_id: np.ndarray,
    event_time: np.ndarray,
    amount: np.ndarray,
    *,
    first_day: int | None = None,
    n_days: int | None = None,
    terminals: np.ndarray | None = None,
) -> DailyTakings:
    """Sum of ``amount`` per terminal and UTC day of ``event_time`` (epoch ms), zero-filled.

    The days run from ``first_day`` (default: the earliest transaction's day) for ``n_days``
    (default: through the latest transaction's day); transactions outside them are ignored.
    ``terminals`` fixes the rows (sorted unique ids; transactions of other terminals are
    ignored, listed terminals without any take 0 every day); by default every terminal seen.
    """
    tid = np.asarray(terminal_id, dtype=np.int64)
    day = np.asarray(event_time, dtype=np.int64) // DAY_MS
    amt = np.asarray(amount, dtype=np.float64)
    if first_day is None:
        first_day = int(day.min()) if len(day) else 0
    if n_days is None:
        n_days = int(day.max()) - first_day + 1 if len(day) else 0
    ids = np.unique(tid) if terminals is None else np.asarray(terminals, dtype=np.int64)
    col = day - first_day
    row = np.searchsorted(ids, tid)
    known = row < len(ids)
    known[known] = ids[row[known]] == tid[known]
    keep = known & (col >= 0) & (col < n_days)
    values = np.zeros((len(ids), n_days), dtype=np.float64)
    np.add.at(values, (row[keep], col[keep]), amt[keep])
    return DailyTakings(ids, int(first_day), values)


def seasonal_naive_scale(window: np.ndarray, season: int = SEASON) -> np.ndarray:
    """In-sample mean absolute error of the seasonal-naive forecast over each row of
    ``window`` (``[n, L]``): ``mean_t |w[t] − w[t − season]|`` for ``t = season … L − 1`` (the
    denominator of MASE, computed from a row's inputs only)."""
    w = np.asarray(window, dtype=np.float64)
    return np.abs(w[:, season:] - w[:, :-season]).mean(axis=1)


def forecast_rows(
    takings: np.ndarray,
    origins: np.ndarray,
    *,
    first_day: int,
    lookback: int = LOOKBACK,
    horizon: int = HORIZON,
    min_scale: float = 1.0,
    with_targets: bool = True,
    scaled: bool = True,
    log_scale: bool = True,
    weekday_onehot: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Input rows (and targets) for every terminal (row of ``takings``) at every origin.

    ``takings``: ``[n_terminals, n_days]`` (:attr:`DailyTakings.values`); ``origins``: column
    indices ``d`` with ``lookback <= d`` (and ``d + horizon <= n_days`` when
    ``with_targets``); ``first_day``: the epoch day of column 0 (for the weekday). Rows are
    origin-major: row ``j · n_terminals + i`` is terminal ``i`` at ``origins[j]``.

    Returns ``(x, y, scale)``: ``x`` float32 ``[n, lookback + 8]`` (see the module docstring),
    ``y`` float32 ``[n, horizon]`` the takings of ``[d, d + horizon)`` divided by ``scale``
    (None without targets), ``scale`` float64 ``[n]``.

    A declared series (:mod:`finscore.families.series`) may leave parts out: ``scaled=False``
    (``scale`` is 1: no division), ``log_scale=False`` (no ``log_scale`` column),
    ``weekday_onehot=False`` (no weekday columns); the defaults are the layout above.
    """
    v = np.asarray(takings, dtype=np.float64)
    d = np.asarray(origins, dtype=np.int64).reshape(-1)
    n_days = v.shape[1]
    if len(d) and (d.min() < lookback or (with_targets and d.max() + horizon > n_days)):
        raise ValueError(
            f"origins must lie in [{lookback}, {n_days - horizon if with_targets else n_days}]"
        )
    if len(d) and d.max() > n_days:
        raise ValueError(f"origin {int(d.max())} is past the last day ({n_days})")
    past = d[:, None] + np.arange(-lookback, 0)[None, :]  # [o, L]
    window = v[:, past].transpose(1, 0, 2).reshape(-1, lookback)  # [o · t, L]
    scale = np.maximum(window.mean(axis=1), min_scale) if scaled else np.ones(len(window))
    parts = [window / scale[:, None]]
    if log_scale:
        parts.append(np.log1p(scale)[:, None])
    if weekday_onehot:
        parts.append(np.eye(7)[np.repeat(weekday(first_day + d), v.shape[0])])
    x = np.concatenate(parts, axis=1).astype(np.float32)
    if not with_targets:
        return x, None, scale
    ahead = d[:, None] + np.arange(horizon)[None, :]
    y = v[:, ahead].transpose(1, 0, 2).reshape(-1, horizon) / scale[:, None]
    return x, y.astype(np.float32), scale

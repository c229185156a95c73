"""A series family's declaration, compiled: its ``daily_series`` feature and ``quantiles``
output (:mod:`finscore.families.spec`) as the arguments of the cash-flow features'
functions (:mod:`finscore.features.cashflow`), so that training and the worker compute what
the TOML declares, with that module's arithmetic (float64 sums in input order).

:class:`DailySeries` is what ``finscore compress cashflow``
(:class:`~finscore.compression.cashflow.CashflowFamily`) and ``finscore worker cashflow``
(:class:`~finscore.streams.cashflow.pipeline.CashflowPipeline`) are built from:

- :meth:`DailySeries.values`: each event's contribution to its day (the ``field`` in its units
  as float64 for ``sum``, 1.0 for ``count``);
- :meth:`DailySeries.daily`: the keys × days matrix of a frame of events
  (:func:`~finscore.features.cashflow.daily_takings`);
- :meth:`DailySeries.rows`: the rows (and targets) of every key at origins
  (:func:`~finscore.features.cashflow.forecast_rows` with the declared window, horizon,
  scale, ``log_scale`` and weekday columns);
- :meth:`DailySeries.replace`: the same declaration with another window, horizon, quantiles
  or scale floor (a valid spec again; the benchmark's and the tests' variants);
- :meth:`DailySeries.for_model`: the series a model's manifest params name (checked: a model
  whose params cannot be forecast with is refused by name).

The ground: numpy, finscore.features and this package only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from finscore.families import spec as _spec
from finscore.families.exceptions import FamilySpecError
from finscore.families.spec import DailySeriesFeature, FamilySpec
from finscore.features.cashflow import DailyTakings, daily_takings, forecast_rows

__all__ = ["DailySeries"]


@dataclass(frozen=True)
class DailySeries:
    """A series family (``[output] kind = "quantiles"``, one ``daily_series`` feature),
    compiled; build it with :meth:`of`."""

    spec: FamilySpec
    feature: DailySeriesFeature

    @classmethod
    def of(cls, spec: FamilySpec) -> DailySeries:
        """The compiled series of ``spec``; raises :class:`FamilySpecError` unless it is a
        series family."""
        series = [f for f in spec.features if isinstance(f, DailySeriesFeature)]
        if spec.output.kind != "quantiles" or len(series) != 1:
            raise FamilySpecError(
                f"family {spec.name!r} is not a quantiles family with one daily_series feature"
            )
        return cls(spec, series[0])

    # -- what the declaration says ----------------------------------------------------------
    @property
    def key(self) -> str:
        """The field whose values are the series (a row per key)."""
        return self.feature.key

    @property
    def field(self) -> str | None:
        """The summed field (None for ``count``)."""
        return self.feature.field

    @property
    def stat(self) -> str:
        return self.feature.stat

    @property
    def lookback(self) -> int:
        """Days of the series a row reads (the feature's ``days``)."""
        return self.feature.days

    @property
    def horizon(self) -> int:
        """Days forecast from each origin (``[output] horizon_days``)."""
        assert self.spec.output.horizon_days is not None  # a quantiles output has one
        return self.spec.output.horizon_days

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self.spec.output.quantiles

    @property
    def min_scale(self) -> float:
        """The scale's floor (1.0 when the rows are not scaled: the scale is then 1)."""
        return self.feature.min_scale if self.feature.min_scale is not None else 1.0

    @property
    def scaled(self) -> bool:
        return self.feature.scale == "mean"

    @property
    def feature_names(self) -> tuple[str, ...]:
        """A row's columns (:attr:`FamilySpec.feature_names`)."""
        return self.spec.feature_names

    def replace(self, *, lookback: int | None = None, horizon: int | None = None,
                quantiles: tuple[float, ...] | None = None,
                min_scale: float | None = None) -> DailySeries:  # fmt: skip
        """The same declaration with another window, horizon, levels or scale floor (None:
        unchanged), checked as the declaration's entries are (:class:`FamilySpecError`)."""
        f, out = self.feature, self.spec.output
        if lookback is not None:
            f = dataclasses.replace(f, days=_spec._whole_days(lookback, "lookback"))
        if min_scale is not None:
            if not self.scaled or not min_scale > 0:
                raise FamilySpecError(f"min_scale {min_scale!r}: a positive floor of a scale")
            f = dataclasses.replace(f, min_scale=float(min_scale))
        if horizon is not None or quantiles is not None:
            levels, days = _spec._quantiles({
                "quantiles": list(quantiles if quantiles is not None else out.quantiles),
                "horizon_days": horizon if horizon is not None else out.horizon_days,
            })  # fmt: skip
            out = dataclasses.replace(out, quantiles=levels, horizon_days=days)
        return DailySeries(dataclasses.replace(self.spec, output=out, features=(f,)), f)

    def for_model(self, params: Mapping[str, Any]) -> DailySeries:
        """The series a model with manifest ``params`` forecasts: its ``lookback_days``,
        ``horizon_days``, ``quantiles`` and (a scaled series) ``min_scale`` where it names
        them, else the declaration's, checked as the declaration's entries are. Raises
        :class:`FamilySpecError` (``model params: ...``, naming the entry) for a model whose
        params cannot be forecast with: check it once, when the model is loaded."""
        floor = params.get("min_scale") if self.scaled else None
        levels = params.get("quantiles")
        try:
            if floor is not None and (isinstance(floor, bool)
                                      or not isinstance(floor, int | float)):  # fmt: skip
                raise FamilySpecError(f"min_scale {floor!r}: a positive floor of a scale")
            if levels is not None and not isinstance(levels, list | tuple):
                raise FamilySpecError(f"quantiles {levels!r}: a list of levels is needed")
            return self.replace(
                lookback=params.get("lookback_days"), horizon=params.get("horizon_days"),
                quantiles=tuple(levels) if levels is not None else None, min_scale=floor,
            )  # fmt: skip
        except FamilySpecError as exc:
            raise FamilySpecError(f"model params: {exc}") from None

    # -- computing it -----------------------------------------------------------------------
    def values(self, events: Any) -> np.ndarray:
        """Each event's contribution to its day, float64: the ``field`` in its units for
        ``sum`` (a decimal as its value, e.g. 12.34), 1.0 for ``count``. ``events``: a mapping
        of columns or an object with them as attributes (a
        :class:`~finscore.sim.frame.TransactionFrame`)."""
        n = len(_column(events, self.spec.input.time))
        if self.stat == "count":
            return np.ones(n, dtype=np.float64)
        assert self.field is not None
        return np.asarray(_column(events, self.field), dtype=np.float64)

    def daily(self, events: Any, *, first_day: int | None = None, n_days: int | None = None,
              keys: np.ndarray | None = None) -> DailyTakings:  # fmt: skip
        """The series of every key of ``events`` (integer keys, see :meth:`values`) per UTC
        day, zero-filled (:func:`~finscore.features.cashflow.daily_takings`: days from
        ``first_day`` for ``n_days``, rows ``keys``; by default every day and key seen)."""
        return daily_takings(
            _column(events, self.key), _column(events, self.spec.input.time),
            self.values(events), first_day=first_day, n_days=n_days, terminals=keys,
        )  # fmt: skip

    def rows(
        self, values: np.ndarray, origins: np.ndarray, *, first_day: int,
        with_targets: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:  # fmt: skip
        """``(x, y, scale)`` of every key (row of ``values``, ``[keys, days]``) at every
        origin (column indices; ``first_day``: the epoch day of column 0), as declared
        (:func:`~finscore.features.cashflow.forecast_rows`)."""
        f = self.feature
        return forecast_rows(
            values, origins, first_day=first_day, lookback=self.lookback, horizon=self.horizon,
            min_scale=self.min_scale, with_targets=with_targets, scaled=self.scaled,
            log_scale=f.log_scale is not None, weekday_onehot=f.weekday is not None,
        )  # fmt: skip


def _column(events: Any, name: str) -> Any:
    return events[name] if isinstance(events, Mapping) else getattr(events, name)

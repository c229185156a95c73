"""The cash-flow pipeline (pure): transactions → per-terminal daily takings → forecasts.

Built on the stream skeleton (:class:`~finscore.streams.pipeline.StreamPipeline`):

- **Decode and checks**: the fraud stream's (:func:`~finscore.streams.fraud.columns.
  decode_transactions`, :func:`~finscore.streams.fraud.pipeline.transaction_checks`):
  undecodable records and impossible values (amounts, ids, event times outside the bounds) are
  dead letters with the same reasons.
- **Takings** (:class:`TerminalTakings`): the declared daily series
  (``finscore/families/cashflow.toml``, compiled by
  :class:`~finscore.families.series.DailySeries`): the sum of the amounts per terminal per UTC
  day of ``event_time`` (the definition of :func:`finscore.features.cashflow.daily_takings`;
  another declaration may count instead, or read another window; the key is always
  ``terminal_id``, the key of the ``cashflow_forecast`` records, :func:`declared_series`);
  only the last ``lookback + 1`` days up to the latest day seen are kept: a transaction
  older than that is read but counts nowhere (too late for any forecast still to come).
- **Forecasts**: rows are taken in input order; when one's UTC day ``D`` is after every day
  seen before it (the stream's event time crosses midnight), before adding it the pipeline
  forecasts, with origin ``D``, every terminal with takings in the ``lookback`` days
  ``[D − lookback, D)`` (the closed days: :func:`~finscore.features.cashflow.forecast_rows`
  without targets, so no input is on or after ``D``); once per origin (a jump of several days
  forecasts from the day reached only). Nothing is forecast until the whole window lies after
  the first day the pipeline saw (which may have been read in part): origins ``D`` with
  ``D − lookback`` after that day. A late transaction (a day before the latest) still counts
  in its day, for the forecasts still to come.
- **Scores**: the live model's (ONNX Runtime, :class:`~finscore.streams.scoring.Scorer`)
  outputs ``[N, horizon, Q]`` in scaled units, times each row's scale, are the quantiles in
  currency (the model sorts each day's quantiles, so they never cross); a record per terminal
  (``cashflow_forecast``, keyed by terminal id, timestamped at the origin) names the model and
  its version. The model's horizon, levels and scale floor are its manifest's params, else
  the declaration's, checked once per model
  (:meth:`~finscore.families.series.DailySeries.for_model`). With no model loaded, the
  message that crossed midnight is a ``NoModel`` dead letter (no forecast is made silently);
  with a live model whose params cannot be forecast with (a scale floor not above 0, a
  horizon that is not a whole number of days...), a ``ModelRefused`` dead letter naming the
  param (the worker goes on). Challengers go through the step every stream shares
  (:meth:`~finscore.streams.pipeline.StreamPipeline.emit`, under the stream contract): a
  shadow's forecasts to ``cashflow-forecasts-shadow``, a canary's in place of the live ones
  for its share of terminals.

There is no changelog (``flush_state`` returns nothing): the takings are rebuilt from what the
pipeline reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from finscore.families import FamilySpec, FamilySpecError, builtin_family
from finscore.families.series import DailySeries
from finscore.features.cashflow import DAY_MS, LOOKBACK
from finscore.schemas.codec import Codec
from finscore.streams.bounds import DEFAULT_BOUNDS, InputBounds, first_failures
from finscore.streams.fraud.columns import TxColumns, decode_transactions
from finscore.streams.fraud.pipeline import transaction_checks
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import (
    BatchResult,
    Clock,
    DeadLetter,
    Stage,
    StreamPipeline,
    no_model,
    now_ms,
)
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message

__all__ = ["CashflowPipeline", "TerminalTakings"]


class TerminalTakings:
    """Takings per terminal per UTC day (epoch day number), the last ``keep_days`` days up to
    the latest day seen (:attr:`last_day`); ``first_day``: the first day ever seen."""

    def __init__(self, keep_days: int = LOOKBACK + 1) -> None:
        self.keep_days = keep_days
        self.days: dict[str, dict[int, float]] = {}
        self.first_day: int | None = None
        self.last_day: int | None = None

    def add(self, terminals: list[str], day: np.ndarray, amount: np.ndarray) -> None:
        """Add transactions (terminal, epoch day, amount) on days at most :attr:`last_day`
        (the caller advances it first, :meth:`advance`) and within the kept days; older ones
        are ignored."""
        if self.last_day is None:
            return
        oldest = self.last_day - self.keep_days + 1
        for t, d, a in zip(terminals, day.tolist(), amount.tolist(), strict=True):
            if d >= oldest:
                per_day = self.days.setdefault(t, {})
                per_day[d] = per_day.get(d, 0.0) + a

    def advance(self, day: int) -> None:
        """Make ``day`` the latest day (when after it) and forget the days no longer kept
        (and the terminals left without any)."""
        if self.first_day is None:
            self.first_day = day
        if self.last_day is not None and day <= self.last_day:
            return
        self.last_day = day
        oldest = day - self.keep_days + 1
        for t in list(self.days):
            kept = {d: v for d, v in self.days[t].items() if d >= oldest}
            if kept:
                self.days[t] = kept
            else:
                del self.days[t]

    def window(self, origin: int, lookback: int) -> tuple[list[str], np.ndarray]:
        """(the terminals with takings in ``[origin − lookback, origin)``, sorted; their
        takings over those days ``[n, lookback]``, oldest first)."""
        lo = origin - lookback
        names = sorted(t for t, per in self.days.items() if any(lo <= d < origin for d in per))
        values = np.zeros((len(names), lookback), dtype=np.float64)
        for i, t in enumerate(names):
            for d, v in self.days[t].items():
                if lo <= d < origin:
                    values[i, d - lo] = v
        return names, values


#: the transaction fields a declared series may read, as :class:`TxColumns` holds them: keyed
#: by terminal only, the key field of the ``cashflow_forecast`` records it writes
SERIES_KEYS = ("terminal_id",)
SERIES_FIELDS = ("amount",)


def declared_series(spec: FamilySpec, lookback: int | None = None) -> DailySeries:
    """The compiled series of ``spec`` (with ``lookback`` days when given) that this stream
    can compute from decoded transactions: the ``transaction`` schema by its ``event_time``,
    keyed by ``terminal_id`` (what its ``cashflow_forecast`` records are keyed by), the
    ``amount`` summed or the transactions counted; raises :class:`FamilySpecError`
    otherwise."""
    series = DailySeries.of(spec).replace(lookback=lookback)
    inp = spec.input
    if inp.schema.ref != "transaction" or inp.time != "event_time":
        raise FamilySpecError(
            f"family {spec.name!r}: the cash-flow stream reads the built-in 'transaction' "
            "schema by its event_time"
        )
    if series.key not in SERIES_KEYS:
        raise FamilySpecError(
            f"family {spec.name!r}: the cash-flow stream keys a series by terminal_id (the "
            f"terminal_id field of its cashflow_forecast records), not {series.key!r}"
        )
    if series.field is not None and series.field not in SERIES_FIELDS:
        raise FamilySpecError(f"family {spec.name!r}: the cash-flow stream sums "
                              f"{', '.join(SERIES_FIELDS)}, not {series.field!r}")  # fmt: skip
    return series


class CashflowPipeline(StreamPipeline[TxColumns]):
    """Transactions → daily takings → a forecast per terminal at each new UTC day (see the
    module docstring). No changelog: ``flush = "at_commit"`` with nothing to flush."""

    flush = "at_commit"

    def __init__(
        self,
        slot: ModelSlot,
        output_topic: str,
        *,
        family: FamilySpec | None = None,
        lookback: int | None = None,
        output_encoding: str = "avro",
        clock: Clock = time.time,
        in_codec: Codec | None = None,
        out_codec: Codec | None = None,
        bounds: InputBounds = DEFAULT_BOUNDS,
    ) -> None:
        """``family``: the declaration (default: the built-in ``cashflow``), compiled
        (:func:`declared_series`); ``lookback``: the days of takings a forecast reads (the
        model's ``lookback_days``; default: the declaration's)."""
        super().__init__(slot, output_topic, changelog_topic=None, clock=clock)
        self.series = declared_series(family or builtin_family("cashflow"), lookback)
        self.lookback = self.series.lookback
        self.takings = TerminalTakings(self.lookback + 1)
        self.output_encoding = output_encoding
        self.in_codec = in_codec or Codec("transaction")
        self.out_codec = out_codec or Codec("cashflow_forecast")
        self.bounds = bounds
        # the live model's series (its params, checked once per model), or why it has none
        self._model: tuple[Scorer, DailySeries | str] | None = None

    def decode(self, messages: list[Message]) -> tuple[TxColumns, list[DeadLetter]]:
        return decode_transactions(self.in_codec, messages)

    def message_at(self, cols: TxColumns, messages: list[Message]) -> Callable[[int], Message]:
        return lambda i: cols.messages[i]

    def checks(self) -> list[tuple[str, Stage[TxColumns]]]:
        """Impossible transactions (the fraud stream's reasons)."""
        return [("ImpossibleValue", self._impossible)]

    def _impossible(self, cols: TxColumns, now: int) -> tuple[np.ndarray, list[str]]:
        return first_failures(transaction_checks(cols, now, self.bounds), len(cols))

    def score(self, cols: TxColumns, messages: list[Message], result: BatchResult) -> None:
        """Add the rows' takings in input order, forecasting at each new day first."""
        day = np.asarray(cols.event_time, dtype=np.int64) // DAY_MS
        amount = self._contributions(cols)
        start = 0
        for i in self._crossings(day).tolist():
            self._add(cols, day, amount, start, i)
            start = i
            d = int(day[i])
            self.takings.advance(d)
            first = self.takings.first_day
            if first is not None and d - self.lookback > first:
                self._forecast(d, cols.messages[i], result)
        self._add(cols, day, amount, start, len(day))

    def _contributions(self, cols: TxColumns) -> np.ndarray:
        """Each row's contribution to its day (the declared series': the amount in units,
        or 1 for a count)."""
        if self.series.stat == "count":
            return np.ones(len(cols), dtype=np.float64)
        return np.asarray(cols.cents, dtype=np.float64) / 100.0

    def _keys(self, cols: TxColumns, lo: int, hi: int) -> list[str]:
        """The declared series' key of rows ``lo:hi``."""
        keys: list[str] = getattr(cols, self.series.key)
        return keys[lo:hi]

    def _crossings(self, day: np.ndarray) -> np.ndarray:
        """Rows whose day is after every day seen before them (the first row ever, too)."""
        if not len(day):
            return np.zeros(0, dtype=np.int64)
        last = self.takings.last_day
        prev = np.maximum.accumulate(np.concatenate([[day[0] - 1 if last is None else last],
                                                     day[:-1]]))  # fmt: skip
        return np.flatnonzero(day > prev)

    def _add(self, cols: TxColumns, day: np.ndarray, amount: np.ndarray, lo: int, hi: int) -> None:
        if hi > lo:
            self.takings.add(self._keys(cols, lo, hi), day[lo:hi], amount[lo:hi])

    def _forecast(self, origin: int, crossing: Message, result: BatchResult) -> None:
        """One forecast per terminal with takings in the window before ``origin``, by the live
        model and the slot's challenger through the shared challenger step
        (:meth:`~finscore.streams.pipeline.StreamPipeline.emit`: a shadow's forecasts go to
        ``cashflow-forecasts-shadow``, a canary's replace the live ones of its share of
        terminals)."""
        names, values = self.takings.window(origin, self.lookback)
        if not names:
            return
        live = self.slot.live
        if live is None:
            result.dead_letters += no_model([crossing])
            return
        series = self._series_of(live)
        if isinstance(series, str):  # params it cannot forecast with: named, not raised
            result.dead_letters.append(DeadLetter(crossing, "ModelRefused", series))
            return
        x, _, scale = series.rows(values, np.array([self.lookback]),
                                  first_day=origin - self.lookback, with_targets=False)  # fmt: skip
        out = self.run_models(live, x, result)
        origin_ms = origin * DAY_MS
        # one output per terminal, keyed by it and stamped with the origin: what emit keys by
        rows = [Message(self.output_topic, -1, -1, t.encode(), None, origin_ms) for t in names]
        processing = now_ms(self.clock)

        def encode(idx: np.ndarray | None, scorer: Scorer, q: np.ndarray, _shadow: bool
                   ) -> list[bytes]:  # fmt: skip
            picked = np.arange(len(names)) if idx is None else idx
            currency = np.asarray(q, dtype=np.float64) * scale[picked, None, None]
            return self._values([names[i] for i in picked.tolist()], origin_ms, currency,
                                scale[picked], scorer, processing)  # fmt: skip

        self.emit(result, rows, out.live, out.scores, out.challenger, out.challenger_scores,
                  encode)  # fmt: skip

    def _series_of(self, live: Scorer) -> DailySeries | str:
        """The series ``live`` forecasts (its manifest's horizon, levels and scale floor, else
        the declaration's: :meth:`DailySeries.for_model`), checked once per model; or the
        sentence saying why its params cannot be forecast with."""
        if self._model is None or self._model[0] is not live:
            label = f"{live.name} v{live.version}"
            series: DailySeries | str
            try:
                model = self.series.for_model(live.manifest.params or {})
            except FamilySpecError as exc:
                series = f"{label}: {exc}"
            else:
                series = model if model.lookback == self.lookback else (
                    f"{label} reads {model.lookback} days of takings; the stream provides "
                    f"{self.lookback}"
                )  # fmt: skip
            self._model = (live, series)
        return self._model[1]

    def _values(
        self, names: list[str], origin_ms: int, quantiles: np.ndarray, scale: np.ndarray,
        scorer: Scorer, processing: int,
    ) -> list[bytes]:  # fmt: skip
        params = scorer.manifest.params or {}
        levels = [float(q) for q in params.get("quantiles", self.series.quantiles)]
        days = [origin_ms + h * DAY_MS for h in range(quantiles.shape[1])]
        return [
            self.out_codec.encode(
                {
                    "terminal_id": t,
                    "origin": origin_ms,
                    "days": days,
                    "levels": levels,
                    "quantiles": quantiles[i].tolist(),
                    "scale": float(scale[i]),
                    "model_name": scorer.name,
                    "model_version": scorer.version,
                    "processing_time": processing,
                },
                self.output_encoding,
            )
            for i, t in enumerate(names)
        ]

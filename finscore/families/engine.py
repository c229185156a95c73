"""The feature engine of a declared family: one code path for training and the workers.

:class:`DeclaredFeatures` compiles a :class:`~finscore.families.spec.FamilySpec` into the
columnar state the hand-coded fraud features use (:class:`~finscore.features.timestore.
TimeStore`): one store per window key (value columns: the summed fields in exact integer
units, and their squares for z-scores) and one per label-risk key (label, late flag, label
time, and a 0/1 column per habit filter its features use: the label is a positive that the
habit does not explain). A habit's labels (its ``habit_key``'s, with the ``habit_field`` in
exact integer units) are held in that key's label-risk store, or in a store of their own
when that one holds habit flags itself; labels go there first, so each label's habit flag is
decided from its habit key's labels received so far, this batch's included, as the fraud
features decide theirs. The worker calls :meth:`DeclaredFeatures.transform_columns` on each
batch and :meth:`DeclaredFeatures.apply_label_columns` on the labels it reads; training calls
:func:`featurize`, which replays those two methods day by day over the history, as
:func:`finscore.features.fraud.featurize_frame` does. So offline and online features are the
same by construction, and the arithmetic is the fraud code's (integer sums, float64, then
float32), so the declared handbook family gives its features bit for bit.

Semantics, as in :mod:`finscore.features.fraud`: each event is added to its key's windows
before its features are read (so ``(t − w, t]`` includes it); within a batch, rows are
processed in chunks in which every key's times increase, which gives what one row at a time
gives; an event replayed with the same id, key and time, and a label replayed, count once.
Label-risk windows count the labels of events in ``(t − delay − w, t − delay]`` that were
known at ``t`` (a label that came later than the delay is left out until its label time; a
streak's run is then recounted from that key's entries, as the fraud features' is).
A window over a key other than the topic's key sees only the events this instance reads.

State protocol (the one :class:`~finscore.features.fraud.FraudFeatures` offers for its part
``"all"`` under ``all_outcomes``, same names and semantics, so a worker drives either): the
windows over the topic's key (``[input] key``) are the partitioned state. Their store records
its new entries; :meth:`DeclaredFeatures.take_changes` hands them out as append-only changelog
records grouped by partition, :meth:`DeclaredFeatures.add_changes` rebuilds the windows from
such records (records of :meth:`FraudFeatures.take_changes <finscore.features.fraud.
FraudFeatures.take_changes>` too, for the declared fraud family: the same rows, time, tag,
amount in cents and its square), :meth:`DeclaredFeatures.forget_changes` drops those of
revoked keys, and :meth:`DeclaredFeatures.snapshot_keys` / :meth:`DeclaredFeatures.
restore_keys` copy keys' whole windows (FraudFeatures' names for them are on
:class:`~finscore.families.fraud.DeclaredFraudFeatures`). :meth:`DeclaredFeatures.find_conflicts` finds a transaction id reused under the same
key with another time or other summed values (a duplicate, which must not enter the state).
Label-risk and habit stores are not in the changelog: the labels are a global side input,
rebuilt at each start by reading the label topic from the beginning.

A changelog record's rows are unnamed int64 columns (time, tag, then the store's columns), so
they mean something only under the declaration that wrote them: :meth:`DeclaredFeatures.
changelog_layout` describes that layout (the topic's key, each column with its integer unit,
the spans) and :meth:`DeclaredFeatures.layout_digest` is a short digest of it, which a worker
puts in its changelog's name so that an edited declaration never reads another's rows.
:meth:`DeclaredFeatures.valid_rows` tells which rows the engine could have written (summed
values within :data:`MAX_SUMMED_UNITS` / :data:`MAX_SQUARED_UNITS`, squares that are their
fields' squares, ...): what a restore keeps.

Windows over a key other than the topic's key are not in the changelog either: their entries
come from every partition this instance reads, so no topic partition holds them. After a
restart or a rebalance they are rebuilt only from the events this instance reads from then on
(a family whose windows are all over the topic's key restarts with the very features an
uninterrupted run gives; one with such windows does not).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from finscore.families.columns import (
    column,
    records_to_columns,
    strings,
    times,
    units,
    unscaled,
)
from finscore.families.exceptions import FamilyInputError, FamilySpecError
from finscore.families.spec import (
    DAY_MS,
    CategoryFeature,
    FamilySpec,
    LabelRiskFeature,
    RawFeature,
    TimeFlagFeature,
    WindowFeature,
)
from finscore.features.fraud import tags_of, time_chunks
from finscore.features.timestore import TimeStore

__all__ = ["MAX_SQUARED_UNITS", "MAX_SUMMED_UNITS", "DeclaredFeatures", "featurize"]

#: A value a window sums, in its integer unit (cents for a decimal of scale 2), is at most
#: this large: window sums are exact int64 sums, which this keeps far from overflowing.
MAX_SUMMED_UNITS = 10**12
#: ... and at most this large where its square is summed too (a z-score), as the fraud
#: stream's amount bound (1e8 cents).
MAX_SQUARED_UNITS = 10**8
TAGS = 1 << 32  # tags are CRC-32s of ids: 0 <= tag < 2**32

_NIGHT_MS = 7 * 3_600_000  # night: hour <= 6, as the handbook
_HOUR_MS = 3_600_000
RECENT = 1024  # event times behind the eviction watermark (its median)
SEEN = "seen"  # the column of a counts-only store over the topic's key (1 per entry)


@dataclass
class _Windows:
    """The window features over one key: their store, distinct spans and summed columns."""

    key: str
    store: TimeStore
    spans: list[int]
    fields: list[str]  # summed fields (store columns of the same names)
    squares: list[str]  # fields whose squares are summed too (store column "<field>^2")
    features: list[tuple[int, WindowFeature]]  # (output column, feature)


@dataclass(frozen=True)
class _Habit:
    """A habit filter: labels of ``key`` over ``span_ms``, ``field`` against ``ratio`` × mean."""

    key: str
    field: str
    span_ms: int
    ratio: float

    @staticmethod
    def of(f: LabelRiskFeature) -> _Habit | None:
        if f.positives != "habit":
            return None
        assert f.habit_key is not None and f.habit_field is not None
        assert f.habit_ratio is not None
        return _Habit(f.habit_key, f.habit_field, f.habit_span_ms, f.habit_ratio)


@dataclass
class _Risks:
    """The label-risk features over one key: their store and distinct spans; ``flags``: the
    store column of each habit filter its features use; ``habits``: the habit filters whose
    labels this store holds (a habit source: its ``habit_key`` is ``key``), ``fields`` their
    summed fields (store columns ``sum:<field>``)."""

    key: str
    store: TimeStore
    spans: list[int]
    features: list[tuple[int, LabelRiskFeature]]
    flags: dict[_Habit, str] = field(default_factory=dict)
    habits: list[_Habit] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(h.field for h in self.habits))

    def positive(self, f: LabelRiskFeature) -> str:
        """The store column of ``f``'s positives: ``label``, or its habit filter's flag."""
        h = _Habit.of(f)
        return "label" if h is None else self.flags[h]

    def lookback_ms(self) -> int:
        """How far before the delayed window's end this store is read: its longest window,
        or a habit's (read back from a label's event time when it is applied)."""
        return max([*self.spans[-1:], *(h.span_ms for h in self.habits)])


def _windows(
    key: str,
    features: list[tuple[int, WindowFeature]],
    origin: int | None,
    own: bool,
    track: bool,
) -> _Windows:
    """The store of the window features over ``key``: a column per summed field, and one per
    squared field (``<field>^2``, for z-scores); ``own``: ``key`` is the topic's key (then
    the store holds a column even for counts only, for :meth:`DeclaredFeatures.
    find_conflicts`); ``track``: it records its changes (see :meth:`DeclaredFeatures.
    take_changes`)."""
    fields = list(dict.fromkeys(f.field for _, f in features if f.field is not None))
    squares = list(dict.fromkeys(f.field for _, f in features if f.stat == "zscore" and f.field))
    held = (*fields, *(f"{s}^2" for s in squares))
    if own and not held:  # counts only: a column all the same (find_conflicts reads one)
        held = (SEEN,)
    store = TimeStore(held, track_changes=track, origin=origin)
    return _Windows(key, store, sorted({f.span_ms for _, f in features}), fields, squares, features)


class DeclaredFeatures:
    """Online feature state of a declared family (see the module docstring)."""

    def __init__(
        self, spec: FamilySpec, *, time_origin_ms: int | None = None, track_changes: bool = True
    ) -> None:
        """``time_origin_ms``: the earliest storable time (see :class:`TimeStore`; None:
        centred on the first times written); ``track_changes``: remember the entries added to
        the windows over the topic's key until :meth:`take_changes` (a worker's changelog;
        False where nobody takes them, e.g. training: :func:`featurize`)."""
        self.spec = spec
        self.feature_names: tuple[str, ...] = spec.feature_names
        self._fields = spec.input.schema.fields
        self._rows: list[tuple[int, RawFeature | TimeFlagFeature | CategoryFeature]] = []
        by_key: dict[str, list[tuple[int, WindowFeature]]] = {}
        risk_by_key: dict[str, list[tuple[int, LabelRiskFeature]]] = {}
        j = 0
        for f in spec.features:
            if isinstance(f, WindowFeature):
                by_key.setdefault(f.key, []).append((j, f))
            elif isinstance(f, LabelRiskFeature):
                risk_by_key.setdefault(f.key, []).append((j, f))
            elif isinstance(f, RawFeature | TimeFlagFeature | CategoryFeature):
                self._rows.append((j, f))
            else:  # daily_series, sequence: their own engines (families.series, market windows)
                raise FamilySpecError(
                    f"feature {f.name!r}: kind {f.kind!r} is not computed per event by "
                    "DeclaredFeatures (a series family runs through `worker cashflow`, a "
                    "sequence family through `worker market`)"
                )
            j += len(f.values) if isinstance(f, CategoryFeature) else 1
        self.delay_ms = spec.label.delay_ms  # after the kind check: it names what is wrong
        self.key = spec.input.key
        self._windows = [_windows(key, fs, time_origin_ms, key == self.key,
                                  track_changes and key == self.key)
                         for key, fs in by_key.items()]  # fmt: skip
        # The windows over the topic's key: the partitioned state (None when the family has
        # none: then there is no changelog state).
        self._own = next((w for w in self._windows if w.key == self.key), None)
        self._risks, self._sources = _risk_stores(risk_by_key, time_origin_ms)
        self._label_places = {
            f: spec.input.decimals_of(f) for r in self._sources for f in r.fields
        }  # fmt: skip
        self.latest_ms = 0
        self._recent = np.zeros(RECENT, dtype=np.int64)  # a ring of recent event times
        self._recent_n = 0

    # -- events -------------------------------------------------------------------------------
    def transform(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`transform_columns` of dict records (as the per-record decoder gives)."""
        return self.transform_columns(records_to_columns(records, self.spec.input_fields))

    def transform_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Features of each event, in order (float32 ``[n, len(feature_names)]``); each event
        is added to its keys' windows first. ``columns``: the input fields the family reads
        (:attr:`FamilySpec.input_fields`), see :mod:`finscore.families.columns`."""
        inp = self.spec.input
        n = _rows(columns, inp.id)
        out = np.zeros((n, len(self.feature_names)), dtype=np.float32)
        if n == 0:
            return out
        t = times(column(columns, inp.time, n))
        tags = tags_of(strings(column(columns, inp.id, n)))
        for w in self._windows:
            self._window_features(out, w, columns, t, tags)
        self.latest_ms = max(self.latest_ms, int(t.max()))
        self._observe(t)
        for j, f in self._rows:
            self._row_feature(out, j, f, columns, t, n)
        for r in self._risks:
            self._risk_features(out, r, strings(column(columns, r.key, n)), t)
        return out

    def _window_features(
        self, out: np.ndarray, w: _Windows, columns: Mapping[str, Any], t: np.ndarray,
        tags: np.ndarray,
    ) -> None:  # fmt: skip
        """Insert each row into its key's window, then read its windows (chunk by chunk)."""
        n = len(t)
        places = self.spec.input.decimals_of
        values = {f: unscaled(column(columns, f, n), self._fields[f], places(f)) for f in w.fields}
        for s in w.squares:
            values[f"{s}^2"] = values[s] * values[s]
        if not w.fields and w.store.value_names:
            values[SEEN] = np.ones(n, dtype=np.int64)
        idx = w.store.index_of(strings(column(columns, w.key, n)), create=True)
        for a, b in time_chunks(idx, t):
            w.store.insert(idx[a:b], t[a:b], tags[a:b], {c: v[a:b] for c, v in values.items()})
            stats = w.store.window_sums(idx[a:b], [t[a:b] - s for s in w.spans], t[a:b],
                                        tuple(values))  # fmt: skip
            for j, f in w.features:
                count, sums = stats[w.spans.index(f.span_ms)]
                out[a:b, j] = self._window_stat(f, count, sums, values, a, b)

    def _window_stat(
        self, f: WindowFeature, count: np.ndarray, sums: dict[str, np.ndarray],
        values: dict[str, np.ndarray], a: int, b: int,
    ) -> np.ndarray:  # fmt: skip
        """One window statistic, in the fraud features' arithmetic (unscaled sums, float64)."""
        n = count.astype(np.float64)
        if f.stat == "count":
            return n
        assert f.field is not None
        scale = self._scale(f.field)
        s1 = sums[f.field].astype(np.float64)
        if f.stat == "sum":
            return s1 / scale if scale != 1 else s1
        mean = np.divide(s1, n, out=np.zeros(len(n)), where=n > 0)
        if f.stat == "mean":
            return mean / scale if scale != 1 else mean
        v = values[f.field][a:b]
        if f.stat == "ratio":
            return np.divide(v, mean, out=np.ones(len(n)), where=mean > 0)
        s2 = sums[f"{f.field}^2"].astype(np.float64)
        var = np.maximum(np.divide(s2 * n - s1 * s1, n * n, out=np.zeros(len(n)), where=n > 1), 0)
        std = np.sqrt(var)
        return np.divide(v - mean, std, out=np.zeros(len(n)), where=std > 1e-7)

    def _scale(self, name: str) -> int:
        """10^places of a summed field's integer unit (100 for cents)."""
        f = self._fields[name]
        if f.kind == "decimal":
            return int(10**f.scale)
        places = self.spec.input.decimals_of(name)
        return int(10**places) if places else 1

    def _row_feature(
        self, out: np.ndarray, j: int, f: RawFeature | TimeFlagFeature | CategoryFeature,
        columns: Mapping[str, Any], t: np.ndarray, n: int,
    ) -> None:  # fmt: skip
        """A feature of the row alone: a raw field, a time flag, a one-hot category."""
        if isinstance(f, RawFeature):
            x = units(column(columns, f.field, n), self._fields[f.field])
            out[:, j] = np.log1p(x) if f.transform == "log1p" else x
        elif isinstance(f, TimeFlagFeature):
            day, ms_of_day = np.divmod(t, DAY_MS)
            if f.flag == "weekend":
                out[:, j] = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
            elif f.flag == "night":
                out[:, j] = ms_of_day < _NIGHT_MS
            else:
                out[:, j] = ms_of_day // _HOUR_MS
        else:
            col = column(columns, f.field, n)
            symbols = self._fields[f.field].symbols
            if isinstance(col, np.ndarray) and col.dtype.kind in "iu" and symbols:
                lookup = np.array([f.values.index(s) if s in f.values else -1 for s in symbols])
                ok = (col >= 0) & (col < len(symbols))
                code = np.where(ok, lookup[np.where(ok, col, 0)], -1)
            else:
                position = {v: i for i, v in enumerate(f.values)}
                code = np.fromiter(map(position.get, col, repeat(-1)), np.int64, n)
            hit = np.flatnonzero(code >= 0)
            out[hit, j + code[hit]] = 1

    def _risk_features(self, out: np.ndarray, r: _Risks, keys: Sequence[str], t: np.ndarray
                       ) -> None:  # fmt: skip
        """Label-risk columns: labels of events in (t − delay − w, t − delay] known at t; a
        streak's run from the latest label at or before the window's end that is not one of its
        positives (the window's start where there is none)."""
        end = t - self.delay_ms
        afters = [end - s for s in r.spans]
        idx = r.store.index_of(keys, create=False)
        streaks = [(j, f) for j, f in r.features if f.stat == "streak"]
        for _, f in streaks:
            last = r.store.last_time_of_zero(idx, end, r.positive(f))
            afters.append(np.maximum(end - f.span_ms, last))
        columns = ("label", *r.flags.values())
        stats = r.store.window_sums(idx, afters, end, (*columns, "late"))
        for after, (count, sums) in zip(afters, stats, strict=True):
            for row in np.flatnonzero(sums["late"]).tolist():  # labels that may not be known yet
                e = r.store.entries(int(idx[row]), int(after[row]), int(end[row]))
                unknown = e["label_time"] > t[row]
                count[row] -= int(unknown.sum())
                for c in columns:
                    sums[c][row] -= int(e[c][unknown].sum())
        runs = iter(stats[len(r.spans) :])
        for j, f in r.features:
            window = stats[r.spans.index(f.span_ms)]
            if f.stat == "streak":
                run = next(runs)[0].astype(np.float64)
                start = end - f.span_ms
                for row in np.flatnonzero(window[1]["late"]).tolist():  # a late label: recount
                    at = (int(idx[row]), int(start[row]), int(end[row]), int(t[row]))
                    run[row] = _recount_run(r.store, r.positive(f), *at)
                out[:, j] = np.log1p(run)
                continue
            count, sums = window
            n = count.astype(np.float64)
            pos = sums[r.positive(f)].astype(np.float64)
            if f.stat == "count":
                out[:, j] = n
            elif f.stat == "sum":
                out[:, j] = pos
            else:
                out[:, j] = np.divide(pos, n, out=np.zeros(len(n)), where=n > 0)

    # -- labels -------------------------------------------------------------------------------
    def apply_labels(self, records: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`apply_label_columns` of dict label records."""
        self.apply_label_columns(records_to_columns(records, self.spec.label_fields))

    def apply_label_columns(self, columns: Mapping[str, Any]) -> None:
        """Add delayed labels (columns of :attr:`FamilySpec.label_fields`) to the label-risk
        state; a label counts in a window only from its label time on. Idempotent: a label
        replayed with the same id, key and event time counts once."""
        lab = self.spec.label
        n = _rows(columns, lab.id)
        if n == 0 or not self._risks:
            return
        tx_time = times(column(columns, lab.time, n))
        label_time = times(column(columns, lab.label_time, n))
        label = np.asarray(column(columns, lab.field, n)).astype(np.int64)
        values = {
            "label": label,
            "late": (label_time - tx_time > self.delay_ms).astype(np.int64),
            "label_time": label_time,
        }
        tags = tags_of(strings(column(columns, lab.id, n)))
        keys: dict[str, list[str]] = {}
        flags: dict[_Habit, np.ndarray] = {}
        # Habit sources first: a label's habit flag is decided from its habit key's labels
        # received so far, this batch's included.
        for r in self._sources:
            names = keys.setdefault(r.key, strings(column(columns, r.key, n)))
            idx = r.store.index_of(names, create=True)
            held = {f"sum:{f}": unscaled(column(columns, f, n), lab.schema.fields[f],
                                         self._label_places[f]) for f in r.fields}  # fmt: skip
            r.store.insert(idx, tx_time, tags, {**values, **held})
            spans = sorted({h.span_ms for h in r.habits})
            stats = r.store.window_sums(idx, [tx_time - s for s in spans], tx_time, tuple(held))
            for h in r.habits:
                count, sums = stats[spans.index(h.span_ms)]
                v = held[f"sum:{h.field}"]
                flags[h] = label * (v * np.maximum(count, 1) < h.ratio * sums[f"sum:{h.field}"])
        for r in self._risks:
            if r.habits:
                continue  # a source, done
            names = keys.setdefault(r.key, strings(column(columns, r.key, n)))
            idx = r.store.index_of(names, create=True)
            r.store.insert(idx, tx_time, tags,
                           {**values, **{c: flags[h] for h, c in r.flags.items()}})  # fmt: skip

    # -- memory -------------------------------------------------------------------------------
    def _observe(self, t: np.ndarray) -> None:
        """Remember the newest event times (for :meth:`watermark_ms`)."""
        t = t[-RECENT:]
        at = self._recent_n % RECENT
        first = min(len(t), RECENT - at)
        self._recent[at : at + first] = t[:first]
        self._recent[: len(t) - first] = t[first:]
        self._recent_n += len(t)

    def watermark_ms(self) -> int:
        """The median of the last :data:`RECENT` event times (0 before any): the stream's
        time as eviction sees it, which no single far-future record moves."""
        if not self._recent_n:
            return 0
        return int(np.median(self._recent[: min(self._recent_n, RECENT)]))

    def evict(self, now_ms: int | None = None) -> None:
        """Forget what no feature can see any more at ``now_ms`` (default: the watermark):
        window entries older than their longest window, labels older than the delay plus
        theirs (a day of slack each)."""
        now = self.watermark_ms() if now_ms is None else now_ms
        for w in self._windows:
            w.store.evict(now - w.spans[-1] - DAY_MS)
        for r in self._stores():
            r.store.evict(now - self.delay_ms - r.lookback_ms() - DAY_MS)

    def held(self) -> dict[str, int]:
        """Entries held per store: ``window:<key>``, ``label_risk:<key>`` and, for a habit
        whose key's store holds habit flags itself, ``habit:<key>``."""
        out = {f"window:{w.key}": len(w.store) for w in self._windows}
        out.update({f"label_risk:{r.key}" if r.features else f"habit:{r.key}": len(r.store)
                    for r in self._stores()})  # fmt: skip
        return out

    def _stores(self) -> list[_Risks]:
        """The label stores: the label-risk keys', then the habits' own."""
        return [*self._risks, *(r for r in self._sources if not r.features)]

    def oldest(self) -> dict[str, int | None]:
        """The oldest time each store holds (None when empty), named as in :meth:`held`."""
        stores = [(f"window:{w.key}", w.store) for w in self._windows]
        stores += [(f"label_risk:{r.key}" if r.features else f"habit:{r.key}", r.store)
                   for r in self._stores()]  # fmt: skip
        out: dict[str, int | None] = {}
        for name, store in stores:
            held = store.time_range()
            out[name] = held[0] if held else None
        return out

    # -- checks -------------------------------------------------------------------------------
    def accepts_times(self, event_time: np.ndarray) -> np.ndarray:
        """Which event times every window store can hold (see the time store's limits)."""
        ok = np.ones(len(event_time), dtype=bool)
        for w in self._windows:
            ok &= w.store.accepts(event_time)
        return ok

    def accepts_label_times(self, tx_time: np.ndarray) -> np.ndarray:
        """Which labelled events' times every label store can hold."""
        ok = np.ones(len(tx_time), dtype=bool)
        for r in [*self._risks, *self._sources]:
            ok &= r.store.accepts(tx_time)
        return ok

    def find_conflicts(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Rows that reuse an id already held for their topic key (in the windows over that
        key, or earlier in this batch) with another event time or other summed values (in
        their integer units): duplicates, which must not enter the state. A repeat with the
        same time and values is a replay (at-least-once redelivery), not a conflict. Ids are
        compared by their 32-bit tag, as :meth:`FraudFeatures.find_conflicts
        <finscore.features.fraud.FraudFeatures.find_conflicts>` does (for the declared fraud
        family: the same rows). A family with no window over its topic's key holds no
        per-id state: nothing conflicts."""
        inp = self.spec.input
        n = _rows(columns, inp.id)
        conflict = np.zeros(n, dtype=bool)
        w = self._own
        if n == 0 or w is None:
            return conflict
        t = times(column(columns, inp.time, n))
        keys = strings(column(columns, self.key, n))
        tags = tags_of(strings(column(columns, inp.id, n)))
        places = inp.decimals_of
        values = [unscaled(column(columns, f, n), self._fields[f], places(f)) for f in w.fields]
        idx = w.store.index_of(keys, create=False)
        found, held_t, held_v = w.store.find_tags(idx, tags, w.store.value_names[0])
        conflict = found & (held_t != t)
        for k, f in enumerate(w.fields):
            if k:
                _, _, held_v = w.store.find_tags(idx, tags, f)
            conflict |= found & (held_v != values[k])
        uniq, counts = np.unique(tags, return_counts=True)
        if (counts > 1).any():  # rare: a tag repeated inside the batch, compared row by row
            first: dict[tuple[str, int], tuple[int, ...]] = {}
            for r in np.flatnonzero(np.isin(tags, uniq[counts > 1])).tolist():
                k2 = (keys[r], int(tags[r]))
                content = (int(t[r]), *(int(v[r]) for v in values))
                seen = first.get(k2)
                if seen is None:
                    if not found[r]:
                        first[k2] = content
                elif seen != content:
                    conflict[r] = True
        return conflict

    # -- changelog ----------------------------------------------------------------------------
    def _own_state(self, what: str) -> TimeStore:
        """The store of the windows over the topic's key; ValueError when there is none."""
        if self._own is None:
            raise ValueError(f"{what}: family {self.spec.name!r} has no window over its "
                             f"topic's key {self.key!r}, so no changelog state")  # fmt: skip
        return self._own.store

    @property
    def has_changelog_state(self) -> bool:
        """Whether the family has windows over its topic's key (the state a changelog holds)."""
        return self._own is not None

    def changelog_layout(self) -> str:
        """What the rows of this engine's changelog records mean, as canonical JSON: the
        topic's key, the columns after time and tag (each with its integer unit: 10^places
        of a summed field, its square for ``<field>^2``, 1 for ``seen``) and the windows'
        spans in ms. Two declarations with the same layout read each other's records; ""
        for a family without windows over its topic's key."""
        if self._own is None:
            return ""
        w = self._own

        def unit(column: str) -> int:
            if column == SEEN:
                return 1
            if column.endswith("^2"):
                return self._scale(column[:-2]) ** 2
            return self._scale(column)

        columns = [[c, unit(c)] for c in w.store.value_names]
        return json.dumps({"key": w.key, "columns": columns, "spans_ms": w.spans},
                          sort_keys=True, separators=(",", ":"))  # fmt: skip

    def layout_digest(self) -> str:
        """8 hex digits of SHA-256 of :meth:`changelog_layout` (a worker's changelog name
        carries it); "" for a family without windows over its topic's key."""
        layout = self.changelog_layout()
        return hashlib.sha256(layout.encode()).hexdigest()[:8] if layout else ""

    def valid_rows(self, rows: np.ndarray) -> np.ndarray:
        """Which changelog rows (the int64 table :meth:`add_changes`'s ``keep`` sees: time,
        tag, then the store's columns) this engine could have written: a time the store can
        hold, a 32-bit tag, each summed field within ±:data:`MAX_SUMMED_UNITS`
        (±:data:`MAX_SQUARED_UNITS` when its square is summed too: the bounds the pipeline
        holds events to), each ``<field>^2`` column its field's square, and the ``seen``
        column 1. A restore keeps only these (a row outside them would corrupt the window
        sums: an int64 overflow). ValueError for a family without windows over its topic's
        key."""
        store = self._own_state("valid_rows")
        assert self._own is not None
        w = self._own
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] != 2 + len(store.value_names):
            raise ValueError(f"rows of {rows.shape[-1] if rows.ndim else 0} columns; this "
                             f"engine's have {2 + len(store.value_names)}")  # fmt: skip
        tag = rows[:, 1]
        ok = store.accepts(rows[:, 0]) & (tag >= 0) & (tag < TAGS)
        col = {name: rows[:, 2 + j] for j, name in enumerate(store.value_names)}
        for f in w.fields:
            top = MAX_SQUARED_UNITS if f in w.squares else MAX_SUMMED_UNITS
            ok &= (col[f] >= -top) & (col[f] <= top)
        for f in w.squares:  # |field| <= 1e8 where ok: its square cannot overflow there
            v = np.where(ok, col[f], 0)
            ok &= col[f"{f}^2"] == v * v
        if SEEN in col:
            ok &= col[SEEN] == 1
        return ok

    def take_changes(self, partition_of: Mapping[str, int]) -> list[tuple[int, bytes]]:
        """The entries added to the windows over the topic's key since the last call, as
        (partition, record) pairs: a few records per partition of ``partition_of`` (key ->
        partition; keys it lacks are left out). An append-only changelog: :meth:`add_changes`
        on all its records rebuilds those windows. Costs what was added, not what is held.
        Empty for a family without such windows."""
        if self._own is None:
            return []
        return self._own.store.take_changes(partition_of)

    def add_changes(
        self,
        records: Iterable[tuple[str, bytes]],
        keep: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> int:
        """Rebuild the windows over the topic's key from changelog records (:meth:`take_changes`
        records or snapshots, any order, repeats harmless), then forget what no feature can
        see. Rows the store cannot hold, or that ``keep(table)`` refuses (int64 rows: time,
        tag, then the store's columns: each summed field in its integer unit, then the squares
        of the z-scored ones), are dropped; returns how many. Raises
        :class:`~finscore.features.exceptions.FeatureStateError` for a corrupt record, and
        ValueError for a family without windows over its topic's key."""
        store = self._own_state("add_changes")
        dropped = store.add_rows(records, keep)
        held = store.time_range()
        if held is not None:
            assert self._own is not None
            self.latest_ms = max(self.latest_ms, held[1])
            self._observe(store.newest_times(RECENT))
            store.evict(self.watermark_ms() - self._own.spans[-1] - DAY_MS)
        return dropped

    def forget_changes(self, keys: Iterable[str]) -> None:
        """Drop the unreported changes of these topic keys (their partition was revoked)."""
        if self._own is not None:
            self._own.store.forget_changes(keys)

    def snapshot_keys(self, keys: Iterable[str]) -> list[bytes]:
        """Each topic key's window state (the windows over the topic's key) as compact bytes."""
        return self._own_state("snapshot_keys").snapshot(keys)

    def restore_keys(self, snapshots: Mapping[str, bytes]) -> None:
        """Replace the window state of each topic key with its snapshot (one bulk write)."""
        store = self._own_state("restore_keys")
        store.restore(dict(snapshots))
        held = store.time_range()
        if held is not None:
            self.latest_ms = max(self.latest_ms, held[1])

    def keys(self) -> list[str]:
        """Topic keys that have window state."""
        return [] if self._own is None else self._own.store.key_names()

    def label_keys(self, key: str) -> list[str]:
        """Keys of the label-risk features over ``key`` that have labels (none when no
        label-risk feature is over ``key``)."""
        return next((r.store.key_names() for r in self._risks if r.key == key), [])


def featurize(
    spec: FamilySpec,
    columns: Mapping[str, Any],
    labels: Mapping[str, Any],
    *,
    time_origin_ms: int | None = None,
) -> np.ndarray:
    """Features of every event of a history (training), by replaying the online code.

    Events are taken in event-time order (stable; the result is in the input's order), labels
    in label-time order; day by day, the labels known before the day's end are applied, then
    the day's events transformed, then the state evicted at the day's end, exactly as
    :func:`finscore.features.fraud.featurize_frame`. Since a label counts only from its label
    time, the result is what a worker computes on the live stream."""
    inp, lab = spec.input, spec.label
    n = _rows(columns, inp.id)
    engine = DeclaredFeatures(spec, time_origin_ms=time_origin_ms, track_changes=False)
    out = np.zeros((n, len(engine.feature_names)), dtype=np.float32)
    if n == 0:
        return out
    t_all = times(column(columns, inp.time, n))
    order = np.argsort(t_all, kind="stable")
    t = t_all[order]
    cols = {c: _take(column(columns, c, n), order, c in _id_fields(spec, "input"))
            for c in spec.input_fields}  # fmt: skip
    m = _rows(labels, lab.id) if labels else 0
    labs: dict[str, Any] = {}
    label_t = np.zeros(0, dtype=np.int64)
    if m:
        label_t = times(column(labels, lab.label_time, m))
        l_order = np.argsort(label_t, kind="stable")
        label_t = label_t[l_order]
        labs = {c: _take(column(labels, c, m), l_order, c in _id_fields(spec, "label"))
                for c in spec.label_fields}  # fmt: skip
    done = np.zeros((n, out.shape[1]), dtype=np.float32)
    day_edges = np.arange(t[0] - t[0] % DAY_MS, t[-1] + DAY_MS + 1, DAY_MS)
    j = 0
    for start, end in zip(day_edges[:-1], day_edges[1:], strict=False):
        lo, hi = (int(v) for v in np.searchsorted(t, [start, end]))
        jj = int(np.searchsorted(label_t, end))
        if jj > j:
            engine.apply_label_columns({c: v[j:jj] for c, v in labs.items()})
            j = jj
        if hi > lo:
            done[lo:hi] = engine.transform_columns({c: v[lo:hi] for c, v in cols.items()})
        engine.evict(int(end))
    out[order] = done
    return out


def _risk_stores(
    by_key: dict[str, list[tuple[int, LabelRiskFeature]]], origin: int | None
) -> tuple[list[_Risks], list[_Risks]]:
    """The label-risk stores (one per key, in the features' order) and the habit sources: a
    key's label-risk store when it holds no habit flags itself, else a store of the habit's
    own (sources that share a label-risk store first)."""
    flags: dict[_Habit, str] = {}
    for fs in by_key.values():
        for _, f in fs:
            h = _Habit.of(f)
            if h is not None:
                flags.setdefault(h, f"habit:{len(flags)}")
    habits_of: dict[str, list[_Habit]] = {}
    for h in flags:
        habits_of.setdefault(h.key, []).append(h)

    def store(flag_columns: Iterable[str], habits: list[_Habit]) -> TimeStore:
        fields = dict.fromkeys(h.field for h in habits)
        held = (*flag_columns, *(f"sum:{f}" for f in fields))
        return TimeStore(("label", "late", "label_time", *held), origin=origin)

    risks: list[_Risks] = []
    for key, fs in by_key.items():
        used = {_Habit.of(f) for _, f in fs}
        mine = {h: c for h, c in flags.items() if h in used}
        habits = [] if mine else habits_of.get(key, [])
        spans = sorted({f.span_ms for _, f in fs})
        risks.append(_Risks(key, store(mine.values(), habits), spans, fs, mine, habits))
    sources = [r for r in risks if r.habits]
    shared = {r.key for r in sources}
    sources += [_Risks(key, store((), habits), [], [], {}, habits)
                for key, habits in habits_of.items() if key not in shared]  # fmt: skip
    return risks, sources


def _recount_run(store: TimeStore, positive: str, idx: int, after: int, end: int, t: int) -> int:
    """The run of one key from its entries: labels with an event time in (after, end] known at
    ``t`` later than the latest known one whose ``positive`` column is 0."""
    e = store.entries(idx, after, end, with_times=True)
    known = e["label_time"] <= t
    other = known & (e[positive] == 0)
    last = int(e["time"][other].max()) if other.any() else after
    return int((known & (e["time"] > last)).sum())


def _rows(columns: Mapping[str, Any], id_field: str) -> int:
    """How many rows ``columns`` hold (its id column's length)."""
    if id_field not in columns:
        raise FamilyInputError(f"missing column {id_field!r}")
    return len(columns[id_field])


def _id_fields(spec: FamilySpec, side: str) -> set[str]:
    """The id and key fields of the events (``side="input"``) or labels (``"label"``)."""
    risks = {f.key for f in spec.features if isinstance(f, LabelRiskFeature)}
    if side == "label":
        habits = {f.habit_key for f in spec.features
                  if isinstance(f, LabelRiskFeature) and f.habit_key is not None}  # fmt: skip
        return {spec.label.id, *risks, *habits}
    windows = {f.key for f in spec.features if isinstance(f, WindowFeature)}
    return {spec.input.id, *windows, *risks}


def _take(col: Any, order: np.ndarray, as_strings: bool) -> Any:
    """Rows ``order`` of a column (ids and keys as a list of strings, once for all days)."""
    if as_strings:
        names = strings(col)
        return [names[i] for i in order.tolist()]
    if isinstance(col, np.ndarray):
        return col[order]
    return [col[i] for i in order.tolist()]

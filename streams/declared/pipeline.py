"""The pipeline of a declared family (pure): its events → its features → the model → scores.

Built on the stream skeleton (:class:`~finscore.streams.pipeline.StreamPipeline`: the batch,
the validation stages, the challenger step and the flush protocol are the skeleton's). Per
batch, on columns: decode with the family's input schema (:class:`~finscore.streams.declared.
columns.RecordDecoder`; undecodable records are dead letters), validate, featurise with
:meth:`DeclaredFeatures.transform_columns <finscore.families.engine.DeclaredFeatures.
transform_columns>` (the code training uses, :func:`~finscore.families.engine.featurize`),
score with the live model on the features it names (:meth:`Scorer.select
<finscore.streams.scoring.Scorer.select>`, bound by name when it was admitted) and a
challenger, encode ``family_score`` records keyed like their input.

Validation (:func:`event_checks`): a value read as null, ids and keys (the ``[input]`` id and
key, the window and label-risk keys) empty or longer than the bounds allow, the event time
outside the bounds (:class:`~finscore.streams.bounds.InputBounds`: against the wall clock), a
float field read that is not finite, a summed field too large for exact window sums; each such
record is an ``ImpossibleValue`` dead letter with its reason and never reaches the state.
Replays (the same id, key and time) count once in the windows (the engine's rule) and are
scored again. Reused ids (:meth:`DeclaredPipeline._duplicates`, after the bounds): an id
already held for the same topic key with another event time or other summed values (in the
windows over that key, or earlier in the batch) is a ``DuplicateId`` dead letter (reason
``duplicate_id: ...``) and never enters the state, as the fraud stream's reused transaction
ids (:meth:`DeclaredFeatures.find_conflicts <finscore.families.engine.DeclaredFeatures.
find_conflicts>`).

State: the windows over the topic's key go to an append-only changelog (``changelog_topic``,
set by the stream) at each commit: :meth:`DeclaredPipeline.flush_state` writes the entries
added since the last flush (:meth:`DeclaredFeatures.take_changes <finscore.families.engine.
DeclaredFeatures.take_changes>`), each in the partition of the input its keys live in (in
exactly-once mode within the batch's transaction); the stream rebuilds them from it when
partitions are assigned. Windows over another key are not in it (see
:mod:`finscore.families.engine`): a worker that restarts, or takes over partitions, rebuilds
them only from the events it reads next. Labels (:class:`LabelsPipeline`) are read by the
stream from every partition of the label topic, from the beginning, so label-risk state is
whole after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finscore.families.columns import strings, times
from finscore.families.engine import MAX_SQUARED_UNITS, MAX_SUMMED_UNITS, DeclaredFeatures
from finscore.families.spec import FamilySpec, LabelRiskFeature, SchemaRef, WindowFeature
from finscore.schemas.codec import Codec
from finscore.streams.bounds import DEFAULT_BOUNDS, Check, InputBounds, first_failures
from finscore.streams.declared.columns import FamilyColumns, RecordDecoder, ScoreEncoder
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import (
    AppendOnlyPipeline,
    BatchResult,
    Clock,
    DeadLetter,
    Stage,
    no_model,
    now_ms,
)
from finscore.streams.scoring import top_features
from finscore.streams.transport import Message

__all__ = [
    "DUPLICATE",
    "DUPLICATE_ERROR",
    "MAX_SQUARED_UNITS",
    "MAX_SUMMED_UNITS",
    "DeclaredPipeline",
    "LabelsPipeline",
    "event_checks",
    "label_checks",
]

#: The reason's prefix and the error type of a reused id's dead letter.
DUPLICATE = "duplicate_id"
DUPLICATE_ERROR = "DuplicateId"


def _null_checks(cols: FamilyColumns, names: Sequence[str]) -> list[Check]:
    """A field the family reads is null in a row."""
    return [(cols.nulls[n], lambda i, n=n: f"{n} is null") for n in names if n in cols.nulls]


def _id_names(spec: FamilySpec, side: str) -> list[str]:
    """The id and key fields of the events (``side="input"``) or of the labels (``"label"``)."""
    risk_features = [f for f in spec.features if isinstance(f, LabelRiskFeature)]
    risks = [f.key for f in risk_features]
    if side == "label":  # the habit keys of habit-filtered risks are label keys too
        habits = [f.habit_key for f in risk_features if f.habit_key]
        return list(dict.fromkeys([spec.label.id, *risks, *habits]))
    windows = [f.key for f in spec.features if isinstance(f, WindowFeature)]
    return list(dict.fromkeys([spec.input.id, spec.input.key, *windows, *risks]))


def event_checks(spec: FamilySpec, cols: FamilyColumns, now: int,
                 bounds: InputBounds) -> list[Check]:  # fmt: skip
    """The bounds an event must meet, on whole columns (see the module docstring), in the
    order their reasons are given: nulls, ids and keys, the event time, finite floats, the
    size of summed values."""
    inp = spec.input
    checks = _null_checks(cols, cols.columns)
    for name in _id_names(spec, "input"):
        checks += bounds.id_checks(name, strings(cols[name]))
    checks += bounds.time_checks(inp.time, times(cols[inp.time]), now)
    schema = inp.schema
    for name in cols.columns:
        if schema.kind(name) in ("float", "double"):
            v = cols[name]
            checks.append((~np.isfinite(v), lambda i, n=name, v=v: f"{n} is {float(v[i])}"))
    summed = {f.field for f in spec.features if isinstance(f, WindowFeature) and f.field}
    squared = {f.field for f in spec.features
               if isinstance(f, WindowFeature) and f.stat == "zscore" and f.field}  # fmt: skip
    for name in sorted(summed):
        top = MAX_SQUARED_UNITS if name in squared else MAX_SUMMED_UNITS
        units = _units(schema, name, cols[name], inp.decimals_of(name))
        why = f"units, more than the {top:g} a window sums"
        checks.append((np.abs(units) > top,
                       lambda i, n=name, u=units, why=why: f"{n} is {float(u[i]):g} {why}"))  # fmt: skip
    return checks


def _units(schema: SchemaRef, name: str, col: Any, places: int | None) -> np.ndarray:
    """A summed field's values in its integer unit, as float64 (no overflow, NaN stays NaN)."""
    v = np.asarray(col).astype(np.float64)
    if schema.kind(name) in ("float", "double") and places:
        return v * 10.0**places
    return v


def label_checks(spec: FamilySpec, cols: FamilyColumns, now: int,
                 bounds: InputBounds) -> list[Check]:  # fmt: skip
    """The bounds a label must meet: nulls, ids and keys, its two times within the bounds,
    known no earlier than its event, and a 0/1 label."""
    lab = spec.label
    checks = _null_checks(cols, cols.columns)
    for name in _id_names(spec, "label"):
        checks += bounds.id_checks(name, strings(cols[name]))
    t, known = times(cols[lab.time]), times(cols[lab.label_time])
    checks += bounds.time_checks(lab.time, t, now)
    checks += bounds.time_checks(lab.label_time, known, now)
    checks.append((known < t, lambda i: f"{lab.label_time} {int(known[i])} is before "
                                        f"{lab.time} {int(t[i])}"))  # fmt: skip
    y = np.asarray(cols[lab.field])
    if y.dtype != np.bool_:
        checks.append(((y != 0) & (y != 1), lambda i: f"{lab.field} is {int(y[i])}, not 0 or 1"))
    return checks


class DeclaredPipeline(AppendOnlyPipeline[FamilyColumns]):
    """Scores a batch of a declared family's events on the stream skeleton; see the module
    docstring. The window state over the topic's key goes to ``changelog_topic`` at each
    commit (``flush = "at_commit"``, :meth:`~finscore.streams.pipeline.AppendOnlyPipeline.
    flush_state`: the entries added since the last flush, :meth:`DeclaredFeatures.take_changes
    <finscore.families.engine.DeclaredFeatures.take_changes>`; nothing when it is None); every
    ``evict_interval`` seconds a flush also forgets what no feature can see any more."""

    flush = "at_commit"

    def __init__(
        self,
        features: DeclaredFeatures,
        slot: ModelSlot,
        output_topic: str,
        *,
        in_codec: Codec,
        out_codec: Codec | None = None,
        output_encoding: str = "avro",
        threshold: float | None = None,
        clock: Clock = time.time,
        bounds: InputBounds = DEFAULT_BOUNDS,
        explain: int = 0,
        evict_interval: float = 30.0,
        changelog_topic: str | None = None,
    ) -> None:
        """``in_codec``: the per-record codec of the family's input schema; ``threshold``
        overrides the models' own; ``explain``: the top-k unusual features of each score
        (0: none); ``changelog_topic``: where :meth:`flush_state` writes the window state
        (None: nowhere, the state is this process's only)."""
        super().__init__(slot, output_topic, changelog_topic=changelog_topic, clock=clock,
                         evict_interval=evict_interval)  # fmt: skip
        self.features: DeclaredFeatures = features
        self.spec = spec = features.spec
        inp = spec.input
        self.decoder = RecordDecoder(inp.schema, [*spec.input_fields, inp.key], in_codec)
        self.scores_out = ScoreEncoder(out_codec or Codec("family_score"), spec.name, inp.id,
                                       inp.key, inp.time, output_encoding)  # fmt: skip
        self.threshold_override = threshold
        self.bounds = bounds
        self.explain = explain

    def decode(self, messages: list[Message]) -> tuple[FamilyColumns, list[DeadLetter]]:
        return self.decoder.decode(messages)

    def message_at(self, cols: FamilyColumns, messages: list[Message]) -> Callable[[int], Message]:
        return cols.messages.__getitem__

    def checks(self) -> list[tuple[str, Stage[FamilyColumns]]]:
        """Out of bounds (:func:`event_checks`, then the state's time range), then reused ids
        (:meth:`_duplicates`)."""
        return [("ImpossibleValue", self._impossible), (DUPLICATE_ERROR, self._duplicates)]

    def _impossible(self, cols: FamilyColumns, now: int) -> tuple[np.ndarray, list[str]]:
        time_field = self.spec.input.time
        t = times(cols[time_field])
        checks = [
            *event_checks(self.spec, cols, now, self.bounds),
            (~self.features.accepts_times(t),
             lambda i: f"{time_field} {int(t[i])} is out of the feature state's range"),
        ]  # fmt: skip
        return first_failures(checks, len(cols))

    def _duplicates(self, cols: FamilyColumns, now: int) -> tuple[np.ndarray, list[str]]:
        """Reused ids (policy: the first occurrence is scored; a repeat under the same topic
        key within the state's horizon with another event time or other summed values is a
        ``DuplicateId`` dead letter and never enters the state; an identical repeat is an
        at-least-once replay, scored again and counted once)."""
        conflict = np.flatnonzero(self.features.find_conflicts(cols.columns))
        inp = self.spec.input
        ids, keys = cols[inp.id], cols[inp.key]
        return conflict, [
            f"{DUPLICATE}: {inp.id} {str(ids[i])!r} of {inp.key} {str(keys[i])!r} was already "
            f"scored with another {inp.time} or other values"
            for i in conflict.tolist()
        ]

    def score(self, cols: FamilyColumns, messages: list[Message], result: BatchResult) -> None:
        """Features (into the window state), the live model and the challenger, scores (with
        the top features when ``explain``)."""
        live = self.slot.live
        if live is None:  # dead letters, and the state is not touched
            result.dead_letters += no_model(cols.messages)
            return
        x = self.features.transform_columns(cols.columns)
        if self.changelog_topic and self.features.has_changelog_state:
            self.touched(strings(cols[self.spec.input.key]), cols.messages)
        run = self.run_models(live, x, result)
        processing = now_ms(self.clock)
        top = top_features(run.x_live, live, self.explain) if self.explain else None

        self.emit_scores(result, cols.messages, cols, run, self.scores_out, processing, top)


class LabelsPipeline:
    """Applies a family's delayed labels to its label-risk state; bad labels are dead letters.

    Decoded like the events (:class:`~finscore.streams.declared.columns.RecordDecoder` with the
    label schema), checked (:func:`label_checks`), then given to
    :meth:`DeclaredFeatures.apply_label_columns
    <finscore.families.engine.DeclaredFeatures.apply_label_columns>` (idempotent: a label read
    twice counts once)."""

    def __init__(
        self,
        features: DeclaredFeatures,
        codec: Codec,
        *,
        bounds: InputBounds = DEFAULT_BOUNDS,
        clock: Clock = time.time,
    ) -> None:
        """``codec``: the per-record codec of the family's label schema."""
        self.features = features
        self.spec = spec = features.spec
        self.decoder = RecordDecoder(spec.label.schema, spec.label_fields, codec)
        self.bounds = bounds
        self.clock = clock

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → check → apply one batch of labels; ``scored`` counts those applied."""
        result = BatchResult()
        cols, result.dead_letters = self.decoder.decode(messages)
        if not len(cols):
            return result
        checks = label_checks(self.spec, cols, now_ms(self.clock), self.bounds)
        rows, reasons = first_failures(checks, len(cols))
        if len(rows):
            result.dead_letters += [
                DeadLetter(cols.messages[i], "ImpossibleValue", why)
                for i, why in zip(rows.tolist(), reasons, strict=True)
            ]
            keep = np.ones(len(cols), dtype=bool)
            keep[rows] = False
            cols = cols.take(np.flatnonzero(keep))
        self.features.apply_label_columns(cols.columns)
        result.scored = len(cols)
        return result

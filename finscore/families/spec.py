"""A feature family, declared: what a user writes (TOML) and what the engine compiles.

A family names its input topic and Avro schema, the event's id, key and time fields, its label
(topic, schema, the 0/1 field, the delay after which it is known), the model's output, and its
features, each from a small vocabulary (``kind``):

- ``raw``: a numeric field of the event (``field``), ``transform = "none" | "log1p"``. A
  decimal field is read in its units (``amount`` 12.34, not 1234 cents);
- ``time_flag``: ``flag = "weekend" | "night" | "hour"`` of the event time (UTC): Saturday or
  Sunday; hour <= 6; the hour 0..23;
- ``window``: over the events of the same ``key`` with a time in ``(t − days, t]``, the
  current one included: ``stat = "count" | "sum" | "mean" | "ratio" | "zscore"`` of a numeric
  ``field`` (not for ``count``); ``ratio`` is the event's value over the window's mean (1 where
  the mean is not positive), ``zscore`` its distance to that mean in the window's (population)
  standard deviations (0 where that is below 1e-7);
- ``label_risk``: over the labels of the same ``key`` whose event time is in
  ``(t − delay − days, t − delay]`` and that were known at ``t`` (label time <= t):
  ``stat = "count" | "sum" | "share" | "streak"`` (how many, how many positive, the positive
  share, 0 when there is none; ``streak``: ``log1p`` of the current run of positives, the
  known labels later than the latest known one that is not a positive, those at that one's
  time left out: the whole window's count when every known label is a positive).
  ``positives = "all"`` (the default) counts every positive label (label 1);
  ``positives = "habit"`` only those whose ``habit_field`` is below ``habit_ratio`` times the
  mean of ``habit_field`` over the labels of the same ``habit_key`` with an event time in
  ``(τ − habit_days, τ]``, τ the labelled event's time: the labels of that ``habit_key``
  received so far when the label is applied (its own and the rest of its batch included,
  whatever their label times). Decided once, when the label arrives (a label received later
  does not change it). E.g. a terminal's frauds that the card's own spending habit does not
  explain (a stolen card spends far above its habit, a compromised terminal defrauds cards at
  their usual amounts): ``key = "terminal_id"``, ``habit_key = "customer_id"``,
  ``habit_field = "amount"``, ``habit_days = 30``, ``habit_ratio = 2.5``; or a merchant's
  chargebacks on ordinary-sized orders. ``share`` stays over every known label and ``count``
  takes no ``positives``. ``habit_key`` and ``habit_field`` are fields of both schemas (a
  ``float``/``double`` ``habit_field`` is kept to the places ``[input.decimals]`` declares for
  it); the comparison is on exact integer units (``field × max(n, 1) < ratio × sum``);
- ``category``: a string or enum ``field`` one-hot over ``values`` (one column per value,
  named ``<name>_<value>``; all zero for any other value).

A **series family** (``[output] kind = "quantiles"``) forecasts, per key, the next days of a
daily series instead of scoring each event. It has no ``[label]`` (its targets are its own
series' next days, known once they close) and exactly one feature, a ``daily_series``:

- ``daily_series``: per ``key``, a day's ``stat = "sum" | "count"`` of the events (``sum`` of
  a numeric ``field``, in its units: a decimal 12.34 as 12.34) whose time falls in that UTC
  day (``[k·86 400 000, (k+1)·86 400 000)`` ms), 0 for a day without any. A row is a key at an
  *origin* day ``d``: the ``days`` (a whole number) whole days ``[d − days, d)`` before it,
  oldest first, columns ``<name>_<days>`` … ``<name>_1``; its targets are the
  ``horizon_days`` days ``[d, d + horizon_days)``. ``scale = "mean"`` divides the inputs and
  the targets by the row's *scale*, the mean of its input days floored at ``min_scale``
  (default 1.0); ``log_scale = "COLUMN"`` then adds ``log1p(scale)`` as a column;
  ``weekday = "PREFIX"`` adds a one-hot of the origin's weekday, ``PREFIX_0`` (Monday) …
  ``PREFIX_6`` (Sunday). Sums are float64 sums in input order (as
  :func:`finscore.features.cashflow.daily_takings` computes them), not the windows' exact
  integer sums. Compiled by :mod:`finscore.families.series`; ``cashflow.toml`` declares the
  cash-flow family (a terminal's next 7 days of takings).

``[output] kind = "quantiles"`` takes ``quantiles`` (increasing levels in (0, 1), e.g.
``[0.1, 0.5, 0.9]``) and ``horizon_days`` (a positive whole number); the model's output is
``[N, horizon_days, len(quantiles)]`` in the row's scale. ``"probability"`` (the default) is
a score per event in [0, 1]; ``"regression"`` is reserved.

A **sequence family** (the market family, ``market.toml``) scores each event with a window
model over its key's recent events. Exactly one feature, a ``sequence``:

- ``sequence``: the ``key``'s last ``events`` rows of a row ``layout``, in the order of
  ``[input] id`` (an increasing per-key number: a replayed id, not above the key's last, is
  skipped), one window per event once the key has ``events`` of them. ``layout`` names a row
  layout of :data:`finscore.features.market.LAYOUTS` (``"book40"``: a book snapshot's 10
  levels a side as offsets from the mid in basis points and ``log1p`` sizes; ``"book40+mid"``:
  and the mid as ``1e4·ln(mid)``), read from the input's ``bids`` and ``asks`` (arrays of
  levels with a ``price`` and a ``size``, best first); ``events`` is a window the window
  models take (:data:`~finscore.features.market.MIN_WINDOW` to
  :data:`~finscore.features.market.MAX_WINDOW`); ``key`` is ``[input] key`` (the windows are
  kept per partition key). Compiled into the market worker's state by
  :func:`finscore.features.market_windows.declared_windows`.

Its label is derived from the key's own later events, ``[label] kind = "smoothed_move"`` with
``horizon = k`` (book events) and nothing else (no label topic; :attr:`FamilySpec.move`):
FI-2010's smoothed mid-price move, the mean of the next k mids against the mean of the last k
(the current one included), down / flat / up against a threshold α set on the training data
(:func:`finscore.features.market.direction_labels`). ``[label] kind = "topic"`` (the default)
is the label topic above. Its output is ``[output] kind = "classes"`` with ``classes``, one
name per class in the model's order (a ``smoothed_move`` label gives 3: down, flat, up); with
an output ``schema`` the classes are the symbols of one of its enums (``price_signal``'s
``signal``: ``["DOWN", "FLAT", "UP"]``).

Window sums are exact integer sums: a decimal is summed in its unscaled units (cents), an
integer or boolean as it is, and a float or double only once ``[input.decimals]`` says how
many decimals of it to keep (it is then rounded to that fixed point).

``[label]``'s ``time`` is the labelled event's time and ``label_time`` when the label became
known; a ``label_risk`` key must be a field of both schemas. Schemas are a built-in name
(``"transaction"``, see :data:`finscore.schemas.SCHEMA_NAMES`) or an ``.avsc`` path relative
to the TOML file. The examples, the handbook's 15 fraud features and the whole 23-feature fraud
row (:data:`finscore.features.fraud.FRAUD_FEATURE_NAMES`), are ``fraud_handbook.toml`` and
``fraud_declared.toml`` in this package (:func:`builtin_family`), with ``credit.toml``
(credit risk on the German credit data) and ``cashflow.toml`` (a series family).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from finscore.families.exceptions import FamilySpecError
from finscore.features.market import LAYOUTS, MAX_WINDOW, MIN_WINDOW, layout_width
from finscore.schemas import SCHEMA_NAMES, SchemaError, load_schema
from finscore.schemas.columnar.plan import Field, plan

__all__ = [
    "BUILTIN_FAMILIES",
    "DAY_MS",
    "FEATURE_KINDS",
    "family_file",
    "POSITIVES",
    "CategoryFeature",
    "DailySeriesFeature",
    "FamilySpec",
    "Feature",
    "InputSpec",
    "LabelRiskFeature",
    "LabelSpec",
    "OutputSpec",
    "RawFeature",
    "MoveLabel",
    "SchemaRef",
    "SequenceFeature",
    "TimeFlagFeature",
    "WindowFeature",
    "builtin_family",
    "load_family",
]

DAY_MS = 86_400_000
FEATURE_KINDS = ("raw", "time_flag", "window", "label_risk", "category", "daily_series", "sequence")
#: which positive labels a label_risk feature counts (see the module docstring)
POSITIVES = ("all", "habit")
HABIT_OPTIONS = ("habit_key", "habit_field", "habit_days", "habit_ratio")
RAW_TRANSFORMS = ("none", "log1p")
TIME_FLAGS = ("weekend", "night", "hour")
WINDOW_STATS = ("count", "sum", "mean", "ratio", "zscore")
LABEL_STATS = ("count", "sum", "share", "streak")
OUTPUT_KINDS = ("probability", "quantiles", "classes")
RESERVED_OUTPUT_KINDS = ("regression",)
NUMERIC_KINDS = ("boolean", "int", "long", "float", "double", "decimal")
KEY_KINDS = ("string", "int", "long")
TIME_KINDS = ("int", "long")
MAX_DECIMALS = 9  # a float kept to more places would leave int64 for ordinary values
BUILTIN_FAMILIES = ("fraud_handbook", "fraud_declared", "credit", "cashflow", "market")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# series families (a daily_series feature, a quantiles output: see the module docstring)
SERIES_STATS = ("sum", "count")
SERIES_SCALES = ("none", "mean")
QUANTILE_OPTIONS = ("quantiles", "horizon_days")
# sequence families (a sequence feature, a smoothed_move label, a classes output)
LABEL_KINDS = ("topic", "smoothed_move")
SMOOTHED_MOVE_CLASSES = 3  # down, flat, up (finscore.features.market.DOWN, FLAT, UP)
BOOK_SIDES = ("bids", "asks")


# -- the parts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemaRef:
    """An Avro record schema: ``ref`` as written (a built-in name or an ``.avsc`` path relative
    to the declaration), and its top-level fields by name (as the columnar codec reads them)."""

    ref: str
    fields: Mapping[str, Field] = field(compare=False, repr=False)

    def kind(self, name: str) -> str:
        """The field's kind (``string``, ``long``, ``decimal``, ``enum``...)."""
        return self.fields[name].kind


@dataclass(frozen=True)
class InputSpec:
    """The scored events: topic, schema, and the id (idempotence), key (the topic's
    partitioning key) and time (epoch ms) fields; ``decimals``: places kept of the float fields
    that windows sum (field, places)."""

    topic: str
    schema: SchemaRef
    id: str
    key: str
    time: str
    decimals: tuple[tuple[str, int], ...] = ()

    def decimals_of(self, name: str) -> int | None:
        """Places kept of float field ``name`` (None when not declared)."""
        return dict(self.decimals).get(name)


@dataclass(frozen=True)
class LabelSpec:
    """The delayed labels: topic, schema, the labelled event's ``id`` and ``time`` fields, the
    0/1 ``field``, ``label_time`` (when it became known) and the usual ``delay_days``."""

    topic: str
    schema: SchemaRef
    id: str
    field: str
    time: str
    label_time: str
    delay_days: int | float

    @property
    def delay_ms(self) -> int:
        return round(self.delay_days * DAY_MS)


@dataclass(frozen=True)
class MoveLabel:
    """A label derived from the input (``[label] kind = "smoothed_move"``): the smoothed
    mid-price move ``horizon`` events ahead, down / flat / up (see the module docstring)."""

    horizon: int
    kind: str = "smoothed_move"


@dataclass(frozen=True)
class OutputSpec:
    """What the model emits: ``kind`` (``"probability"``, or ``"quantiles"`` of a series
    family: ``quantiles``, the levels, and ``horizon_days``; ``"regression"`` is reserved), the
    output topic and, optionally, its schema."""

    topic: str
    kind: str = "probability"
    schema: str | None = None
    quantiles: tuple[float, ...] = ()
    horizon_days: int | None = None
    classes: tuple[str, ...] = ()  # kind "classes": one name per class, the model's order


@dataclass(frozen=True)
class RawFeature:
    """A numeric field of the event, in its units, optionally ``log1p``-transformed."""

    name: str
    field: str
    transform: str = "none"
    kind: str = "raw"


@dataclass(frozen=True)
class TimeFlagFeature:
    """``weekend`` (Saturday, Sunday), ``night`` (hour <= 6) or ``hour`` of the event (UTC)."""

    name: str
    flag: str
    kind: str = "time_flag"


@dataclass(frozen=True)
class WindowFeature:
    """A statistic over the key's events in ``(t − days, t]`` (see the module docstring)."""

    name: str
    key: str
    days: int | float
    stat: str
    field: str | None = None
    kind: str = "window"

    @property
    def span_ms(self) -> int:
        return round(self.days * DAY_MS)


@dataclass(frozen=True)
class LabelRiskFeature:
    """A statistic over the key's labels known at t, for events in the delayed window;
    ``positives``: None (every positive label) or ``"habit"`` (those whose ``habit_field`` is
    below ``habit_ratio`` times the ``habit_key``'s mean over ``habit_days``: see the module
    docstring)."""

    name: str
    key: str
    days: int | float
    stat: str
    positives: str | None = None
    habit_key: str | None = None
    habit_field: str | None = None
    habit_days: int | float | None = None
    habit_ratio: float | None = None
    kind: str = "label_risk"

    @property
    def span_ms(self) -> int:
        return round(self.days * DAY_MS)

    @property
    def habit_span_ms(self) -> int:
        """The habit's window in ms (0 without a habit filter)."""
        return round(self.habit_days * DAY_MS) if self.habit_days is not None else 0


@dataclass(frozen=True)
class CategoryFeature:
    """One 0/1 column per value of ``values`` (``<name>_<value>``): the field equals it."""

    name: str
    field: str
    values: tuple[str, ...]
    kind: str = "category"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}_{v}" for v in self.values)


@dataclass(frozen=True)
class DailySeriesFeature:
    """A series family's rows: per ``key``, the ``days`` whole UTC days before an origin of a
    day's ``stat`` (``sum`` of ``field``, or ``count``), optionally scaled by their mean
    (``scale = "mean"``, floored at ``min_scale``), with ``log_scale`` (a column: log1p of the
    scale) and ``weekday`` (a prefix: the origin's weekday one-hot); see the module docstring."""

    name: str
    key: str
    days: int
    stat: str
    field: str | None = None
    scale: str = "none"
    min_scale: float | None = None
    log_scale: str | None = None
    weekday: str | None = None
    kind: str = "daily_series"

    @property
    def column_names(self) -> tuple[str, ...]:
        """``<name>_<days>`` … ``<name>_1``, then ``log_scale``, then ``<weekday>_0`` … ``_6``."""
        cols = [f"{self.name}_{k}" for k in range(self.days, 0, -1)]
        cols += [self.log_scale] if self.log_scale else []
        cols += [f"{self.weekday}_{i}" for i in range(7)] if self.weekday else []
        return tuple(cols)


@dataclass(frozen=True)
class SequenceFeature:
    """The ``key``'s last ``events`` rows of row ``layout`` (see the module docstring)."""

    name: str
    key: str
    events: int
    layout: str
    kind: str = "sequence"

    @property
    def width(self) -> int:
        """Values per row of :attr:`layout`."""
        return layout_width(self.layout)


Feature = (RawFeature | TimeFlagFeature | WindowFeature | LabelRiskFeature | CategoryFeature
           | DailySeriesFeature | SequenceFeature)  # fmt: skip
# Per kind: the class, its required keys and its optional keys (besides name and kind).
_KINDS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "raw": (RawFeature, ("field",), ("transform",)),
    "time_flag": (TimeFlagFeature, ("flag",), ()),
    "window": (WindowFeature, ("key", "days", "stat"), ("field",)),
    "label_risk": (LabelRiskFeature, ("key", "days", "stat"), ("positives", *HABIT_OPTIONS)),
    "category": (CategoryFeature, ("field", "values"), ()),
    "daily_series": (
        DailySeriesFeature,
        ("key", "days", "stat"),
        ("field", "scale", "min_scale", "log_scale", "weekday"),
    ),
    "sequence": (SequenceFeature, ("key", "events", "layout"), ()),
}


@dataclass(frozen=True)
class FamilySpec:
    """A validated family declaration (see the module docstring); build it with
    :meth:`from_dict` or :func:`load_family`, never by hand (nothing is checked then)."""

    name: str
    input: InputSpec
    label_spec: LabelSpec | None  # None: a series family, which has no [label] (see label)
    output: OutputSpec
    features: tuple[Feature, ...]
    move: MoveLabel | None = None  # a sequence family's derived label (label_spec None)

    @property
    def has_label(self) -> bool:
        """Whether the family declares delayed labels (a series family does not)."""
        return self.label_spec is not None

    @property
    def label(self) -> LabelSpec:
        """The delayed labels; raises :class:`FamilySpecError` for a family without a
        ``[label]`` topic (a series family's targets are its daily series' next days; a
        sequence family's label is derived, :attr:`move`)."""
        if self.label_spec is None:
            raise FamilySpecError(
                f"family {self.name!r} has no [label] topic: a quantiles family forecasts "
                "its daily_series' next days, a sequence family's label is derived from its "
                "events (its move)"
            )
        return self.label_spec

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The output columns in order (a category gives one column per value, a daily
        series one per day and its extras)."""
        out: list[str] = []
        for f in self.features:
            out.extend(_columns(f))
        return tuple(out)

    @property
    def sequence(self) -> SequenceFeature | None:
        """The family's ``sequence`` feature (its only one), or None."""
        return next((f for f in self.features if isinstance(f, SequenceFeature)), None)

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The event fields the features read (id and time first)."""
        names = [self.input.id, self.input.time]
        for f in self.features:
            if isinstance(f, SequenceFeature):
                names.extend((f.key, *BOOK_SIDES))
            if isinstance(f, WindowFeature):
                names.append(f.key)
            if isinstance(f, LabelRiskFeature):
                names.append(f.key)
            if isinstance(f, RawFeature | CategoryFeature | WindowFeature) and f.field:
                names.append(f.field)
            if isinstance(f, DailySeriesFeature):
                names.extend(n for n in (f.key, f.field) if n)
        return tuple(dict.fromkeys(names))

    @property
    def label_fields(self) -> tuple[str, ...]:
        """The label fields the features read (id, time, label time, label, the risk keys,
        then the habit keys and fields); none for a series family."""
        if self.label_spec is None:
            return ()
        lab = self.label_spec
        risks = [f for f in self.features if isinstance(f, LabelRiskFeature)]
        keys = [f.key for f in risks]
        habits = [name for f in risks for name in (f.habit_key, f.habit_field) if name]
        return tuple(dict.fromkeys([lab.id, lab.time, lab.label_time, lab.field, *keys, *habits]))

    # -- reading and writing ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> FamilySpec:
        """Validate a declaration (the TOML's tables); ``.avsc`` paths are relative to
        ``base_dir`` (the current directory when None). Raises :class:`FamilySpecError`
        naming the bad entry."""
        base = Path(base_dir) if base_dir is not None else Path()
        _keys(data, "the declaration", ("name", "input", "output", "features"), ("label",))
        name = _name(data["name"], "name")
        inp = _input(_table(data, "input"), base)
        move = _move_label(data)  # a sequence family's: no [label] topic
        label = None if move is not None else _label_of(data, base)
        output = _output(_table(data, "output"), base)
        raw = data["features"]
        if not isinstance(raw, list) or not raw:
            raise FamilySpecError("features: a non-empty list of [[features]] tables is needed")
        features = tuple(_feature(f, i, inp, label) for i, f in enumerate(raw))
        _series_features(features, output)
        spec = cls(name, inp, label, output, features, move)
        _check_sequence(spec)
        seen: set[str] = set()
        for i, f in enumerate(features):
            for col in _columns(f):
                if col in seen:
                    raise FamilySpecError(f"features[{i}] {f.name!r}: duplicate name {col!r}")
                seen.add(col)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The declaration as TOML tables (:meth:`from_dict` of it, with the same base
        directory, gives an equal spec)."""
        inp, lab, out = self.input, self.label_spec, self.output
        tables: dict[str, Any] = {
            "name": self.name,
            "input": {
                "topic": inp.topic,
                "schema": inp.schema.ref,
                "id": inp.id,
                "key": inp.key,
                "time": inp.time,
            },  # fmt: skip
        }
        if lab is not None:  # a series family has none
            tables["label"] = {
                "topic": lab.topic,
                "schema": lab.schema.ref,
                "id": lab.id,
                "field": lab.field,
                "time": lab.time,
                "label_time": lab.label_time,
                "delay_days": lab.delay_days,
            }  # fmt: skip
        tables |= {"output": {"topic": out.topic, "kind": out.kind}, "features": []}
        if inp.decimals:
            tables["input"]["decimals"] = dict(inp.decimals)
        if out.schema is not None:
            tables["output"]["schema"] = out.schema
        if out.classes:
            tables["output"]["classes"] = list(out.classes)
        if self.move is not None:  # [label] in its place, before [output]
            label = {"kind": self.move.kind, "horizon": self.move.horizon}
            tables = {"name": tables.pop("name"), "input": tables.pop("input"), "label": label,
                      **tables}  # fmt: skip
        if out.kind == "quantiles":
            tables["output"] |= {"quantiles": list(out.quantiles), "horizon_days": out.horizon_days}
        for f in self.features:
            row: dict[str, Any] = {"name": f.name, "kind": f.kind}
            _, required, optional = _KINDS[f.kind]
            for key in (*required, *optional):
                value = getattr(f, key)
                if value is not None:
                    row[key] = list(value) if isinstance(value, tuple) else value
            tables["features"].append(row)
        return tables

    def to_toml(self) -> str:
        """The declaration as TOML text (what :func:`load_family` reads)."""
        from finscore.families.toml_form import dump_toml

        return dump_toml(self.to_dict())


def load_family(path: str | Path) -> FamilySpec:
    """The family declared in the TOML file ``path`` (schemas relative to its folder).
    Raises :class:`FamilySpecError` naming the file and the bad entry."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise FamilySpecError(f"{path}: cannot read the declaration: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FamilySpecError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return FamilySpec.from_dict(data, path.parent)
    except FamilySpecError as exc:
        raise FamilySpecError(f"{path}: {exc}") from None


def family_file(ref: str | Path) -> Path:
    """The declaration ``ref`` names: a built-in family's name (:data:`BUILTIN_FAMILIES`) is
    its TOML file in this package, anything else a path (not checked here)."""
    if isinstance(ref, str) and ref in BUILTIN_FAMILIES:
        return Path(str(resources.files("finscore.families") / f"{ref}.toml"))
    return Path(ref)


def builtin_family(name: str) -> FamilySpec:
    """A family shipped in this package (:data:`BUILTIN_FAMILIES`): ``"fraud_handbook"``
    (the handbook's 15 features), ``"fraud_declared"`` (all 23 of the fraud features; not
    named ``fraud``, the hand-coded model's name), ``"credit"`` (credit applications to a
    probability of default: :mod:`finscore.families.german_credit`) or ``"cashflow"`` (a
    series family: a terminal's next 7 days of takings as quantiles,
    :mod:`finscore.families.series`)."""
    if name not in BUILTIN_FAMILIES:
        raise FamilySpecError(f"unknown built-in family {name!r}; known: {BUILTIN_FAMILIES}")
    return load_family(family_file(name))


# -- validation ---------------------------------------------------------------------------------
def _keys(data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    """``data`` is a table holding every required key and nothing unknown."""
    if not isinstance(data, Mapping):
        raise FamilySpecError(f"{where}: a table is needed, not {type(data).__name__}")
    for key in required:
        if key not in data:
            raise FamilySpecError(f"{where}: missing {key!r}")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        known = ", ".join((*required, *optional))
        raise FamilySpecError(f"{where}: unknown key {unknown[0]!r} (known: {known})")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data[key]
    if not isinstance(value, Mapping):
        raise FamilySpecError(f"[{key}]: a table is needed, not {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FamilySpecError(f"{where}: a non-empty string is needed, not {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    value = _str(value, where)
    if not _NAME.match(value):
        raise FamilySpecError(f"{where}: {value!r} is not a name (letters, digits, _ . -)")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FamilySpecError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _days(value: Any, where: str, *, zero_ok: bool = False) -> int | float:
    """A number of days (int or float, finite, positive or with ``zero_ok`` non-negative),
    at least a millisecond unless zero."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok) or 0 < value * DAY_MS < 1:
        need = "a number of days >= 0" if zero_ok else "a positive number of days"
        raise FamilySpecError(f"{where}: {need} is needed, not {value!r}")
    return value


def _schema(ref: Any, where: str, base: Path) -> SchemaRef:
    ref = _str(ref, where)
    try:
        if ref.endswith(".avsc"):
            path = base / ref
            try:
                parsed = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise FamilySpecError(f"{where}: cannot read {str(path)!r}: {exc}") from exc
        elif ref in SCHEMA_NAMES:
            parsed = load_schema(ref)
        else:
            raise FamilySpecError(
                f"{where}: {ref!r} is neither a built-in schema ({', '.join(SCHEMA_NAMES)}) "
                "nor an .avsc path"
            )
        fields = plan(parsed)
    except SchemaError as exc:
        raise FamilySpecError(f"{where}: schema {ref!r} cannot be read: {exc}") from exc
    return SchemaRef(ref, {f.name: f for f in fields})


def _field(schema: SchemaRef, value: Any, where: str, kinds: tuple[str, ...]) -> str:
    """A field of ``schema`` of one of ``kinds``."""
    name = _str(value, where)
    if name not in schema.fields:
        known = ", ".join(schema.fields)
        raise FamilySpecError(f"{where}: no field {name!r} in schema {schema.ref!r} ({known})")
    kind = schema.kind(name)
    if kind not in kinds:
        raise FamilySpecError(
            f"{where}: field {name!r} is {kind}, one of {', '.join(kinds)} is needed"
        )
    return name


def _input(data: Mapping[str, Any], base: Path) -> InputSpec:
    _keys(data, "[input]", ("topic", "schema", "id", "key", "time"), ("decimals",))
    schema = _schema(data["schema"], "[input] schema", base)
    decimals = data.get("decimals", {})
    if not isinstance(decimals, Mapping):
        raise FamilySpecError("[input] decimals: a table field = places is needed")
    kept: list[tuple[str, int]] = []
    for name, places in sorted(decimals.items()):
        where = f"[input.decimals] {name}"
        _field(schema, name, where, ("float", "double"))
        if not isinstance(places, int) or isinstance(places, bool):
            raise FamilySpecError(f"{where}: an integer number of places is needed")
        if not 0 <= places <= MAX_DECIMALS:
            raise FamilySpecError(f"{where}: places must be within 0..{MAX_DECIMALS}")
        kept.append((name, places))
    return InputSpec(
        topic=_str(data["topic"], "[input] topic"),
        schema=schema,
        id=_field(schema, data["id"], "[input] id", KEY_KINDS),
        key=_field(schema, data["key"], "[input] key", KEY_KINDS),
        time=_field(schema, data["time"], "[input] time", TIME_KINDS),
        decimals=tuple(kept),
    )


def _label(data: Mapping[str, Any], base: Path) -> LabelSpec:
    required = ("topic", "schema", "id", "field", "time", "label_time", "delay_days")
    _keys(data, "[label]", required, ("kind",))
    schema = _schema(data["schema"], "[label] schema", base)
    return LabelSpec(
        topic=_str(data["topic"], "[label] topic"),
        schema=schema,
        id=_field(schema, data["id"], "[label] id", KEY_KINDS),
        field=_field(schema, data["field"], "[label] field", ("boolean", "int", "long")),
        time=_field(schema, data["time"], "[label] time", TIME_KINDS),
        label_time=_field(schema, data["label_time"], "[label] label_time", TIME_KINDS),
        delay_days=_days(data["delay_days"], "[label] delay_days", zero_ok=True),
    )


def _output(data: Mapping[str, Any], base: Path) -> OutputSpec:
    _keys(data, "[output]", ("topic",), ("kind", "schema", "classes", *QUANTILE_OPTIONS))
    kind = data.get("kind", "probability")
    if kind in RESERVED_OUTPUT_KINDS:
        raise FamilySpecError(f"[output] kind: {kind!r} is reserved, not supported yet")
    kind = _choice(kind, "[output] kind", OUTPUT_KINDS)
    given = [k for k in QUANTILE_OPTIONS if k in data]
    if given and kind != "quantiles":
        raise FamilySpecError(f"[output]: {given[0]!r} needs kind = 'quantiles'")
    schema = data.get("schema")
    if schema is not None and kind == "quantiles":
        _record_schema(schema, "[output] schema", base)
    elif schema is not None:
        _schema(schema, "[output] schema", base)
    topic = _str(data["topic"], "[output] topic")
    classes = _classes(data, kind, schema, base)
    if kind == "quantiles":
        return OutputSpec(topic, kind, schema, *_quantiles(data))
    return OutputSpec(topic, kind, schema, classes=classes)


def _feature(data: Any, i: int, inp: InputSpec, label: LabelSpec | None) -> Feature:
    where = f"features[{i}]"
    if not isinstance(data, Mapping):
        raise FamilySpecError(f"{where}: a table is needed, not {type(data).__name__}")
    if "name" not in data:
        raise FamilySpecError(f"{where}: missing 'name'")
    name = _name(data["name"], f"{where} name")
    where = f"{where} {name!r}"
    if "kind" not in data:
        raise FamilySpecError(f"{where}: missing 'kind' (one of {', '.join(FEATURE_KINDS)})")
    kind = data["kind"]
    if kind not in _KINDS:
        raise FamilySpecError(f"{where}: unknown kind {kind!r} (one of {', '.join(FEATURE_KINDS)})")
    _, required, optional = _KINDS[kind]
    _keys(data, where, ("name", "kind", *required), optional)
    schema = inp.schema
    if kind == "raw":
        return RawFeature(
            name,
            _field(schema, data["field"], f"{where} field", NUMERIC_KINDS),
            _choice(data.get("transform", "none"), f"{where} transform", RAW_TRANSFORMS),
        )
    if kind == "time_flag":
        return TimeFlagFeature(name, _choice(data["flag"], f"{where} flag", TIME_FLAGS))
    if kind == "window":
        stat = _choice(data["stat"], f"{where} stat", WINDOW_STATS)
        key = _field(schema, data["key"], f"{where} key", KEY_KINDS)
        days = _days(data["days"], f"{where} days")
        value = data.get("field")
        if stat == "count":
            if value is not None:
                raise FamilySpecError(f"{where}: stat 'count' takes no field")
            return WindowFeature(name, key, days, stat)
        if value is None:
            raise FamilySpecError(f"{where}: stat {stat!r} needs a numeric 'field'")
        value = _field(schema, value, f"{where} field", NUMERIC_KINDS)
        if schema.kind(value) in ("float", "double") and inp.decimals_of(value) is None:
            raise FamilySpecError(
                f"{where}: field {value!r} is {schema.kind(value)}: window sums are exact "
                f"integer sums, declare the places to keep ([input.decimals] {value} = 2)"
            )
        return WindowFeature(name, key, days, stat, value)
    if kind == "daily_series":
        return _daily_series(data, name, where, inp)
    if kind == "sequence":
        return _sequence(data, name, where, inp)
    if kind == "label_risk":
        if label is None:  # a series family (no [label])
            raise FamilySpecError(
                f"{where}: kind 'label_risk' needs a [label] topic, which this family has not"
            )
        return _label_risk(data, name, where, inp, label)
    value = _field(schema, data["field"], f"{where} field", ("string", "enum"))
    values = data["values"]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise FamilySpecError(f"{where} values: a non-empty list of strings is needed")
    if len(set(values)) < len(values):
        raise FamilySpecError(f"{where} values: repeated value")
    symbols = schema.fields[value].symbols
    if schema.kind(value) == "enum" and not set(values) <= set(symbols):
        bad = sorted(set(values) - set(symbols))[0]
        raise FamilySpecError(f"{where} values: {bad!r} is not a symbol of enum {value!r}")
    return CategoryFeature(name, value, tuple(values))


def _label_risk(data: Mapping[str, Any], name: str, where: str, inp: InputSpec,
                label: LabelSpec) -> LabelRiskFeature:  # fmt: skip
    """A ``label_risk`` feature: its key in both schemas, and its positives (see the module
    docstring); ``positives = "all"`` is kept as None (the default, left out of the TOML)."""
    stat = _choice(data["stat"], f"{where} stat", LABEL_STATS)
    key = _field(inp.schema, data["key"], f"{where} key", KEY_KINDS)
    _field(label.schema, key, f"{where} key (in the label schema)", KEY_KINDS)
    days = _days(data["days"], f"{where} days")
    positives = _choice(data.get("positives", "all"), f"{where} positives", POSITIVES)
    if positives == "all":
        given = [k for k in HABIT_OPTIONS if k in data]
        if given:
            raise FamilySpecError(f"{where}: {given[0]!r} needs positives = 'habit'")
        return LabelRiskFeature(name, key, days, stat)
    if stat == "count":
        raise FamilySpecError(
            f"{where}: stat 'count' counts every label, positives apply to sum, share, streak"
        )
    for k in HABIT_OPTIONS:
        if k not in data:
            raise FamilySpecError(f"{where}: positives 'habit' needs {k!r}")
    habit_key = _field(label.schema, data["habit_key"], f"{where} habit_key", KEY_KINDS)
    _field(inp.schema, habit_key, f"{where} habit_key (in the input schema)", KEY_KINDS)
    exact = ("boolean", "int", "long", "decimal")
    value = _field(label.schema, data["habit_field"], f"{where} habit_field", NUMERIC_KINDS)
    _field(inp.schema, value, f"{where} habit_field (in the input schema)", NUMERIC_KINDS)
    if label.schema.kind(value) not in exact and inp.decimals_of(value) is None:
        raise FamilySpecError(
            f"{where}: habit_field {value!r} is {label.schema.kind(value)}: habit sums are "
            f"exact integer sums, declare the places to keep ([input.decimals] {value} = 2)"
        )
    ratio = data["habit_ratio"]
    if (not isinstance(ratio, int | float) or isinstance(ratio, bool) or not math.isfinite(ratio)
            or ratio <= 0):  # fmt: skip
        raise FamilySpecError(f"{where} habit_ratio: a positive number is needed, not {ratio!r}")
    return LabelRiskFeature(
        name, key, days, stat, positives, habit_key, value,
        _days(data["habit_days"], f"{where} habit_days"), float(ratio),
    )  # fmt: skip


# -- series families ------------------------------------------------------------------------------
def _columns(f: Feature) -> tuple[str, ...]:
    """A feature's output columns (a category one per value, a daily series one per day and
    its extras, any other its name)."""
    return f.column_names if isinstance(f, CategoryFeature | DailySeriesFeature) else (f.name,)


def _record_schema(ref: Any, where: str, base: Path) -> None:
    """A quantiles family's output schema: a built-in name or a readable ``.avsc`` (its
    arrays need not fit the columnar codec the input schemas are read with)."""
    ref = _str(ref, where)
    if ref in SCHEMA_NAMES:
        return
    if not ref.endswith(".avsc"):
        raise FamilySpecError(
            f"{where}: {ref!r} is neither a built-in schema ({', '.join(SCHEMA_NAMES)}) "
            "nor an .avsc path"
        )
    try:
        json.loads((base / ref).read_text())
    except (OSError, ValueError) as exc:
        raise FamilySpecError(f"{where}: cannot read {str(base / ref)!r}: {exc}") from exc


def _is_series(data: Mapping[str, Any]) -> bool:
    """The declaration's output is a series family's (``kind = "quantiles"``)."""
    out = data.get("output")
    return isinstance(out, Mapping) and out.get("kind") == "quantiles"


def _label_of(data: Mapping[str, Any], base: Path) -> LabelSpec | None:
    """``[label]``: required, except in a series family, which has none."""
    if _is_series(data):
        if "label" in data:
            raise FamilySpecError(
                "[label]: a quantiles family has no [label] (its targets are its "
                "daily_series' next horizon_days days)"
            )
        return None
    if "label" not in data:
        raise FamilySpecError("the declaration: missing 'label'")
    return _label(_table(data, "label"), base)


def _whole_days(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FamilySpecError(f"{where}: a positive whole number of days is needed, not {value!r}")
    return value


def _quantiles(data: Mapping[str, Any]) -> tuple[tuple[float, ...], int]:
    """``[output]`` of kind quantiles: its levels and horizon."""
    for k in QUANTILE_OPTIONS:
        if k not in data:
            raise FamilySpecError(f"[output]: kind 'quantiles' needs {k!r}")
    levels = data["quantiles"]
    ok = isinstance(levels, list) and levels and all(
        isinstance(q, int | float) and not isinstance(q, bool) and 0 < q < 1 for q in levels
    ) and all(a < b for a, b in zip(levels, levels[1:], strict=False))  # fmt: skip
    if not ok:
        raise FamilySpecError(
            f"[output] quantiles: a non-empty list of increasing levels in (0, 1) is needed, "
            f"not {levels!r}"
        )
    horizon = _whole_days(data["horizon_days"], "[output] horizon_days")
    return tuple(float(q) for q in levels), horizon


def _daily_series(data: Mapping[str, Any], name: str, where: str,
                  inp: InputSpec) -> DailySeriesFeature:  # fmt: skip
    """A ``daily_series`` feature (see the module docstring)."""
    schema = inp.schema
    stat = _choice(data["stat"], f"{where} stat", SERIES_STATS)
    key = _field(schema, data["key"], f"{where} key", KEY_KINDS)
    days = _whole_days(data["days"], f"{where} days")
    value = data.get("field")
    if stat == "count" and value is not None:
        raise FamilySpecError(f"{where}: stat 'count' takes no field")
    if stat == "sum":
        if value is None:
            raise FamilySpecError(f"{where}: stat 'sum' needs a numeric 'field'")
        value = _field(schema, value, f"{where} field", NUMERIC_KINDS)
    scale = _choice(data.get("scale", "none"), f"{where} scale", SERIES_SCALES)
    if scale != "mean":
        given = [k for k in ("min_scale", "log_scale") if k in data]
        if given:
            raise FamilySpecError(f"{where}: {given[0]!r} needs scale = 'mean'")
    floor = data.get("min_scale", 1.0) if scale == "mean" else None
    if floor is not None and (not isinstance(floor, int | float) or isinstance(floor, bool)
                              or not math.isfinite(floor) or floor <= 0):  # fmt: skip
        raise FamilySpecError(f"{where} min_scale: a positive number is needed, not {floor!r}")
    log_scale = data.get("log_scale")
    weekday = data.get("weekday")
    return DailySeriesFeature(
        name, key, days, stat, value, scale, None if floor is None else float(floor),
        None if log_scale is None else _name(log_scale, f"{where} log_scale"),
        None if weekday is None else _name(weekday, f"{where} weekday"),
    )  # fmt: skip


def _series_features(features: tuple[Feature, ...], output: OutputSpec) -> None:
    """A quantiles family's features are one ``daily_series``; other families have none."""
    series = output.kind == "quantiles"
    seen = 0
    for i, f in enumerate(features):
        where = f"features[{i}] {f.name!r}"
        if not series and isinstance(f, DailySeriesFeature):
            raise FamilySpecError(f"{where}: kind 'daily_series' needs [output] kind = 'quantiles'")
        if series and not isinstance(f, DailySeriesFeature):
            raise FamilySpecError(f"{where}: kind {f.kind!r} is not for a quantiles family")
        seen += isinstance(f, DailySeriesFeature)
        if series and seen > 1:
            raise FamilySpecError(f"{where}: a quantiles family has one daily_series feature")


# -- sequence families (the market family) ------------------------------------------------------
def _sequence(data: Mapping[str, Any], name: str, where: str, inp: InputSpec) -> SequenceFeature:
    """A ``sequence`` feature: a known layout, a window the window models take, and the book
    the layout reads in the input schema (the family-level rules: :func:`_check_sequence`)."""
    layout = data["layout"]
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise FamilySpecError(
            f"{where} layout: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})"
        )
    events = data["events"]
    if not isinstance(events, int) or isinstance(events, bool):
        raise FamilySpecError(f"{where} events: a whole number of events is needed, not {events!r}")
    if not MIN_WINDOW <= events <= MAX_WINDOW:
        raise FamilySpecError(
            f"{where} events: the window model takes {MIN_WINDOW} to {MAX_WINDOW} events, "
            f"not {events}"
        )
    key = _field(inp.schema, data["key"], f"{where} key", KEY_KINDS)
    for side in BOOK_SIDES:
        f = inp.schema.fields.get(side)
        items = {i.name: i.kind for i in f.items} if f is not None and f.kind == "array" else {}
        if items.get("price") not in ("float", "double") or items.get("size") not in NUMERIC_KINDS:
            why = (f"no field {side!r} in schema {inp.schema.ref!r}" if f is None
                   else f"field {side!r} is not an array of levels")  # fmt: skip
            raise FamilySpecError(
                f"{where} layout {layout!r} reads the book: {why} (an array of levels with a "
                "float or double price and a numeric size is needed, best first)"
            )
    return SequenceFeature(name, key, events, layout)


def _move_label(data: Mapping[str, Any]) -> MoveLabel | None:
    """``[label] kind = "smoothed_move"`` (a label computed from the input, no topic), or None
    for any other ``[label]`` (``kind = "topic"``, the default, or none)."""
    table = data.get("label")
    if not isinstance(table, Mapping) or table.get("kind", "topic") == "topic":
        return None
    kind = _choice(table["kind"], "[label] kind", LABEL_KINDS)
    _keys(table, "[label]", ("kind", "horizon"), ())
    horizon = table["horizon"]
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise FamilySpecError(
            f"[label] horizon: a positive whole number of events is needed, not {horizon!r}"
        )
    raw = data.get("features")
    if not any(isinstance(f, Mapping) and f.get("kind") == "sequence" for f in raw or ()):
        raise FamilySpecError(
            f"[label] kind {kind!r} reads the mid price of a sequence feature's book: "
            "declare one ([[features]] kind = 'sequence')"
        )
    return MoveLabel(horizon, kind)


def _classes(data: Mapping[str, Any], kind: str, schema: Any, base: Path) -> tuple[str, ...]:
    """``[output] classes``: for kind ``classes`` only, two or more distinct names, the symbols
    of an enum of the output ``schema`` when there is one."""
    if "classes" not in data:
        if kind == "classes":
            raise FamilySpecError("[output] kind 'classes' needs 'classes' (one name per class)")
        return ()
    if kind != "classes":
        raise FamilySpecError("[output] classes: only for kind = 'classes'")
    classes = data["classes"]
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)):  # fmt: skip
        raise FamilySpecError("[output] classes: a list of two or more names is needed")
    if len(set(classes)) < len(classes):
        raise FamilySpecError("[output] classes: repeated class")
    if schema is not None:
        ref = _schema(schema, "[output] schema", base)
        enums = {n: f.symbols for n, f in ref.fields.items() if f.kind == "enum"}
        if tuple(classes) not in enums.values():
            have = "; ".join(
                f"enum {n!r} of schema {ref.ref!r} has {', '.join(s)}" for n, s in enums.items()
            )
            have = have or f"schema {ref.ref!r} has no enum"
            raise FamilySpecError(
                f"[output] classes: {classes} are not the symbols of an enum of the output "
                f"schema ({have})"
            )
    return tuple(classes)


def _check_sequence(spec: FamilySpec) -> None:
    """The rules that tie a sequence, its label and its output together (module docstring)."""
    seq, move, output = spec.sequence, spec.move, spec.output
    if seq is None:
        if move is not None:
            raise FamilySpecError(
                f"[label] kind {move.kind!r} reads the mid price of a sequence feature's book: "
                "declare one ([[features]] kind = 'sequence')"
            )
        return
    if len(spec.features) > 1:
        raise FamilySpecError(
            "features: a sequence feature is the family's only feature (its model reads "
            "windows of rows, not one row)"
        )
    where = f"features[0] {seq.name!r}"
    if seq.key != spec.input.key:
        raise FamilySpecError(
            f"{where} key: a sequence is kept per partition key: {seq.key!r} is not [input] "
            f"key {spec.input.key!r}"
        )
    id_kind = spec.input.schema.kind(spec.input.id)
    if id_kind not in ("int", "long"):
        raise FamilySpecError(
            f"[input] id: a sequence keeps each key's rows in the order of the id: "
            f"{spec.input.id!r} is {id_kind}, int or long is needed"
        )
    if move is None:
        raise FamilySpecError(
            "[label]: a sequence feature is labelled by its own later events (kind = "
            "'smoothed_move', horizon = k), not by a label topic"
        )
    if output.kind != "classes":
        raise FamilySpecError(
            f"[output] kind: a {move.kind} label gives classes (kind = 'classes', "
            f"classes = down, flat, up), not {output.kind!r}"
        )
    if len(output.classes) != SMOOTHED_MOVE_CLASSES:
        raise FamilySpecError(
            f"[output] classes: a {move.kind} label gives {SMOOTHED_MOVE_CLASSES} classes "
            f"(down, flat, up, in this order), not {len(output.classes)}"
        )

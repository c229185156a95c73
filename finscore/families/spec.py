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

Window sums are exact integer sums: a decimal is summed in its unscaled units (cents), an
integer or boolean as it is, and a float or double only once ``[input.decimals]`` says how
many decimals of it to keep (it is then rounded to that fixed point).

``[label]``'s ``time`` is the labelled event's time and ``label_time`` when the label became
known; a ``label_risk`` key must be a field of both schemas. Schemas are a built-in name
(``"transaction"``, see :data:`finscore.schemas.SCHEMA_NAMES`) or an ``.avsc`` path relative
to the TOML file. The examples, the handbook's 15 fraud features and the whole 23-feature fraud
row (:data:`finscore.features.fraud.FRAUD_FEATURE_NAMES`), are ``fraud_handbook.toml`` and
``fraud_declared.toml`` in this package (:func:`builtin_family`), with ``credit.toml``
(credit risk on the German credit data).
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
from finscore.schemas import SCHEMA_NAMES, SchemaError, load_schema
from finscore.schemas.columnar.plan import Field, plan

__all__ = [
    "BUILTIN_FAMILIES",
    "DAY_MS",
    "FEATURE_KINDS",
    "family_file",
    "POSITIVES",
    "CategoryFeature",
    "FamilySpec",
    "Feature",
    "InputSpec",
    "LabelRiskFeature",
    "LabelSpec",
    "OutputSpec",
    "RawFeature",
    "SchemaRef",
    "TimeFlagFeature",
    "WindowFeature",
    "builtin_family",
    "load_family",
]

DAY_MS = 86_400_000
FEATURE_KINDS = ("raw", "time_flag", "window", "label_risk", "category")
#: which positive labels a label_risk feature counts (see the module docstring)
POSITIVES = ("all", "habit")
HABIT_OPTIONS = ("habit_key", "habit_field", "habit_days", "habit_ratio")
RAW_TRANSFORMS = ("none", "log1p")
TIME_FLAGS = ("weekend", "night", "hour")
WINDOW_STATS = ("count", "sum", "mean", "ratio", "zscore")
LABEL_STATS = ("count", "sum", "share", "streak")
OUTPUT_KINDS = ("probability",)
RESERVED_OUTPUT_KINDS = ("regression",)
NUMERIC_KINDS = ("boolean", "int", "long", "float", "double", "decimal")
KEY_KINDS = ("string", "int", "long")
TIME_KINDS = ("int", "long")
MAX_DECIMALS = 9  # a float kept to more places would leave int64 for ordinary values
BUILTIN_FAMILIES = ("fraud_handbook", "fraud_declared", "credit")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


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
class OutputSpec:
    """What the model emits: ``kind`` (``"probability"``; ``"regression"`` is reserved), the
    output topic and, optionally, its schema."""

    topic: str
    kind: str = "probability"
    schema: str | None = None


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


Feature = RawFeature | TimeFlagFeature | WindowFeature | LabelRiskFeature | CategoryFeature
# Per kind: the class, its required keys and its optional keys (besides name and kind).
_KINDS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "raw": (RawFeature, ("field",), ("transform",)),
    "time_flag": (TimeFlagFeature, ("flag",), ()),
    "window": (WindowFeature, ("key", "days", "stat"), ("field",)),
    "label_risk": (LabelRiskFeature, ("key", "days", "stat"), ("positives", *HABIT_OPTIONS)),
    "category": (CategoryFeature, ("field", "values"), ()),
}


@dataclass(frozen=True)
class FamilySpec:
    """A validated family declaration (see the module docstring); build it with
    :meth:`from_dict` or :func:`load_family`, never by hand (nothing is checked then)."""

    name: str
    input: InputSpec
    label: LabelSpec
    output: OutputSpec
    features: tuple[Feature, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The output columns in order (a category gives one column per value)."""
        out: list[str] = []
        for f in self.features:
            out.extend(f.column_names if isinstance(f, CategoryFeature) else (f.name,))
        return tuple(out)

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The event fields the features read (id and time first)."""
        names = [self.input.id, self.input.time]
        for f in self.features:
            if isinstance(f, WindowFeature):
                names.append(f.key)
            if isinstance(f, LabelRiskFeature):
                names.append(f.key)
            if isinstance(f, RawFeature | CategoryFeature | WindowFeature) and f.field:
                names.append(f.field)
        return tuple(dict.fromkeys(names))

    @property
    def label_fields(self) -> tuple[str, ...]:
        """The label fields the features read (id, time, label time, label, the risk keys,
        then the habit keys and fields)."""
        lab = self.label
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
        _keys(data, "the declaration", ("name", "input", "label", "output", "features"), ())
        name = _name(data["name"], "name")
        inp = _input(_table(data, "input"), base)
        label = _label(_table(data, "label"), base)
        output = _output(_table(data, "output"), base)
        raw = data["features"]
        if not isinstance(raw, list) or not raw:
            raise FamilySpecError("features: a non-empty list of [[features]] tables is needed")
        features = tuple(_feature(f, i, inp, label) for i, f in enumerate(raw))
        spec = cls(name, inp, label, output, features)
        seen: set[str] = set()
        for i, f in enumerate(features):
            for col in f.column_names if isinstance(f, CategoryFeature) else (f.name,):
                if col in seen:
                    raise FamilySpecError(f"features[{i}] {f.name!r}: duplicate name {col!r}")
                seen.add(col)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The declaration as TOML tables (:meth:`from_dict` of it, with the same base
        directory, gives an equal spec)."""
        inp, lab, out = self.input, self.label, self.output
        tables: dict[str, Any] = {
            "name": self.name,
            "input": {
                "topic": inp.topic,
                "schema": inp.schema.ref,
                "id": inp.id,
                "key": inp.key,
                "time": inp.time,
            },  # fmt: skip
            "label": {
                "topic": lab.topic,
                "schema": lab.schema.ref,
                "id": lab.id,
                "field": lab.field,
                "time": lab.time,
                "label_time": lab.label_time,
                "delay_days": lab.delay_days,
            },  # fmt: skip
            "output": {"topic": out.topic, "kind": out.kind},
            "features": [],
        }
        if inp.decimals:
            tables["input"]["decimals"] = dict(inp.decimals)
        if out.schema is not None:
            tables["output"]["schema"] = out.schema
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
    named ``fraud``, the hand-coded model's name) or ``"credit"`` (credit applications to a
    probability of default: :mod:`finscore.families.german_credit`)."""
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
    _keys(data, "[label]", required, ())
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
    _keys(data, "[output]", ("topic",), ("kind", "schema"))
    kind = data.get("kind", "probability")
    if kind in RESERVED_OUTPUT_KINDS:
        raise FamilySpecError(f"[output] kind: {kind!r} is reserved, not supported yet")
    kind = _choice(kind, "[output] kind", OUTPUT_KINDS)
    schema = data.get("schema")
    if schema is not None:
        _schema(schema, "[output] schema", base)
    return OutputSpec(_str(data["topic"], "[output] topic"), kind, schema)


def _feature(data: Any, i: int, inp: InputSpec, label: LabelSpec) -> Feature:
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
    if kind == "label_risk":
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

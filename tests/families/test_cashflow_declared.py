"""The cash-flow family, declared (``finscore/families/cashflow.toml``): the ``daily_series``
feature kind and the ``quantiles`` output kind, and proof that the declaration gives the coded
cash-flow features (:mod:`finscore.features.cashflow`) bit for bit, on the simulator and, where
``FINSCORE_DATA_DIR`` holds it, the handbook; ``finscore compress cashflow`` and ``finscore
worker cashflow`` read their features from it."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from finscore.families import FamilySpec, FamilySpecError, builtin_family, load_family
from finscore.features.cashflow import (
    CASHFLOW_FEATURE_NAMES,
    HORIZON,
    LOOKBACK,
    QUANTILES,
    daily_takings,
    forecast_rows,
)
from finscore.sim.data import data_dir
from finscore.sim.transactions import TxSimConfig, simulate_frame

PACKAGE = Path(__file__).resolve().parents[2] / "finscore" / "families"


@pytest.fixture(scope="module")
def spec() -> FamilySpec:
    return builtin_family("cashflow")


@pytest.fixture()
def tables(spec: FamilySpec) -> dict:
    """The cash-flow declaration's tables (a fresh copy to spoil)."""
    return copy.deepcopy(spec.to_dict())


def test_the_declaration_names_the_coded_layout(spec: FamilySpec) -> None:
    from finscore.families.series import DailySeries

    assert spec == load_family(PACKAGE / "cashflow.toml")
    assert spec.feature_names == tuple(CASHFLOW_FEATURE_NAMES)
    out = spec.output
    assert (out.kind, out.quantiles, out.horizon_days) == ("quantiles", QUANTILES, HORIZON)
    assert (spec.input.topic, out.topic, out.schema) == (
        "transactions", "cashflow-forecasts", "cashflow_forecast"
    )  # fmt: skip
    series = DailySeries.of(spec)
    assert (series.key, series.field, series.stat, series.lookback) == (
        "terminal_id", "amount", "sum", LOOKBACK
    )  # fmt: skip
    assert (series.horizon, series.quantiles, series.min_scale) == (HORIZON, QUANTILES, 1.0)
    assert spec.input_fields == ("transaction_id", "event_time", "terminal_id", "amount")
    assert spec.label_fields == () and not spec.has_label
    with pytest.raises(FamilySpecError, match="no \\[label\\]"):
        _ = spec.label


def test_toml_round_trip(spec: FamilySpec, tmp_path: Path) -> None:
    assert FamilySpec.from_dict(spec.to_dict()) == spec
    path = tmp_path / "again.toml"
    path.write_text(spec.to_toml())
    again = load_family(path)
    assert again == spec and again.to_toml() == spec.to_toml()


def _coded_and_declared(frame, origins=None):  # noqa: ANN001, ANN202
    """(coded takings, x, y, scale), (declared ...) of a transaction frame at every origin."""
    from finscore.families.series import DailySeries

    coded = daily_takings(frame.terminal_id, frame.event_time, frame.amount)
    series = DailySeries.of(builtin_family("cashflow"))
    declared = series.daily(frame)
    n_days = coded.values.shape[1]
    if origins is None:
        origins = np.arange(LOOKBACK, n_days - HORIZON + 1)
    x, y, s = forecast_rows(coded.values, origins, first_day=coded.first_day)
    dx, dy, ds = series.rows(declared.values, origins, first_day=declared.first_day)
    return (coded, x, y, s), (declared, dx, dy, ds)


def _assert_bit_equal(a: np.ndarray, b: np.ndarray | None) -> None:
    assert b is not None and a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def test_declared_features_equal_the_coded_ones_on_the_simulator() -> None:
    frame = simulate_frame(TxSimConfig(n_customers=150, n_terminals=300, days=60, seed=7))
    (coded, x, y, s), (declared, dx, dy, ds) = _coded_and_declared(frame)
    assert coded.first_day == declared.first_day
    _assert_bit_equal(coded.terminals, declared.terminals)
    _assert_bit_equal(coded.values, declared.values)
    assert y is not None and len(x) > 1000
    for a, b in ((x, dx), (y, dy), (s, ds)):
        _assert_bit_equal(a, b)


@pytest.mark.skipif(not (data_dir() / "fraud_handbook_sim").exists(), reason="handbook data absent")
def test_declared_features_equal_the_coded_ones_on_the_handbook() -> None:
    from finscore.sim.handbook import load_handbook_frame

    frame = load_handbook_frame()
    # a real slice: 400 terminals' transactions over the first 70 days
    first = int(frame.event_time.min())
    terms = np.unique(frame.terminal_id)[::25]
    part = frame.select(
        np.isin(frame.terminal_id, terms) & (frame.event_time < first + 70 * 86_400_000)
    )
    (coded, x, y, s), (declared, dx, dy, ds) = _coded_and_declared(part)
    _assert_bit_equal(coded.values, declared.values)
    assert len(x) > 10_000
    for a, b in ((x, dx), (y, dy), (s, ds)):
        _assert_bit_equal(a, b)


def test_compress_trains_on_the_declared_features() -> None:
    """CashflowFamily's rows are the declaration's; a variant declaration changes them."""
    from finscore.compression.cashflow import CashflowFamily
    from finscore.families.series import DailySeries

    fam = CashflowFamily()
    assert fam.spec == builtin_family("cashflow") and fam.feature_names() == CASHFLOW_FEATURE_NAMES
    data = fam.load_data("sim", n_customers=60, days=70)
    frame = simulate_frame(TxSimConfig(n_customers=60, n_terminals=120, days=70, seed=0))
    takings = daily_takings(frame.terminal_id, frame.event_time, frame.amount)
    x, y, _ = forecast_rows(takings.values, np.array(data.meta["splits"].test),
                            first_day=takings.first_day)  # fmt: skip
    _assert_bit_equal(x, data.x_test)
    _assert_bit_equal(y, data.y_test)  # type: ignore[arg-type]
    # a variant: counts over 14 days, no weekday columns
    variant = _variant(builtin_family("cashflow"), days=14, stat="count", field=None,
                       weekday=None)  # fmt: skip
    vfam = CashflowFamily(variant)
    assert vfam.lookback == 14 and vfam.feature_names() == [
        *(f"lag_{k}" for k in range(14, 0, -1)),
        "log_scale",
    ]
    vdata = vfam.load_data("sim", n_customers=60, days=70)
    counts = daily_takings(frame.terminal_id, frame.event_time, np.ones(len(frame)))
    vx, _, _ = DailySeries.of(variant).rows(counts.values, np.array(vdata.meta["splits"].test),
                                            first_day=counts.first_day)  # fmt: skip
    assert vdata.x_test.shape[1] == 15
    _assert_bit_equal(vx, vdata.x_test)


def test_the_worker_reads_the_declared_series() -> None:
    from finscore.streams.cashflow import CashflowPipeline
    from finscore.streams.hot_swap import ModelSlot

    p = CashflowPipeline(ModelSlot(), "cashflow-forecasts")
    assert p.series.spec == builtin_family("cashflow") and p.lookback == LOOKBACK
    variant = _variant(builtin_family("cashflow"), days=14, stat="count", field=None)
    v = CashflowPipeline(ModelSlot(), "cashflow-forecasts", family=variant)
    assert v.lookback == 14 and v.takings.keep_days == 15
    from tests.streams.test_cashflow_pipeline import messages_of, transactions

    txs = transactions(20)
    v.process(messages_of(txs))
    last = max(r["event_time"] for r in txs) // 86_400_000
    want: dict[str, dict[int, float]] = {}
    for r in txs:
        d = r["event_time"] // 86_400_000
        if d > last - 15:
            per = want.setdefault(r["terminal_id"], {})
            per[d] = per.get(d, 0.0) + 1.0
    assert v.takings.days == want
    other = _variant(builtin_family("cashflow"), key="transaction_id")
    with pytest.raises(FamilySpecError, match="key"):
        CashflowPipeline(ModelSlot(), "cashflow-forecasts", family=other)
    # the forecast feeds the model the declared rows: no weekday columns, 14 days + log_scale
    plain = _variant(builtin_family("cashflow"), days=14, stat="count", field=None,
                     weekday=None)  # fmt: skip
    assert len(plain.feature_names) == 15
    widths: list[int] = []
    p = CashflowPipeline(ModelSlot(_RecordingScorer(widths)), "cashflow-forecasts", family=plain)
    result = p.process(messages_of(txs))
    assert result.dead_letters == [] and result.outputs  # a forecast per crossing after day 14
    assert widths and set(widths) == {15}


class _RecordingScorer:
    """A stand-in live model that records the width of the rows it is given and returns
    zeros of the family's output shape ([N, 7 days, 3 quantiles])."""

    name, version = "cashflow", "1"

    def __init__(self, widths: list[int]) -> None:
        from types import SimpleNamespace

        self.widths = widths
        self.manifest = SimpleNamespace(name="cashflow", version="1", family="cashflow",
                                        params={"lookback_days": 14, "horizon_days": HORIZON,
                                                "quantiles": list(QUANTILES)})  # fmt: skip

    def select(self, x: np.ndarray) -> np.ndarray:
        return x

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        self.widths.append(int(x.shape[1]))
        return np.zeros((len(x), HORIZON, len(QUANTILES)), dtype=np.float32)


def test_the_worker_keys_a_series_by_terminal_only() -> None:
    """The forecasts' schema (``cashflow_forecast``) keys a record by ``terminal_id``: a
    declaration keying its series by another field (``customer_id``) is refused, in one
    sentence, rather than writing customer ids as terminal ids."""
    from finscore.streams.cashflow import CashflowPipeline
    from finscore.streams.cashflow.pipeline import declared_series
    from finscore.streams.hot_swap import ModelSlot

    by_customer = _variant(builtin_family("cashflow"), key="customer_id")
    message = (
        "family 'cashflow': the cash-flow stream keys a series by terminal_id (the "
        "terminal_id field of its cashflow_forecast records), not 'customer_id'"
    )
    with pytest.raises(FamilySpecError) as err:
        declared_series(by_customer)
    assert str(err.value) == message
    with pytest.raises(FamilySpecError, match="keys a series by terminal_id"):
        CashflowPipeline(ModelSlot(), "cashflow-forecasts", family=by_customer)


def _variant(spec: FamilySpec, **changes: object) -> FamilySpec:
    tables = spec.to_dict()
    row = tables["features"][0]
    for k, v in changes.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    return FamilySpec.from_dict(tables)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("days 2.5", "features[0] 'lag' days: a positive whole number of days is needed, not 2.5"),
        ("days 0", "days: a positive whole number of days is needed, not 0"),
        ("stat mean", "stat: 'mean' is not one of sum, count"),
        ("count with field", "features[0] 'lag': stat 'count' takes no field"),
        ("sum without field", "features[0] 'lag': stat 'sum' needs a numeric 'field'"),
        ("string field", "field 'currency' is string"),
        ("scale", "scale: 'median' is not one of none, mean"),
        ("min_scale 0", "min_scale: a positive number is needed, not 0"),
        ("min_scale without mean", "'min_scale' needs scale = 'mean'"),
        ("log_scale without mean", "'log_scale' needs scale = 'mean'"),
        ("duplicate column", "duplicate name 'lag_1'"),
        ("no quantiles", "[output]: kind 'quantiles' needs 'quantiles'"),
        ("bad quantiles", "[output] quantiles: a non-empty list of increasing levels in (0, 1)"),
        ("quantile 1", "[output] quantiles: a non-empty list of increasing levels in (0, 1)"),
        ("horizon 0", "[output] horizon_days: a positive whole number of days is needed, not 0"),
        ("quantiles on probability", "[output]: 'quantiles' needs kind = 'quantiles'"),
        ("label table", "[label]: a quantiles family has no [label]"),
        ("event feature", "features[1] 'AMOUNT': kind 'raw' is not for a quantiles family"),
        ("two series", "features[1] 'lag2': a quantiles family has one daily_series feature"),
        ("series in a probability family", "kind 'daily_series' needs [output] kind = 'quantiles'"),
        ("missing label", "the declaration: missing 'label'"),
    ],
)  # fmt: skip
def test_invalid_entries_are_named(tables: dict, change: str, message: str) -> None:
    row = tables["features"][0]
    out = tables["output"]
    handbook = builtin_family("fraud_handbook").to_dict()
    if change.startswith("days"):
        row["days"] = float(change.split()[1]) if "." in change else int(change.split()[1])
    elif change == "stat mean":
        row["stat"] = "mean"
    elif change == "count with field":
        row["stat"] = "count"
    elif change == "sum without field":
        del row["field"]
    elif change == "string field":
        row["field"] = "currency"
    elif change == "scale":
        row["scale"] = "median"
    elif change == "min_scale 0":
        row["min_scale"] = 0
    elif change in ("min_scale without mean", "log_scale without mean"):
        row["scale"] = "none"
        row.pop("log_scale" if change.startswith("min") else "min_scale")
    elif change == "duplicate column":
        row["weekday"] = "lag"
        row["days"] = 7
    elif change == "no quantiles":
        del out["quantiles"]
    elif change == "bad quantiles":
        out["quantiles"] = [0.5, 0.1]
    elif change == "quantile 1":
        out["quantiles"] = [0.5, 1.0]
    elif change == "horizon 0":
        out["horizon_days"] = 0
    elif change == "quantiles on probability":
        out["kind"] = "probability"
        tables["label"] = handbook["label"]
    elif change == "label table":
        tables["label"] = handbook["label"]
    elif change == "event feature":
        tables["features"].append({"name": "AMOUNT", "kind": "raw", "field": "amount"})
    elif change == "two series":
        tables["features"].append(dict(row, name="lag2"))
    elif change == "series in a probability family":
        tables = handbook
        tables["features"].append(dict(row))
    elif change == "missing label":
        tables = handbook
        del tables["label"]
    with pytest.raises(FamilySpecError) as err:
        FamilySpec.from_dict(tables)
    assert message in str(err.value)


@pytest.mark.parametrize("family", ["cashflow", "market"])
def test_the_generic_engine_refuses_a_series_or_sequence_family(family: str) -> None:
    """DeclaredFeatures computes per-event rows: a series (cashflow) or sequence (market)
    family is refused by its feature's kind, naming the worker that computes it."""
    from finscore.families import DeclaredFeatures

    with pytest.raises(FamilySpecError, match="is not computed per event"):
        DeclaredFeatures(builtin_family(family))


def test_variants_keep_the_spec_valid(spec: FamilySpec) -> None:
    from finscore.families.series import DailySeries

    series = DailySeries.of(spec).replace(lookback=21, horizon=3, quantiles=(0.25, 0.75),
                                          min_scale=2.0)  # fmt: skip
    assert (series.lookback, series.horizon, series.quantiles, series.min_scale) == (
        21, 3, (0.25, 0.75), 2.0
    )  # fmt: skip
    assert FamilySpec.from_dict(series.spec.to_dict()) == series.spec
    assert dataclasses.replace(spec) == spec
    with pytest.raises(FamilySpecError, match="not a quantiles family"):
        DailySeries.of(builtin_family("fraud_handbook"))

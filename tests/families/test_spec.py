"""Family declarations: TOML round trips, and every invalid entry refused with an error that
names it."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from finscore.families import FamilySpec, FamilySpecError, builtin_family, load_family
from finscore.families.toml_form import dump_toml
from finscore.features.fraud import HANDBOOK_FEATURES

PACKAGE = Path(__file__).resolve().parents[2] / "finscore" / "families"


@pytest.fixture()
def tables() -> dict:
    """The handbook declaration's tables (a fresh copy to spoil)."""
    return copy.deepcopy(tomllib.loads((PACKAGE / "fraud_handbook.toml").read_text()))


def test_the_shipped_declaration_loads_by_name_and_by_path() -> None:
    spec = builtin_family("fraud_handbook")
    assert spec == load_family(PACKAGE / "fraud_handbook.toml")
    assert spec.feature_names == HANDBOOK_FEATURES
    assert spec.label_fields == ("transaction_id", "tx_time", "label_time", "is_fraud",
                                 "terminal_id")  # fmt: skip


def test_toml_round_trip(tmp_path: Path) -> None:
    spec = builtin_family("fraud_handbook")
    assert FamilySpec.from_dict(spec.to_dict()) == spec
    path = tmp_path / "again.toml"
    path.write_text(spec.to_toml())
    again = load_family(path)
    assert again == spec and again.to_toml() == spec.to_toml()


def test_toml_round_trip_of_every_kind(tmp_path: Path, tables: dict) -> None:
    """Fractional days, decimals, categories, ratios and z-scores, a schema file beside it."""
    (tmp_path / "tx.avsc").write_text((PACKAGE.parent.parent / "schemas" /
                                       "transaction.avsc").read_text())  # fmt: skip
    tables["input"]["schema"] = "tx.avsc"
    tables["features"] += [
        {"name": "AMOUNT_LOG", "kind": "raw", "field": "amount", "transform": "log1p"},
        {"name": "HOUR", "kind": "time_flag", "flag": "hour"},
        {"name": "CUR", "kind": "category", "field": "currency", "values": ["EUR", "US\"D"]},
        {"name": "R", "kind": "window", "key": "terminal_id", "days": 0.25, "stat": "ratio",
         "field": "amount"},
        {"name": "Z", "kind": "window", "key": "customer_id", "days": 3, "stat": "zscore",
         "field": "amount"},
        {"name": "CARD_FRAUDS", "kind": "label_risk", "key": "customer_id", "days": 1.5,
         "stat": "sum"},
    ]  # fmt: skip
    spec = FamilySpec.from_dict(tables, tmp_path)
    assert spec.feature_names[-4:] == ('CUR_US"D', "R", "Z", "CARD_FRAUDS")
    path = tmp_path / "every.toml"
    path.write_text(spec.to_toml())
    assert load_family(path) == spec
    assert dump_toml({"a": {"b": {"c": 1}}, "x y": "\x7f"}) == (
        '"x y" = "\\u007f"\n\n[a]\n\n[a.b]\nc = 1\n'
    )


def _feature(tables: dict, name: str) -> dict:
    return next(f for f in tables["features"] if f["name"] == name)


def _spoil(tables: dict, change: str) -> dict:  # noqa: C901
    """``tables`` with one entry spoiled, by name."""
    avg = _feature(tables, "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW")
    risk = _feature(tables, "TERMINAL_ID_RISK_1DAY_WINDOW")
    if change == "unknown kind":
        avg["kind"] = "rolling"
    elif change == "duplicate name":
        risk["name"] = "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"
    elif change == "duplicate category column":
        tables["features"] += [{"name": "TX", "kind": "category", "field": "currency",
                                "values": ["AMOUNT"]}]  # fmt: skip
    elif change == "missing key":
        del avg["key"]
    elif change == "missing input time":
        del tables["input"]["time"]
    elif change == "missing field":
        avg["field"] = "amount_eur"
    elif change == "mean without field":
        del avg["field"]
    elif change == "count with field":
        _feature(tables, "CUSTOMER_ID_NB_TX_7DAY_WINDOW")["field"] = "amount"
    elif change in ("days 0", "days -1", "days '7'", "days true", "days nan"):
        avg["days"] = {"0": 0, "-1": -1, "'7'": "7", "true": True, "nan": float("nan")}[
            change.split()[1]
        ]
    elif change == "typo":
        avg["dayz"] = 7
    elif change == "string mean":
        avg["field"] = "terminal_id"
    elif change == "unknown stat":
        avg["stat"] = "median"
    elif change == "risk key not in labels":
        tables["features"] = [{"name": "X", "kind": "label_risk", "key": "currency",
                               "days": 1, "stat": "count"}]  # fmt: skip
    elif change == "unknown schema":
        tables["input"]["schema"] = "transactions"
    elif change == "missing schema file":
        tables["label"]["schema"] = "nowhere/label.avsc"
    elif change == "reserved output":
        tables["output"]["kind"] = "regression"
    elif change == "negative delay":
        tables["label"]["delay_days"] = -7
    elif change == "no features":
        tables["features"] = []
    elif change == "bad name":
        tables["name"] = "fraud handbook"
    elif change == "enum value":
        tables["input"]["schema"] = "fraud_flag"  # no enum there: category on a double
        tables["input"]["time"] = "event_time"
        tables["features"] = [{"name": "S", "kind": "category", "field": "score",
                               "values": ["1"]}]  # fmt: skip
    else:  # pragma: no cover
        raise AssertionError(change)
    return tables


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown kind", "features[6] 'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW': unknown kind 'rolling'"),
        ("duplicate name", "features[10] 'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW': duplicate name"),
        ("duplicate category column", "features[15] 'TX': duplicate name 'TX_AMOUNT'"),
        ("missing key", "features[6] 'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW': missing 'key'"),
        ("missing input time", "[input]: missing 'time'"),
        ("missing field", "features[6] 'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW' field: no field 'amount_eur'"),
        ("mean without field", "stat 'mean' needs a numeric 'field'"),
        ("count with field", "features[5] 'CUSTOMER_ID_NB_TX_7DAY_WINDOW': stat 'count' takes no field"),
        ("days 0", "'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW' days: a positive number of days is needed, not 0"),
        ("days -1", "days: a positive number of days is needed, not -1"),
        ("days '7'", "days: a positive number of days is needed, not '7'"),
        ("days true", "days: a positive number of days is needed, not True"),
        ("days nan", "days: a positive number of days is needed, not nan"),
        ("typo", "'CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW': unknown key 'dayz'"),
        ("string mean", "field 'terminal_id' is string, one of boolean, int, long, float, double, decimal"),
        ("unknown stat", "stat: 'median' is not one of count, sum, mean, ratio, zscore"),
        ("risk key not in labels", "features[0] 'X' key (in the label schema): no field 'currency'"),
        ("unknown schema", "[input] schema: 'transactions' is neither a built-in schema"),
        ("missing schema file", "[label] schema: cannot read"),
        ("reserved output", "[output] kind: 'regression' is reserved"),
        ("negative delay", "[label] delay_days: a number of days >= 0 is needed, not -7"),
        ("no features", "features: a non-empty list"),
        ("bad name", "name: 'fraud handbook' is not a name"),
        ("enum value", "features[0] 'S' field: field 'score' is double, one of string, enum"),
    ],
)  # fmt: skip
def test_invalid_entries_are_named(tables: dict, change: str, message: str) -> None:
    with pytest.raises(FamilySpecError) as err:
        FamilySpec.from_dict(_spoil(tables, change))
    assert message in str(err.value)


def test_float_window_fields_need_their_decimals(tmp_path: Path) -> None:
    schema = ('{"type": "record", "name": "E", "fields": [{"name": "id", "type": "string"}, '
              '{"name": "t", "type": "long"}, {"name": "x", "type": "double"}, '
              '{"name": "y", "type": "int"}]}')  # fmt: skip
    (tmp_path / "e.avsc").write_text(schema)
    tables = {
        "name": "e",
        "input": {"topic": "e", "schema": "e.avsc", "id": "id", "key": "id", "time": "t"},
        "label": {"topic": "l", "schema": "e.avsc", "id": "id", "field": "y", "time": "t",
                  "label_time": "t", "delay_days": 0},
        "output": {"topic": "o"},
        "features": [{"name": "M", "kind": "window", "key": "id", "days": 1, "stat": "mean",
                      "field": "x"}],
    }  # fmt: skip
    with pytest.raises(FamilySpecError, match=r"features\[0\] 'M': field 'x' is double: window"):
        FamilySpec.from_dict(tables, tmp_path)
    tables["input"]["decimals"] = {"y": 2}
    with pytest.raises(FamilySpecError, match=r"\[input.decimals\] y: field 'y' is int"):
        FamilySpec.from_dict(tables, tmp_path)
    tables["input"]["decimals"] = {"x": 12}
    with pytest.raises(FamilySpecError, match="places must be within 0..9"):
        FamilySpec.from_dict(tables, tmp_path)
    tables["input"]["decimals"] = {"x": 3}
    assert FamilySpec.from_dict(tables, tmp_path).input.decimals_of("x") == 3


def test_load_family_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(FamilySpecError, match="bad.toml: not valid TOML"):
        load_family(bad)
    text = (
        (PACKAGE / "fraud_handbook.toml").read_text().replace('stat = "share"', 'stat = "rate"', 1)
    )
    bad.write_text(text)
    with pytest.raises(FamilySpecError, match=r"bad.toml: features\[10\] 'TERMINAL_ID_RISK_1DAY"):
        load_family(bad)
    with pytest.raises(FamilySpecError, match="cannot read"):
        load_family(tmp_path / "missing.toml")
    with pytest.raises(FamilySpecError, match="unknown built-in family"):
        builtin_family("fraudulent")

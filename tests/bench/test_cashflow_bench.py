"""bench/cashflow_forecast.py at toy size: baselines see only days before their origin, and a
simulator run writes every method's metrics for every origin."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def _load():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "cashflow_forecast", ROOT / "bench/cashflow_forecast.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cf = _load()


def test_baselines_never_look_past_their_origin() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 100, size=(5, 80))
    before = cf._baselines(values, 60)
    changed = values.copy()
    changed[:, 60:] = 1e6
    after = cf._baselines(changed, 60)
    for name in ("seasonal_naive", "simple_es", "seasonal_es"):
        np.testing.assert_array_equal(before[name], after[name])
        assert before[name].shape == (5, 7, 3) and (before[name] >= 0).all()


def test_a_toy_run_scores_every_method_at_every_origin(tmp_path: Path) -> None:
    out = tmp_path / "cf.json"
    res = CliRunner().invoke(cf.main, [
        "--source", "sim", "--terminals", "40", "--origins", "2", "--epochs", "1",
        "--teacher-epochs", "1", "--tolerance", "10", "--json-out", str(out),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["data"]["terminals"] == 40 and len(r["per_origin"]) == 2
    last = np.datetime64(r["per_origin"][-1]["origin"])
    first_day = np.datetime64(r["data"]["first_day"])
    assert last + 7 == first_day + r["data"]["days"]  # the last origin's targets end the data
    for m in cf.METHODS:
        assert np.isfinite(r["pooled"][m]["mase"]) and r["pooled"][m]["series"] == 80
    assert r["models"][0]["student"]["size_bytes"] < r["models"][0]["teacher"]["size_bytes"]

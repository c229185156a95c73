"""The cash-flow family: metrics, baselines, splits, a tiny quantile model and its export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finscore.compression.cashflow import (
    CashflowFamily,
    CashflowSplits,
    mase,
    pinball_loss,
    residual_quantiles,
    seasonal_es,
    seasonal_naive,
    simple_es,
)
from finscore.compression.export import check_parity, export_onnx, run_onnx
from finscore.features.cashflow import DailyTakings


def test_pinball_loss_equals_hand_computed() -> None:
    y = np.array([10.0, 0.0])
    q = np.array([[8.0, 12.0], [1.0, -1.0]])  # levels 0.1, 0.9
    # y=10: q=8 (under, tau .1) .1*2=.2; q=12 (over, tau .9) .1*2=.2
    # y=0: q=1 (over, tau .1) .9*1=.9; q=-1 (under, tau .9) .9*1=.9
    assert pinball_loss(y, q, (0.1, 0.9)) == pytest.approx((0.2 + 0.2 + 0.9 + 0.9) / 4)
    assert pinball_loss(np.array([3.0]), np.array([[3.0]]), (0.5,)) == 0.0


def test_mase_equals_hand_computed_and_skips_zero_scales() -> None:
    y = np.array([[1.0, 2.0], [4.0, 4.0], [5.0, 5.0]])
    point = np.array([[2.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    value, skipped = mase(y, point, np.array([0.5, 3.0, 0.0]))
    # row 0: MAE 0.5 / 0.5 = 1; row 1: MAE 3 / 3 = 1; row 2: scale 0, left out
    assert value == pytest.approx(1.0) and skipped == 1
    value, _ = mase(y[:1], point[:1], np.array([0.25]))
    assert value == pytest.approx(2.0)


def test_seasonal_naive_repeats_last_week_and_residuals() -> None:
    h = np.arange(14, dtype=float)[None, :] ** 2
    point, resid = seasonal_naive(h, horizon=7)
    np.testing.assert_array_equal(point[0], h[0, 7:14])
    np.testing.assert_array_equal(resid[0], h[0, 7:] - h[0, :7])


def test_exponential_smoothing_tracks_level_and_season() -> None:
    flat = np.full((1, 60), 5.0)
    p, r = simple_es(flat)
    np.testing.assert_allclose(p, 5.0) and np.testing.assert_allclose(r, 0.0)
    week = np.array([1.0, 1, 1, 1, 1, 5, 9])
    series = np.tile(week, 10)[None, :]
    p, r = seasonal_es(series, horizon=7)
    np.testing.assert_allclose(p[0], week, atol=1e-9)  # 70 days end on a full week
    np.testing.assert_allclose(r, 0.0, atol=1e-9)


def test_residual_quantiles_offsets_and_floor() -> None:
    point = np.array([[10.0, 0.0]])
    resid = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    q = residual_quantiles(point, resid, (0.0, 0.5, 1.0))
    np.testing.assert_allclose(q[0, 0], [8.0, 10.0, 12.0])
    np.testing.assert_allclose(q[0, 1], [0.0, 0.0, 2.0])  # clipped at 0


def test_default_splits_keep_targets_before_the_next_split() -> None:
    s = CashflowSplits.default(70)
    assert max(s.train) + 7 <= min(s.val) and max(s.val) + 7 <= min(s.test)
    assert min(s.train) == 28 and max(s.test) == 63 and len(s.test) == 7 and len(s.val) == 7
    with pytest.raises(ValueError):
        CashflowSplits((28, 30), (33,), (45,)).check()


def _weekly_takings(n: int = 60, days: int = 120, seed: int = 0) -> DailyTakings:
    """Terminals with a clear weekly pattern (weekends 3x) times a level, plus noise."""
    rng = np.random.default_rng(seed)
    week = np.array([1.0, 1, 1, 1, 1, 3, 3])
    level = rng.uniform(50, 500, size=(n, 1))
    first_day = 17_532  # a Monday
    pattern = week[(np.arange(days)) % 7][None, :]
    values = level * pattern * rng.lognormal(0.0, 0.25, size=(n, days))
    return DailyTakings(np.arange(n, dtype=np.int64), first_day, values)


@pytest.fixture(scope="module")
def trained():  # noqa: ANN201
    torch.set_num_threads(1)
    fam = CashflowFamily(teacher_hidden=(64, 64), dropout=0.0)
    data = fam.split(_weekly_takings())
    model = fam.train(fam.teacher(data), data, epochs=15, seed=0, lr=3e-3)
    return fam, data, model


def test_a_tiny_model_beats_seasonal_naive_with_ordered_quantiles(trained) -> None:  # noqa: ANN001
    fam, data, model = trained
    head = fam.head(model).eval()
    with torch.no_grad():
        out = head(torch.as_tensor(data.x_test)).numpy()
    assert out.shape == (len(data.x_test), 7, 3) and np.isfinite(out).all()
    assert (np.diff(out, axis=-1) >= 0).all()  # sorted by the head
    got = fam.evaluate(out, data)
    # seasonal naive on the same rows, in scaled units: last week of the input window
    lookback = fam.lookback
    window = data.x_test[:, :lookback].astype(np.float64)
    point, resid = seasonal_naive(window)
    naive_q = residual_quantiles(point, resid, fam.quantiles)
    naive_pinball = pinball_loss(data.y_test, naive_q, fam.quantiles)
    naive_mase, _ = mase(data.y_test, point, data.meta["test_snaive"])
    assert got["pinball"] < naive_pinball
    assert got["mase"] < naive_mase
    assert got["neg_pinball"] == -got["pinball"]
    assert 0.5 < got["coverage"] <= 1.0


def test_export_matches_torch_and_distillation_runs(trained) -> None:  # noqa: ANN001
    fam, data, model = trained
    onnx = export_onnx(fam.head(model), data.x_test, fam.input_name, fam.output_name)
    assert check_parity(fam.head(model), onnx, data.x_test[:64], 1e-4) <= 1e-4
    assert run_onnx(onnx, data.x_test[:5]).shape == (5, 7, 3)
    soft = fam.logits(model, data.x_train)
    assert soft.shape == (len(data.x_train), 21)
    assert (np.diff(soft.reshape(-1, 7, 3), axis=-1) >= 0).all()
    student = fam.train(fam.student(data, 16), data, epochs=2, seed=1, soft=soft, alpha=0.5)
    stud = fam.evaluate(run_onnx(
        export_onnx(fam.head(student), data.x_test, "features", "quantiles"), data.x_test
    ), data)  # fmt: skip
    assert np.isfinite(stud["pinball"])


def test_the_plan_runs_the_family_from_the_simulator() -> None:
    from finscore.compression.cashflow import cashflow_quick
    from finscore.compression.checks import check_artifact
    from finscore.compression.plan import Gate, to_artifact

    torch.set_num_threads(1)
    fam = CashflowFamily(teacher_hidden=(32, 32))
    data = fam.load_data("sim", n_customers=80, days=70)
    result = cashflow_quick(2, 3).run(fam, data, Gate("neg_pinball", 10.0))
    assert result.deployed is not None
    assert result.deployed.size_bytes < result.teacher.size_bytes
    art = to_artifact(result, result.deployed, fam, data)
    assert art.manifest.params["horizon_days"] == 7 and art.manifest.threshold is None
    assert art.manifest.feature_names == fam.feature_names()
    for _name, check in check_artifact(art, result.deployed.onnx, data.x_test[:64]):
        check()  # hash, size, reference outputs, batch invariance, parity with its source

"""Market baselines, the trading figure and resumable early stopping on a small simulated book;
the ``book40+mid`` teacher and students export to ONNX with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finscore.compression.export import check_parity, export_onnx
from finscore.compression.market import MarketFamily, relative_path
from finscore.compression.market_eval import (
    fit_returns_logistic,
    majority_baseline,
    persistence_baseline,
    score,
    signal_pnl,
    train_early_stopping,
)
from finscore.features.market import DOWN, FLAT, PATH_LAYOUT, UP


@pytest.fixture(scope="module")
def fam_data():
    torch.set_num_threads(1)
    fam = MarketFamily(window=30, horizon=5, layout=PATH_LAYOUT)
    data = fam.load_data("sim", n=5000, seed=3, quick=True, max_train=600)
    return fam, data


def test_split_ends_locate_every_window(fam_data) -> None:
    fam, data = fam_data
    for (_, ends), x in zip(fam.splits, (data.x_train, data.x_val, data.x_test), strict=True):
        assert len(ends) == len(x)
        # the path column of a window's last row is the log-mid at its end event
        np.testing.assert_allclose(x[:, -1, -1], np.log(fam.mid[ends]) * 1e4, rtol=1e-7)


def test_persistence_is_the_label_that_ended_k_events_ago(fam_data) -> None:
    fam, data = fam_data
    k, mid = fam.horizon, fam.mid
    want = []
    for t in fam.splits[2][1]:
        past = mid[t - 2 * k + 1 : t - k + 1].mean()  # m₋ at t − k
        future = mid[t - k + 1 : t + 1].mean()  # m₊ at t − k: known at t
        change = (future - past) / past
        want.append(UP if change > fam.alpha else DOWN if change < -fam.alpha else FLAT)
    np.testing.assert_array_equal(persistence_baseline(fam), want)


def test_majority_and_logistic_baselines(fam_data) -> None:
    fam, data = fam_data
    major = majority_baseline(data)
    assert set(major) == {int(np.bincount(data.y_train).argmax())}
    _, pred = fit_returns_logistic(fam, data)
    assert len(pred) == len(data.y_test)
    assert score(data.y_test, pred)["macro_f1"] > score(data.y_test, major)["macro_f1"]


def test_signal_pnl_follows_the_signal_for_k_events(fam_data) -> None:
    fam, data = fam_data
    ends = fam.splits[2][1]
    move = (fam.mid[ends + fam.horizon] - fam.mid[ends]) / 0.01
    pred = np.array([UP, DOWN, FLAT] * len(ends))[: len(ends)]
    got = signal_pnl(fam, pred)
    sign = np.where(pred == UP, 1, np.where(pred == DOWN, -1, 0))
    assert got["trades"] == int((sign != 0).sum())
    assert got["pnl_ticks"] == pytest.approx(float((sign * move).sum()))
    assert got["hit_rate"] == pytest.approx(float(((sign * move)[sign != 0] > 0).mean()))
    assert signal_pnl(fam, np.full(len(ends), FLAT))["pnl_ticks"] == 0.0


def test_checkpointed_training_resumes_bit_identically(fam_data, tmp_path: Path) -> None:
    fam, data = fam_data

    def fresh() -> torch.nn.Module:
        torch.manual_seed(7)  # the same initial weights each time
        return fam.student(data, 8)

    straight = train_early_stopping(fresh(), data, max_epochs=3, patience=9, seed=1)
    ck = tmp_path / "ck" / "student.pt"
    first = train_early_stopping(fresh(), data, max_epochs=2, patience=9, seed=1, checkpoint=ck)
    assert ck.exists() and len(first.curve) == 2
    torch.manual_seed(99)  # a killed run's RNG state is gone: the checkpoint must not need it
    resumed = train_early_stopping(fresh(), data, max_epochs=3, patience=9, seed=1, checkpoint=ck)
    assert resumed.resumed_from == 2 and len(resumed.curve) == 3
    assert [vars(r)["val_macro_f1"] for r in resumed.curve] == [
        vars(r)["val_macro_f1"] for r in straight.curve
    ]
    for a, b in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_early_stopping_stops_and_keeps_the_best_epoch(fam_data) -> None:
    fam, data = fam_data
    res = train_early_stopping(fam.student(data, 8), data, max_epochs=30, patience=1, lr=0.3)
    assert res.stopped_early and len(res.curve) == res.best_epoch + 1 < 30
    best = max(r.val_macro_f1 for r in res.curve)
    pred = fam.logits(res.model, data.x_val).argmax(1)
    assert score(data.y_val, pred)["macro_f1"] == pytest.approx(best)


def test_path_models_read_the_path_relative_to_the_window_end(fam_data) -> None:
    fam, data = fam_data
    x = torch.as_tensor(data.x_test[:64])
    shifted = x.clone()
    shifted[..., -1] += 500.0  # the same path 5 % higher: the relative path is unchanged
    torch.testing.assert_close(relative_path(shifted), relative_path(x), rtol=0, atol=1e-3)
    for model in (fam.teacher(data), fam.student(data, 8)):
        model.eval()
        head = fam.head(model)
        onnx = export_onnx(head, data.x_test[:8], fam.input_name, fam.output_name)
        assert check_parity(head, onnx, data.x_test[:64], 1e-4) <= 1e-4
        with torch.no_grad():
            torch.testing.assert_close(head(shifted), head(x), rtol=0, atol=1e-4)
    assert fam.params(data)["layout"] == PATH_LAYOUT

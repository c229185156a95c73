"""The market family: leak-free time splits, the ONNX contract at any batch size, learnability."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from finscore.compression.export import export_onnx, run_onnx
from finscore.compression.market import MarketFamily
from finscore.models.evaluation import macro_f1
from finscore.sim.data import data_dir

WINDOW, HORIZON = 20, 5


@pytest.fixture(scope="module")
def family_and_data():  # noqa: ANN201
    torch.set_num_threads(1)
    fam = MarketFamily(window=WINDOW, horizon=HORIZON)
    data = fam.load_data("sim", n=6000, seed=2, quick=True, max_train=1500)
    return fam, data


def _event_index(fam: MarketFamily, windows: np.ndarray, seed: int, n: int) -> np.ndarray:
    """Event index of each window's first and last row, found by matching the row bytes."""
    rows, _ = fam._rows_and_mid("sim", None, seed, n)
    where = {r.tobytes(): i for i, r in enumerate(rows)}
    assert len(where) == len(rows)  # simulated rows are unique, so the match is exact
    return np.array([[where[w[0].tobytes()], where[w[-1].tobytes()]] for w in windows])


def test_splits_are_time_ordered_with_a_gap_and_balanced(family_and_data) -> None:  # noqa: ANN001
    fam, data = family_and_data
    spans = [_event_index(fam, x, 2, 6000) for x in (data.x_train, data.x_val, data.x_test)]
    for span in spans:
        assert np.all(span[:, 1] - span[:, 0] == WINDOW - 1)  # contiguous windows
    for before, after in zip(spans, spans[1:], strict=False):
        # the last label of one split looks HORIZON events ahead; the next split's first
        # window must start after that, so no input row or label is shared.
        assert before[:, 1].max() + HORIZON < after[:, 0].min()
    for y in (data.y_train, data.y_val, data.y_test):
        assert set(np.unique(y)) <= {0, 1, 2}
    shares = np.bincount(data.y_train, minlength=3) / len(data.y_train)
    assert shares.min() > 0.15, shares  # α is chosen for roughly balanced classes
    assert data.x_train.shape[1:] == (WINDOW, 40) and data.x_train.dtype == np.float32


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_onnx_export_has_a_dynamic_batch_and_matches_torch(family_and_data, which) -> None:  # noqa: ANN001
    fam, data = family_and_data
    model = fam.teacher(data) if which == "teacher" else fam.student(data, 16)
    head = fam.head(model).eval()
    onnx_bytes = export_onnx(head, data.x_test, fam.input_name, fam.output_name)
    graph = onnx.load_from_string(onnx_bytes).graph
    assert [i.name for i in graph.input] == ["book"] and [o.name for o in graph.output] == ["probs"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    for batch in (1, 7, 300):
        x = data.x_test[:batch]
        with torch.no_grad():
            want = head(torch.as_tensor(x)).numpy()
        got = run_onnx(onnx_bytes, x)
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # probabilities


def test_a_small_student_learns_the_simulated_imbalance_signal(family_and_data) -> None:  # noqa: ANN001
    fam, data = family_and_data
    student = fam.train(fam.student(data, 16), data, epochs=4, seed=0, lr=3e-3)
    metrics = fam.evaluate(fam.logits(student, data.x_test), data, "test")
    assert metrics["macro_f1"] > 0.40, metrics  # chance is about 1/3
    majority = np.full_like(data.y_test, np.bincount(data.y_train).argmax())
    assert metrics["macro_f1"] > macro_f1(data.y_test, majority) + 0.1


def test_evaluate_reports_accuracy_and_macro_f1(family_and_data) -> None:  # noqa: ANN001
    fam, data = family_and_data
    onehot = np.eye(3, dtype=np.float32)[data.y_test]
    assert fam.evaluate(onehot, data) == {"macro_f1": 1.0, "accuracy": 1.0}
    always_flat = np.tile(np.array([0.0, 1.0, 0.0], np.float32), (len(data.y_test), 1))
    m = fam.evaluate(always_flat, data)
    share_flat = float(np.mean(data.y_test == 1))
    assert m["accuracy"] == pytest.approx(share_flat)
    assert m["macro_f1"] == pytest.approx(2 * share_flat / (1 + share_flat) / 3)


@pytest.mark.skipif(
    not (data_dir() / "lobster_sample_2012-06-21").exists(), reason="LOBSTER absent"
)
def test_lobster_goog_splits_are_roughly_balanced_at_horizon_10() -> None:
    fam = MarketFamily(window=WINDOW, horizon=10)
    data = fam.load_data("lobster", quick=True, max_train=2000)
    assert data.meta["events"] == 147_916 and 1e-6 < fam.alpha < 1e-4
    for y in (data.y_train, data.y_test):
        shares = np.bincount(y, minlength=3) / len(y)
        assert shares.min() > 0.25, shares

"""Fraud training reads the worker's features: the declaration (``fraud_declared.toml``) run by
:func:`finscore.families.fraud.training_features`, equal bit for bit to the hand-coded replay."""

from __future__ import annotations

import numpy as np
import pytest

import finscore.compression.fraud as cf
import finscore.features.fraud as ff
from finscore.families.fraud import training_features
from finscore.features.fraud import FraudFeatureConfig, featurize_frame
from finscore.sim.transactions import TxSimConfig, simulate_frame


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(TxSimConfig(n_customers=200, n_terminals=300, days=45, seed=5))


def test_training_features_are_the_hand_coded_ones_bit_for_bit(frame) -> None:  # noqa: ANN001
    want = featurize_frame(frame)
    got = training_features(frame)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (got[:, -1] > 0).any()  # the habit streak is exercised
    # offline the label contract changes nothing: every outcome is replayed
    reports = FraudFeatureConfig(label_contract="fraud_reports")
    np.testing.assert_array_equal(training_features(frame, reports), want)


def test_compress_trains_on_the_declaration(frame, monkeypatch) -> None:  # noqa: ANN001
    def hand_coded(*_: object, **__: object) -> None:
        raise AssertionError("training ran the hand-coded replay, not the declaration")

    monkeypatch.setattr(ff, "featurize_frame", hand_coded)
    monkeypatch.setattr(cf, "featurize_frame", hand_coded, raising=False)
    # the simulator starts on 2018-04-01; 45 days
    splits = cf.FraudSplits(("2018-04-20", "2018-04-30"), ("2018-04-30", "2018-05-05"),
                            ("2018-05-08", "2018-05-14"))  # fmt: skip
    data = cf.split_frame(frame, splits)
    assert data.x_train.shape[1] == 23 and len(data.x_train) > 0


def test_other_windows_fall_back_to_the_hand_coded_replay(frame) -> None:  # noqa: ANN001
    cfg = FraudFeatureConfig(windows_days=(2, 7, 30))
    np.testing.assert_array_equal(training_features(frame, cfg), featurize_frame(frame, cfg))

"""The naive Faust peer of `finscore bench` computes the same features as the workers, so the
benchmark compares execution models only."""

from __future__ import annotations

import numpy as np

from finscore.app.bench.faust_peer_features import PerEventFraudFeatures
from finscore.features.fraud import FraudFeatures
from finscore.sim.transactions import DAY_MS, TxSimConfig, merged_events, simulate_frame


def test_per_event_peer_features_equal_the_columnar_features() -> None:
    frame = simulate_frame(TxSimConfig(n_customers=100, n_terminals=200, days=45, seed=3))
    ours, peer = FraudFeatures(), PerEventFraudFeatures()
    got, want, batch = [], [], []
    for kind, rec in merged_events(frame, 7 * DAY_MS):
        if kind == "label":
            if batch:
                want.append(ours.transform(batch))
                batch = []
            ours.apply_labels([rec])
            peer.apply_labels([rec])
        else:
            got.append(peer.transform([rec])[0])
            batch.append(rec)
    want.append(ours.transform(batch))
    got_rows, want_rows = np.stack(got), np.concatenate(want)
    assert len(got_rows) == len(frame) and want_rows[:, 12].max() > 0  # terminal risk exercised
    assert want_rows[:, 20].max() > 0  # and the habit risk
    np.testing.assert_allclose(got_rows, want_rows, rtol=1e-5, atol=1e-5)

"""Fraud reports only, two workers: the terminal counts come from the transactions, which the
workers exchange as terminal entries through the broker, and every feature equals the offline
features of the full-outcome contract."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from finscore.app.console.produce import produce
from finscore.features.fraud import FraudFeatures, featurize_frame
from finscore.schemas import topics as T
from finscore.sim.transactions import (
    DAY_MS,
    TxSimConfig,
    label_record,
    simulate_frame,
    transaction_record,
)
from tests.artifacts import artifact
from tests.streams.kit import make_topics, publish, running, wait_until, worker_config

pytestmark = pytest.mark.broker

SIM = TxSimConfig(n_customers=120, n_terminals=150, days=14, seed=4)


def _wait(what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
    wait_until(what, done, timeout)


def test_two_workers_fed_fraud_reports_only_compute_the_offline_features(
    client,
    prefix,
    monkeypatch,  # noqa: ANN001
) -> None:
    frame = simulate_frame(SIM)
    offline = featurize_frame(frame)  # every outcome, offline: the reference
    seen: dict[str, tuple[int, np.ndarray]] = {}
    original = FraudFeatures.transform_columns

    def recording(self, transaction_id, *args):  # noqa: ANN001, ANN202
        x = original(self, transaction_id, *args)
        seen.update((i, (id(self), row)) for i, row in zip(transaction_id, x, strict=True))
        return x

    monkeypatch.setattr(FraudFeatures, "transform_columns", recording)
    make_topics(client, prefix, partitions=4)
    publish(client, prefix, artifact("fraud"))
    kw = {"label_contract": "fraud_reports", "commit_interval": 0.2}
    with (
        running(worker_config(client, prefix, instance_id="a", **kw)) as a,
        running(worker_config(client, prefix, instance_id="b", **kw)) as b,
    ):
        _wait("2 partitions each", lambda: len(a.transport.assignment()) == 2
              and len(b.transport.assignment()) == 2, 30)  # fmt: skip
        fleet = [a.stream.features, b.stream.features]  # type: ignore[attr-defined]
        delay = SIM.label_delay_days * DAY_MS
        t, fraud = frame.event_time, frame.is_fraud != 0
        day0 = int(t[0]) // DAY_MS * DAY_MS
        for d in range(SIM.days):
            lo, hi = day0 + d * DAY_MS, day0 + (d + 1) * DAY_MS
            # the day's fraud reports first (a report counts only from its label time on)...
            reports = np.flatnonzero(fraud & (t + delay >= lo) & (t + delay < hi))
            produce(client, iter([(prefix + T.FRAUD_LABELS, str(frame.terminal_id[i]),
                                   "fraud_label", label_record(frame, int(i), delay))
                                  for i in reports]))  # fmt: skip
            n_reports = int((fraud & (t + delay < hi)).sum())
            _wait("reports", lambda n=n_reports: all(f.held()["terminals"] >= n for f in fleet))
            # ... then its transactions; each worker scores its own customers' and, a commit
            # interval later, holds every terminal entry of the other's
            rows = np.flatnonzero((t >= lo) & (t < hi))
            produce(client, iter([(prefix + T.TRANSACTIONS, str(frame.customer_id[i]),
                                   "transaction", transaction_record(frame, int(i)))
                                  for i in rows]))  # fmt: skip
            n_tx = int((t < hi).sum())
            _wait(
                "entries", lambda n=n_tx: all(f.held()["terminal_transactions"] >= n for f in fleet)
            )
    got = np.stack([seen[str(i)][1] for i in frame.transaction_id])
    np.testing.assert_allclose(got, offline, rtol=1e-6, atol=1e-6)
    by = {w for w, _ in seen.values()}
    assert len(by) == 2  # both workers scored
    late = t >= day0 + 8 * DAY_MS  # terminal windows are populated from day 8 on
    assert (offline[late, 13] > 0).mean() > 0.5  # TERMINAL_ID_NB_TX_30DAY_WINDOW

"""Throughput of the shared fraud features (the worker's hot path), on one core.

Warms a :class:`FraudFeatures` state on the first ``--warm-days`` of a simulated history
(handbook scale by default: 5,000 customers, 10,000 terminals), labels applied as they become
known, then times, on the following days:

- ``transform_columns`` (the worker's columnar entry point) and ``transform`` (dicts) in
  worker-sized batches (``--batch``), and ``transform`` one transaction at a time (the first
  ``--single`` transactions), side by side with the naive Faust peer's per-event feature code
  (:mod:`finscore.app.bench.faust_peer_features`) on the same transactions;
- ``apply_labels`` on the labels of those days;
- ``featurize_frame`` (the offline replay used by training) over the whole history.

::

    .venv/bin/python bench/fraud_features_bench.py [--days 60] [--batch 5000] [--json-out F]
"""

from __future__ import annotations

import json
import platform
import time

import click
import numpy as np

from finscore.app.bench.faust_peer_features import PerEventFraudFeatures
from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatureConfig, FraudFeatures
from finscore.features.fraud import featurize_frame as featurize
from finscore.sim.transactions import DAY_MS, TxSimConfig, label_record, simulate_frame


def _records(frame, idx: np.ndarray) -> list[dict]:  # noqa: ANN001
    """Worker-shaped transaction dicts (string ids, float amounts as decoded by the codec)."""
    return [
        {
            "transaction_id": str(int(frame.transaction_id[i])),
            "event_time": int(frame.event_time[i]),
            "customer_id": str(int(frame.customer_id[i])),
            "terminal_id": str(int(frame.terminal_id[i])),
            "amount": float(frame.amount[i]),
        }
        for i in idx
    ]


@click.command()
@click.option("--customers", default=5000, show_default=True)
@click.option("--terminals", default=10000, show_default=True)
@click.option("--days", default=60, show_default=True, help="simulated history length")
@click.option("--warm-days", default=45, show_default=True, help="days replayed before timing")
@click.option("--batch", default=5000, show_default=True, help="transform batch size")
@click.option("--single", default=2000, show_default=True, help="transactions timed one by one")
@click.option("--seed", default=0, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(
    customers: int,
    terminals: int,
    days: int,
    warm_days: int,
    batch: int,
    single: int,
    seed: int,
    json_out: str | None,
) -> None:
    cfg = TxSimConfig(n_customers=customers, n_terminals=terminals, days=days, seed=seed)
    frame = simulate_frame(cfg)
    delay = cfg.label_delay_days * DAY_MS
    split_ms = cfg.start_ms + warm_days * DAY_MS
    warm_idx = np.flatnonzero(frame.event_time < split_ms)
    hot_idx = np.flatnonzero(frame.event_time >= split_ms)
    lab_time = frame.event_time + delay

    def warm_state() -> FraudFeatures:
        ff = FraudFeatures(FraudFeatureConfig(label_delay_ms=delay))
        ff.apply_labels(
            label_record(frame, int(i), delay) for i in np.flatnonzero(lab_time < split_ms)
        )
        ff.transform(_records(frame, warm_idx))
        return ff

    hot = _records(frame, hot_idx)
    hot_labels = [
        label_record(frame, int(i), delay)
        for i in np.flatnonzero((lab_time >= split_ms) & (lab_time < cfg.start_ms + days * DAY_MS))
    ]
    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "features": len(FRAUD_FEATURE_NAMES),
        "history_rows": len(frame),
        "timed_rows": len(hot),
    }

    ff = warm_state()
    t0 = time.perf_counter()
    for s in range(0, len(hot), batch):
        ff.transform(hot[s : s + batch])
    dt = time.perf_counter() - t0
    results[f"transform_batch{batch}_tx_per_s"] = len(hot) / dt

    ff = warm_state()
    cols = (
        [r["transaction_id"] for r in hot],
        np.array([r["event_time"] for r in hot], dtype=np.int64),
        [r["customer_id"] for r in hot],
        [r["terminal_id"] for r in hot],
        np.array([round(r["amount"] * 100) for r in hot], dtype=np.int64),
    )
    t0 = time.perf_counter()
    for s in range(0, len(hot), batch):
        ff.transform_columns(*(c[s : s + batch] for c in cols))
    dt = time.perf_counter() - t0
    results[f"transform_columns_batch{batch}_tx_per_s"] = len(hot) / dt

    ff = warm_state()
    t0 = time.perf_counter()
    for rec in hot[:single]:
        ff.transform([rec])
    dt = time.perf_counter() - t0
    results["transform_batch1_tx_per_s"] = single / dt
    results["transform_batch1_us_per_tx"] = dt / single * 1e6

    peer = PerEventFraudFeatures(FraudFeatureConfig(label_delay_ms=delay))
    peer.apply_labels(
        label_record(frame, int(i), delay) for i in np.flatnonzero(lab_time < split_ms)
    )
    for rec in _records(frame, warm_idx):
        peer.transform([rec])
    t0 = time.perf_counter()
    for rec in hot:
        peer.transform([rec])
    dt = time.perf_counter() - t0
    results["naive_peer_per_event_tx_per_s"] = len(hot) / dt
    results["naive_peer_per_event_us_per_tx"] = dt / len(hot) * 1e6

    t0 = time.perf_counter()
    ff.transform(hot)  # every id already seen: the at-least-once replay path
    results["transform_replay_tx_per_s"] = len(hot) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    ff.apply_labels(hot_labels)
    results["apply_labels_per_s"] = len(hot_labels) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    ff.evict()
    results["evict_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    featurize(frame)
    dt = time.perf_counter() - t0
    results["featurize_frame_rows_per_s"] = len(frame) / dt
    results["featurize_frame_s"] = dt

    for k, v in results.items():
        print(f"{k:34s} {v:,.1f}" if isinstance(v, float) else f"{k:34s} {v}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

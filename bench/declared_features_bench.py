"""The declared fraud family against the hand-coded fraud features, side by side, on one core.

:class:`~finscore.families.DeclaredFeatures` on a built-in declaration (``fraud_declared``: all 23
columns, by default; ``fraud_handbook``: the first 15) against
:class:`~finscore.features.fraud.FraudFeatures` (always all 23), fed the same batches,
interleaved (which engine goes first alternates per batch): a simulated history (handbook
scale by default: 5,000 cards, 10,000 terminals) in ``--batch``-row batches, every
transaction's outcome applied once its label time has passed, each state evicted after each
batch. The first ``--warm-days`` warm the states up; on the days after, each batch's
``transform_columns`` and ``apply_label_columns`` are timed, and every declared row is checked
equal to the hand-coded one (the declared columns, bit for bit). Prints the median batch times
and throughputs, and ``--offline`` times :func:`~finscore.families.featurize` against
:func:`~finscore.features.fraud.featurize_frame` over the whole history.

::

    .venv/bin/python bench/declared_features_bench.py [--family fraud_declared] [--days 70]
        [--warm-days 45] [--batch 5000] [--offline] [--json-out F]
"""

from __future__ import annotations

import json
import platform
import time

import click
import numpy as np

from finscore.families import DeclaredFeatures, builtin_family, featurize
from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures, featurize_frame
from finscore.sim.transactions import DAY_MS, TxSimConfig, simulate_frame


def _columns(frame, delay_ms: int) -> tuple[dict, dict]:  # noqa: ANN001
    """The transaction and label columns as the worker's columnar decoder gives them (string
    ids, amounts in cents); every label known ``delay_ms`` after its transaction."""
    tx = {
        "transaction_id": frame.transaction_id.astype(str).tolist(),
        "event_time": np.asarray(frame.event_time, dtype=np.int64),
        "customer_id": frame.customer_id.astype(str).tolist(),
        "terminal_id": frame.terminal_id.astype(str).tolist(),
        "amount": np.round(np.asarray(frame.amount) * 100).astype(np.int64),
    }
    labels = {
        "transaction_id": tx["transaction_id"],
        "customer_id": tx["customer_id"],
        "terminal_id": tx["terminal_id"],
        "tx_time": tx["event_time"],
        "label_time": tx["event_time"] + delay_ms,
        "is_fraud": np.asarray(frame.is_fraud, dtype=bool),
        "amount": tx["amount"],
    }
    return tx, labels


def _rows(cols: dict, a: int, b: int) -> dict:
    return {k: v[a:b] for k, v in cols.items()}


@click.command()
@click.option(
    "--family", default="fraud_declared", show_default=True, help="a built-in declaration"
)
@click.option("--customers", default=5000, show_default=True)
@click.option("--terminals", default=10000, show_default=True)
@click.option("--days", default=70, show_default=True, help="simulated history length")
@click.option("--warm-days", default=45, show_default=True, help="days replayed before timing")
@click.option("--batch", default=5000, show_default=True, help="rows per batch")
@click.option("--seed", default=5, show_default=True)
@click.option("--offline", is_flag=True, help="also time featurize against featurize_frame")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(
    family: str,
    customers: int,
    terminals: int,
    days: int,
    warm_days: int,
    batch: int,
    seed: int,
    offline: bool,
    json_out: str | None,
) -> None:
    spec = builtin_family(family)
    width = len(spec.feature_names)
    assert spec.feature_names == FRAUD_FEATURE_NAMES[:width]
    frame = simulate_frame(TxSimConfig(n_customers=customers, n_terminals=terminals, days=days,
                                       seed=seed))  # fmt: skip
    delay = spec.label.delay_ms
    tx, labels = _columns(frame, delay)
    t = tx["event_time"]
    label_t = labels["label_time"]
    declared, hand = DeclaredFeatures(spec), FraudFeatures()
    warm_until = int(t[0]) + warm_days * DAY_MS
    timed: dict[str, list[float]] = {k: [] for k in
                                     ("declared", "hand", "declared_labels", "hand_labels")}  # fmt: skip
    n_timed = n_labels = 0
    j = 0
    for k, a in enumerate(range(0, len(t), batch)):
        b = min(a + batch, len(t))
        jj = int(np.searchsorted(label_t, t[a], "right"))  # labels known at the batch's start
        lc, tc = _rows(labels, j, jj), _rows(tx, a, b)
        j = jj
        clock = time.perf_counter
        order = ("declared", "hand") if k % 2 == 0 else ("hand", "declared")
        spent: dict[str, float] = {}
        rows: dict[str, np.ndarray] = {}
        for name in order:
            t0 = clock()
            if name == "declared":
                declared.apply_label_columns(lc)
            else:
                hand.apply_label_columns(lc["transaction_id"], lc["customer_id"],
                                         lc["terminal_id"], lc["tx_time"], lc["label_time"],
                                         lc["is_fraud"], lc["amount"])  # fmt: skip
            t1 = clock()
            if name == "declared":
                rows[name] = declared.transform_columns(tc)
            else:
                rows[name] = hand.transform_columns(tc["transaction_id"], tc["event_time"],
                                                    tc["customer_id"], tc["terminal_id"],
                                                    tc["amount"])  # fmt: skip
            spent[name], spent[f"{name}_labels"] = clock() - t1, t1 - t0
        declared.evict()
        hand.evict()
        np.testing.assert_array_equal(rows["declared"], rows["hand"][:, :width])
        if t[a] >= warm_until:
            for name, dt in spent.items():
                timed[name].append(dt)
            n_timed += b - a
            n_labels += len(lc["tx_time"])
    result: dict = {
        "family": family,
        "features": width,
        "rows_timed": n_timed,
        "labels_timed": n_labels,
        "batch": batch,
        "machine": platform.processor() or platform.machine(),
    }
    for name, ts in timed.items():
        arr = np.array(ts)
        per = n_labels if name.endswith("labels") else n_timed
        result[name] = {
            "batches": len(arr),
            "median_ms": float(np.median(arr) * 1e3),
            "per_s": float(per / arr.sum()),
        }
        click.echo(f"{name:16s} {len(arr)} batches, median {np.median(arr) * 1e3:7.2f} ms,"
                   f" {per / arr.sum():12,.0f} rows/s")  # fmt: skip
    ratio = result["declared"]["per_s"] / result["hand"]["per_s"]
    result["transform_ratio"] = ratio
    click.echo(f"declared / hand-coded transform_columns throughput: {ratio:.3f}")
    if offline:
        t0 = time.perf_counter()
        got = featurize(spec, tx, labels)
        t1 = time.perf_counter()
        want = featurize_frame(frame)
        t2 = time.perf_counter()
        np.testing.assert_array_equal(got, want[:, :width])
        result["offline_s"] = {"featurize": t1 - t0, "featurize_frame": t2 - t1}
        click.echo(f"offline: featurize {t1 - t0:.2f} s, featurize_frame {t2 - t1:.2f} s "
                   f"({len(t):,} rows, equal)")  # fmt: skip
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()

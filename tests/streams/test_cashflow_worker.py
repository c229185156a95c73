"""The cash-flow worker end to end on a real broker: a cash-flow model compressed here
(`compress cashflow`'s path, tiny), signed and promoted on model-updates; ~40 days of payments
at a few terminals on `transactions`; the worker writes one forecast per active terminal per new
UTC day to `cashflow-forecasts`, naming the model version, equal to the same model run offline
on the days before each origin; a bad record goes to the dead letters."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from finscore.features.cashflow import DAY_MS, HORIZON, LOOKBACK, daily_takings, forecast_rows
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    produce_records,
    publish,
    running,
    worker_config,
)
from tests.streams.test_cashflow_pipeline import TERMINALS, transactions

pytestmark = pytest.mark.broker

N_DAYS = 40


def _compressed(tmp_path: Path):  # noqa: ANN202
    """A tiny cash-flow model through `finscore compress cashflow`'s path (unsigned here;
    :func:`publish` signs it with the test key)."""
    from finscore.app.cli.compress import run_compression

    _, art = run_compression(
        "cashflow", data="sim", sim_size=(60, 70), terminals=60, epochs=2, teacher_epochs=2,
        tolerance=10.0, registry_dir=tmp_path / "registry", echo=False,
    )  # fmt: skip
    assert art is not None
    return art


def _offline(art, txs: list[dict], origins: list[int]) -> dict[tuple[str, int], np.ndarray]:  # noqa: ANN001
    """(terminal, origin day) → quantiles in currency, from the transactions before each origin."""
    s = ort.InferenceSession(art.onnx, providers=["CPUExecutionProvider"])
    tid = np.array([int(r["terminal_id"][1:]) for r in txs])
    et = np.array([r["event_time"] for r in txs])
    amt = np.array([float(r["amount"]) for r in txs])
    want = {}
    for d in origins:
        before = et < d * DAY_MS
        tk = daily_takings(tid[before], et[before], amt[before], first_day=d - LOOKBACK,
                           n_days=LOOKBACK, terminals=np.arange(len(TERMINALS)))  # fmt: skip
        active = np.flatnonzero(tk.values.sum(1) > 0)
        x, _, scale = forecast_rows(tk.values[active], np.array([LOOKBACK]),
                                    first_day=d - LOOKBACK, with_targets=False)  # fmt: skip
        out = s.run(None, {s.get_inputs()[0].name: x})[0] * scale[:, None, None]
        for i, q in zip(active.tolist(), out, strict=True):
            want[(f"t{i}", d)] = q
    return want


def test_cashflow_forecasts_end_to_end(client, prefix, tmp_path: Path) -> None:  # noqa: ANN001
    make_topics(client, prefix, partitions=1)  # one partition: read in event-time order
    art = _compressed(tmp_path)
    publish(client, prefix, art)

    today = int(time.time() * 1000) // DAY_MS
    first = today - N_DAYS - 1
    txs = transactions(N_DAYS, seed=5, base_day=first)
    tx = Codec("transaction")
    items = [(r["customer_id"].encode(), tx.encode(r)) for r in txs]
    items[50:50] = [(b"c0", b"\xc3\x01 not a payment")]
    produce_records(client, prefix + T.TRANSACTIONS, items)

    origins = list(range(first + LOOKBACK + 1, first + N_DAYS))
    want = _offline(art, txs, origins)
    with running(worker_config(client, prefix, stream="cashflow")) as w:
        assert w.model_name == "cashflow"
        got = decode_all(consume_all(client, prefix + T.CASHFLOW_FORECASTS, len(want),
                                     settle=1.0), "cashflow_forecast")  # fmt: skip
        dead = decode_all(consume_all(client, prefix + T.dlq(T.TRANSACTIONS), 1),
                          "dead_letter")  # fmt: skip
    by_key = {(r["terminal_id"], r["origin"] // DAY_MS): r for r in got}  # at least once
    assert set(by_key) == set(want)
    for (t, d), q in want.items():
        r = by_key[(t, d)]
        assert r["model_name"] == "cashflow" and r["model_version"] == art.manifest.version
        assert r["days"] == [(d + h) * DAY_MS for h in range(HORIZON)]
        got_q = np.array(r["quantiles"])
        assert (np.diff(got_q, axis=1) >= 0).all()
        np.testing.assert_allclose(got_q, q, rtol=1e-5, atol=1e-6)
    assert [d["error_type"] for d in dead] == ["DecodeError"]

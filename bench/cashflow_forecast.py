"""Cash-flow forecasts per terminal: the cash-flow family (teacher and compressed student) against
seasonal-naive and exponential-smoothing baselines, rolling origin (issue 18, line 5).

**Data.** The fraud handbook's simulated transactions (``fraud_handbook_sim/transactions.csv.xz``
under ``--data-dir``, default ``FINSCORE_DATA_DIR``, else ``../shared/data``), or, when that file
is absent (or with ``--source sim``), the project's simulator (1,000 customers, 2,000
terminals, 120 days, seed 0). Takings: the sum of amounts per terminal and UTC day, zero-filled
(:func:`finscore.features.cashflow.daily_takings`). For time, a seeded random subset of
``--terminals`` terminals (default 1,000; the handbook has 10,000) is forecast.

**Protocol (rolling origin).** ``--origins`` origins (default 4), 7 days apart, the last one
the last day whose 7 target days are all in the data: ``o_k = D − 7 − 7k``. At each origin
``o`` every method forecasts days ``[o, o + 7)`` of every sampled terminal from data before
``o`` only:

- ``teacher`` / ``student``: :class:`~finscore.compression.cashflow.CashflowFamily` rows
  (28 days before the origin, scaled by their mean, + log scale + weekday). Training rows:
  origins ``[28, o − 20]``; validation rows: origins ``[o − 13, o − 7]`` (every training
  target day is before the first validation origin, every validation target day before
  ``o``); test rows: origin ``o``. A fresh teacher and the plan
  :func:`~finscore.compression.cashflow.cashflow_quick` (width-32 student distilled, a quarter
  pruned, 32 shared weights, static int8) per origin, gated on validation ``neg_pinball``
  within ``--tolerance`` of the teacher's; ``student`` is the deployed candidate (the
  smallest passing), or, when none passes, the best on validation (counted in
  ``gate_failures``). Quantiles 0.1, 0.5, 0.9; the point forecast is the median.
- ``seasonal_naive``: day ``o + h`` takes day ``o + h − 7``'s takings.
- ``simple_es``: simple exponential smoothing over all days before ``o``, α per terminal from
  a grid by in-sample one-step squared error.
- ``seasonal_es``: additive weekly season, no trend (ETS(A,N,A)), (α, γ) per terminal from a
  grid likewise (:func:`~finscore.compression.cashflow.seasonal_es`).
- The point baselines' quantiles: the point plus the empirical 0.1/0.5/0.9 quantiles of the
  terminal's last 28 in-sample one-step residuals
  (:func:`~finscore.compression.cashflow.residual_quantiles`); the same offsets for every
  day ahead.

Every quantile forecast is clipped below at 0 (takings are never negative).

**Metrics** (over every terminal × origin forecast, in currency units):

- ``mase``: mean over series of the point forecast's MAE over the 7 days divided by the
  in-sample seasonal-naive MAE (m = 7) over the 28 days before the origin; series whose
  denominator is 0 are left out (``mase_left_out``). Below 1: better than the in-sample
  seasonal naive.
- ``pinball``: the mean pinball loss over days and the three quantiles (currency);
  ``scaled_pinball``: each series' pinball divided by its MASE denominator, averaged.
- ``coverage``: the share of target days inside [q0.1, q0.9] (nominal 0.8).

Also per origin, and the teacher's and student's ONNX size, parameters and batch-1 latency.
Torch on one thread. Writes ``docs/benchmarks/cashflow/cashflow_forecast.json`` (``--json-out``)
and prints the table::

    FINSCORE_DATA_DIR=/work/shared/data .venv/bin/python bench/cashflow_forecast.py
        [--source auto|handbook|sim] [--terminals N] [--origins N] [--epochs N]
        [--teacher-epochs N] [--json-out F]
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

LOOKBACK, HORIZON, STEP, SEED = 28, 7, 7, 0
QUANTILES = (0.1, 0.5, 0.9)
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "cashflow"
METHODS = ("seasonal_naive", "simple_es", "seasonal_es", "teacher", "student")


def _load(source: str, data_dir: Path | None, terminals: int):  # noqa: ANN202
    """(DailyTakings of the sampled terminals, description of the data)."""
    from finscore.features.cashflow import daily_takings
    from finscore.sim.handbook import handbook_path, load_handbook_frame

    path = handbook_path(data_dir)
    if source == "handbook" or (source == "auto" and path.exists()):
        frame, what = load_handbook_frame(path), f"handbook ({path.name})"
    else:
        from finscore.sim.transactions import TxSimConfig, simulate_frame

        cfg = TxSimConfig(n_customers=1000, n_terminals=2000, days=120, seed=SEED)
        frame = simulate_frame(cfg)
        what = (
            f"simulator ({cfg.n_customers} customers, {cfg.n_terminals} terminals, "
            f"{cfg.days} days, seed {cfg.seed})"
        )
    takings = daily_takings(frame.terminal_id, frame.event_time, frame.amount)
    n_all = len(takings.terminals)
    if terminals < n_all:
        rows = np.sort(np.random.default_rng(SEED).choice(n_all, terminals, replace=False))
        takings = takings.select(rows)
    return takings, {"source": what, "transactions": len(frame), "terminals_total": n_all}


def _scores(y: np.ndarray, q: np.ndarray, denom: np.ndarray) -> dict[str, Any]:
    """Currency-unit metrics of quantile forecasts ``q`` [n, H, Q] of ``y`` [n, H]."""
    from finscore.compression.cashflow import mase, pinball_loss

    mid = QUANTILES.index(0.5)
    m, left_out = mase(y, q[..., mid], denom)
    tau = np.asarray(QUANTILES)
    diff = y[..., None] - q
    per_series = np.maximum(tau * diff, (tau - 1) * diff).mean(axis=(1, 2))
    ok = denom > 0
    return {
        "mase": m,
        "mase_left_out": left_out,
        "pinball": pinball_loss(y, q, QUANTILES),
        "scaled_pinball": float(np.mean(per_series[ok] / denom[ok])),
        "coverage": float(np.mean((y >= q[..., 0]) & (y <= q[..., -1]))),
        "series": len(y),
    }


def _baselines(values: np.ndarray, o: int) -> dict[str, np.ndarray]:
    """Each point baseline's quantile forecasts [n, H, Q] at origin ``o`` (data before ``o``)."""
    from finscore.compression.cashflow import (
        residual_quantiles,
        seasonal_es,
        seasonal_naive,
        simple_es,
    )

    past = values[:, :o]
    out = {}
    for name, fn, hist in (
        ("seasonal_naive", seasonal_naive, past[:, -(LOOKBACK + STEP) :]),
        ("simple_es", simple_es, past),
        ("seasonal_es", seasonal_es, past),
    ):
        point, resid = fn(hist, HORIZON)
        out[name] = residual_quantiles(point, resid, QUANTILES, window=LOOKBACK, floor=0.0)
    return out


def _models(takings, o: int, epochs: int, teacher_epochs: int, tolerance: float):  # noqa: ANN001, ANN202
    """(teacher and student quantile forecasts in currency [n, H, Q], their descriptions)."""
    from finscore.compression.cashflow import CashflowFamily, CashflowSplits, cashflow_quick
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.export import run_onnx
    from finscore.compression.plan import Gate

    fam = CashflowFamily(lookback=LOOKBACK, horizon=HORIZON, quantiles=QUANTILES)
    v0 = o - HORIZON - 6
    splits = CashflowSplits(
        tuple(range(LOOKBACK, v0 - HORIZON + 1)), tuple(range(v0, o - HORIZON + 1)), (o,)
    )
    data = fam.split(takings, splits)
    plan = cashflow_quick(epochs, teacher_epochs, seed=SEED + o)
    gate_failed = False
    try:
        result = plan.run(fam, data, Gate(fam.metric, tolerance))
        chosen = result.deployed
    except GateFailed as exc:
        result, gate_failed = exc.result, True
        chosen = max(result.candidates[1:], key=lambda c: c.val_metrics[fam.metric])
    assert chosen is not None
    scale = data.meta["test_scale"][:, None, None]
    out: dict[str, np.ndarray] = {}
    desc: dict[str, Any] = {}
    for name, cand in (("teacher", result.teacher), ("student", chosen)):
        out[name] = np.maximum(run_onnx(cand.onnx, data.x_test) * scale, 0.0)
        desc[name] = {
            "candidate": cand.name,
            "size_bytes": cand.size_bytes,
            "params": cand.params,
            "p50_ms": cand.latency.get("p50_ms"),
            "val_pinball_scaled": -cand.val_metrics[fam.metric],
            "steps": [s["step"] for s in cand.steps],
        }
    desc["gate_failed"] = gate_failed
    desc["candidates"] = [
        {"name": c.name, "size_bytes": c.size_bytes, "verdict": c.verdict,
         "val_pinball_scaled": -c.val_metrics[fam.metric], "passes_gate": c.passes_gate}
        for c in result.candidates
    ]  # fmt: skip
    desc["rows"] = {"train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test)}
    return out, desc


@click.command()
@click.option("--source", type=click.Choice(["auto", "handbook", "sim"]), default="auto",
              show_default=True, help="auto: the handbook when its file is there.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding fraud_handbook_sim/ (default FINSCORE_DATA_DIR).")  # fmt: skip
@click.option("--terminals", default=1000, show_default=True, help="Terminals forecast.")
@click.option("--origins", default=4, show_default=True, help="Rolling origins, 7 days apart.")
@click.option("--epochs", default=8, show_default=True, help="Student epochs.")
@click.option("--teacher-epochs", default=10, show_default=True)
@click.option("--tolerance", default=0.01, show_default=True,
              help="Gate: validation scaled pinball within this of the teacher's.")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path),
              default=OUT / "cashflow_forecast.json", show_default=True)  # fmt: skip
def main(source, data_dir, terminals, origins, epochs, teacher_epochs, tolerance, json_out):  # noqa: ANN001, ANN201
    import torch

    from finscore.features.cashflow import seasonal_naive_scale

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    takings, about = _load(source, data_dir, terminals)
    values, n_days = takings.values, takings.values.shape[1]
    origin_cols = [n_days - HORIZON - STEP * k for k in range(origins)][::-1]
    if origin_cols[0] - 2 * HORIZON - 6 - LOOKBACK < 7:
        raise click.ClickException(f"{n_days} days are too few for {origins} origins")
    ys, qs, dens = [], {m: [] for m in METHODS}, []
    per_origin, models = [], []
    for o in origin_cols:
        t0 = time.perf_counter()
        y = values[:, o : o + HORIZON]
        denom = seasonal_naive_scale(values[:, o - LOOKBACK : o])
        fc = _baselines(values, o)
        model_fc, desc = _models(takings, o, epochs, teacher_epochs, tolerance)
        fc |= model_fc
        day = str(np.datetime64(int(takings.first_day + o), "D"))
        per_origin.append({"origin": day, "seconds": round(time.perf_counter() - t0, 1)}
                          | {m: _scores(y, fc[m], denom) for m in METHODS})  # fmt: skip
        models.append({"origin": day} | desc)
        ys.append(y)
        dens.append(denom)
        for m in METHODS:
            qs[m].append(fc[m])
        click.echo(f"origin {day}: {per_origin[-1]['seconds']} s", err=True)
    y_all, d_all = np.concatenate(ys), np.concatenate(dens)
    pooled = {m: _scores(y_all, np.concatenate(qs[m]), d_all) for m in METHODS}
    report = {
        "bench": "cashflow_forecast",
        "data": about | {"terminals": len(takings.terminals), "days": n_days,
                         "first_day": str(np.datetime64(int(takings.first_day), "D"))},
        "protocol": {"lookback": LOOKBACK, "horizon": HORIZON, "origins": origins, "step": STEP,
                     "quantiles": list(QUANTILES), "epochs": epochs,
                     "teacher_epochs": teacher_epochs, "gate_tolerance": tolerance,
                     "plan": "cashflow_quick", "seed": SEED},
        "pooled": pooled,
        "per_origin": per_origin,
        "models": models,
        "gate_failures": sum(1 for m in models if m["gate_failed"]),
        "seconds": round(time.perf_counter() - t_start, 1),
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "machine": platform.machine(), "torch_threads": 1},
    }  # fmt: skip
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(f"{about['source']}: {len(takings.terminals)} terminals, {origins} origins "
               f"({per_origin[0]['origin']} … {per_origin[-1]['origin']}), H = {HORIZON}")  # fmt: skip
    click.echo(f"{'method':<16}{'MASE':>8}{'pinball':>10}{'scaled pb':>11}{'cover80':>9}"
               f"{'MASE/origin (sd)':>20}")  # fmt: skip
    for m in METHODS:
        per = [p[m]["mase"] for p in per_origin]
        r = pooled[m]
        click.echo(f"{m:<16}{r['mase']:>8.3f}{r['pinball']:>10.2f}{r['scaled_pinball']:>11.3f}"
                   f"{r['coverage']:>9.3f}{np.mean(per):>13.3f} ({np.std(per, ddof=1) if len(per) > 1 else 0:.3f})")  # fmt: skip
    for m in models:
        t, s = m["teacher"], m["student"]
        click.echo(f"{m['origin']}: teacher {t['size_bytes']} B {t['params']} params "
                   f"{t['p50_ms']:.3f} ms; student ({s['candidate']}) {s['size_bytes']} B "
                   f"{s['params']} params {s['p50_ms']:.3f} ms"
                   f"{'  [gate failed]' if m['gate_failed'] else ''}")  # fmt: skip
    click.echo(f"{report['seconds']} s; wrote {json_out}")


if __name__ == "__main__":
    main()

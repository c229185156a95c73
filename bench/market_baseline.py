"""The market family on real data: DeepLOB-style teacher vs. small students on LOBSTER GOOG.

Protocol: the LOBSTER GOOG sample day (2012-06-21, 147,916 book events, 10 levels) through
:meth:`finscore.compression.market.MarketFamily.load_data` — time-ordered splits (train 0–60 %,
validation 60–75 %, test 75–100 %, a gap of window + horizon events between them), FI-2010
smoothed labels at horizon k with α from the training part (about a third "flat"), windows of
100 snapshots. For each horizon it trains (torch, 1 thread):

* the teacher (``MarketFamily.teacher``: conv blocks → inception → LSTM → linear),
* two students (``MarketFamily.student``: an MLP over a summary of the window) at two widths,
  each distilled from the teacher's logits (T = 2, α = 0.7),

exports each with its softmax head to ONNX (opset 17, dynamic batch), checks ONNX Runtime
parity against torch (1e-4) and measures ONNX Runtime CPU latency with 1 intra-op thread:
batch-1 p50/p99 and batch-1024 throughput (windows/s). Test-split accuracy / macro-F1 are
computed from the ONNX outputs::

    .venv/bin/python bench/market_baseline.py [--horizons 10,20,50] [--teacher-epochs 4]
        [--student-epochs 10] [--widths 64,16] [--out /tmp/market_bench]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from finscore.compression.export import check_parity, export_onnx, measure_latency, run_onnx
from finscore.compression.market import MarketFamily
from finscore.compression.nn import count_params


def class_shares(y: np.ndarray) -> list[float]:
    return [round(float(np.mean(y == c)), 3) for c in range(3)]


def per_class_f1(y: np.ndarray, pred: np.ndarray) -> list[float]:
    out = []
    for c in range(3):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        out.append(round(float(2 * tp / denom) if denom else 0.0, 4))
    return out


def measure(fam: MarketFamily, model: torch.nn.Module, data, label: str) -> dict:  # noqa: ANN001
    """Export, check parity, evaluate the ONNX outputs on the test split, time it."""
    head = fam.head(model)
    onnx_bytes = export_onnx(head, data.x_test, fam.input_name, fam.output_name)
    err = check_parity(head, onnx_bytes, data.x_test[:256], 1e-4)
    probs = run_onnx(onnx_bytes, data.x_test, batch=1024)
    metrics = fam.evaluate(probs, data, "test")
    lat = measure_latency(onnx_bytes, data.x_test[0], repeats=300, big=1024, threads=1)
    row = {
        "model": label,
        "params": count_params(model),
        "onnx_bytes": len(onnx_bytes),
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "f1_down_flat_up": per_class_f1(data.y_test, probs.argmax(1)),
        "parity_max_abs": err,
        "p50_ms": round(lat["p50_ms"], 4),
        "p99_ms": round(lat["p99_ms"], 4),
        "throughput_per_s": round(lat["throughput_per_s"]),
    }
    click.echo(json.dumps(row))
    return row


@click.command()
@click.option("--horizons", default="10,20,50", help="comma-separated label horizons k")
@click.option("--teacher-epochs", default=4, show_default=True)
@click.option("--student-epochs", default=10, show_default=True)
@click.option("--widths", default="64,16", help="student widths")
@click.option("--window", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="/tmp/market_bench", type=click.Path(path_type=Path))
def main(
    horizons: str, teacher_epochs: int, student_epochs: int, widths: str, window: int, seed: int,
    out: Path,
) -> None:  # fmt: skip
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for k in [int(h) for h in horizons.split(",")]:
        fam = MarketFamily(window=window, horizon=k)
        t0 = time.perf_counter()
        data = fam.load_data("lobster", seed=seed, quick=True)
        info = {
            "horizon": k,
            "alpha": fam.alpha,
            "windows": [len(data.y_train), len(data.y_val), len(data.y_test)],
            "train_classes": class_shares(data.y_train),
            "test_classes": class_shares(data.y_test),
            "load_s": round(time.perf_counter() - t0, 1),
        }
        click.echo(json.dumps(info))
        t0 = time.perf_counter()
        teacher = fam.train(fam.teacher(data), data, epochs=teacher_epochs, seed=seed)
        info["teacher_train_s"] = round(time.perf_counter() - t0, 1)
        rows = [measure(fam, teacher, data, "teacher (DeepLOB-style)")]
        soft = fam.logits(teacher, data.x_train)
        for w in [int(v) for v in widths.split(",")]:
            t0 = time.perf_counter()
            student = fam.train(fam.student(data, w), data, epochs=student_epochs, seed=seed,
                                soft=soft, temperature=2.0, alpha=0.7, lr=3e-3)  # fmt: skip
            info[f"student{w}_train_s"] = round(time.perf_counter() - t0, 1)
            rows.append(measure(fam, student, data, f"student MLP width {w} (distilled)"))
        t = rows[0]
        for r in rows[1:]:
            r["vs_teacher"] = {
                "macro_f1_points": round(100 * (r["macro_f1"] - t["macro_f1"]), 2),
                "bytes_x_smaller": round(t["onnx_bytes"] / r["onnx_bytes"], 1),
                "p50_x_faster": round(t["p50_ms"] / r["p50_ms"], 1),
            }
        results.append({**info, "models": rows})
        (out / "market_baseline.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| k | α | model | params | ONNX B | acc | macro-F1 | ΔF1 pts | p50 ms | p99 ms | win/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["models"]:
            d = r.get("vs_teacher", {}).get("macro_f1_points", "")
            lines.append(
                f"| {res['horizon']} | {res['alpha']:.2e} | {r['model']} | {r['params']:,} | "
                f"{r['onnx_bytes']:,} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {d} | "
                f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput_per_s']:,} |"
            )
    (out / "market_baseline.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()

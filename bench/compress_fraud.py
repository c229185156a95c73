"""Fraud compression benchmark on the fraud handbook's simulated transactions.

Protocol (the handbook's): train 2018-07-25 → 07-31, one-week label delay, test 2018-08-08 →
08-14 with cards already known as compromised removed; validation (thresholds, architecture
search) is the week before training (2018-07-18 → 07-24) and never sees the test week.

Trains the teacher, runs the compression plan, measures every candidate side by side in one
process (ONNX Runtime CPU, 1 intra-op thread; torch 1 thread) and prints/writes a table with
AUC ROC, AP and CP@100 next to the handbook's published numbers::

    .venv/bin/python bench/compress_fraud.py --data-dir /work/shared/data --out reports/bench-fraud

Exit status 0 even when the gate fails (a benchmark reports what it gets); the JSON written to
``--out`` records ``gate_passed``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import click

# Published on the handbook's test week (as quoted in finscore issue 3).
HANDBOOK_REFERENCE = [
    {"model": "handbook XGBoost (best)", "ap": 0.687, "cp100": 0.303},
    {"model": "handbook feed-forward NN", "ap": 0.675, "cp100": None},
]
TARGETS = {"ap": 0.69, "cp100": 0.30, "ap_vs_teacher": 0.01, "x_smaller": 30, "rows_per_s": 1e6}


def _cuda_latency(onnx_bytes: bytes, row) -> dict | None:  # noqa: ANN001
    """Batch-1/1024 numbers with the CUDA execution provider, when onnxruntime has one."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    import numpy as np

    s = ort.InferenceSession(onnx_bytes, providers=["CUDAExecutionProvider"])
    name = s.get_inputs()[0].name
    one = row[None].astype(np.float32)
    many = np.repeat(one, 1024, 0)
    for _ in range(20):
        s.run(None, {name: one})
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        s.run(None, {name: one})
        times.append(time.perf_counter() - t0)
    t0, runs = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.5:
        s.run(None, {name: many})
        runs += 1
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "throughput_per_s": runs * 1024 / (time.perf_counter() - t0),
    }


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding fraud_handbook_sim/ (default FINSCORE_DATA_DIR).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/bench-fraud"))
@click.option("--plan", "plan_name", type=click.Choice(["default", "quick"]), default="default")
@click.option("--epochs", type=int, default=30, show_default=True, help="Student epochs.")
@click.option("--teacher-epochs", type=int, default=12, show_default=True)
@click.option("--members", type=int, default=3, show_default=True, help="Teacher ensemble size.")
@click.option("--tolerance", type=float, default=0.01, show_default=True, help="AP gate.")
@click.option("--seed", type=int, default=0, show_default=True)
def main(data_dir, out, plan_name, epochs, teacher_epochs, members, tolerance, seed) -> None:  # noqa: ANN001
    """Run the fraud benchmark and write ``report.md``, plots and ``bench.json`` to ``--out``."""
    import torch

    from finscore.compression.cli import fraud_plan
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.fraud import FraudFamily
    from finscore.compression.plan import Gate
    from finscore.compression.report import rows, write_report

    torch.set_num_threads(1)
    t0 = time.time()
    fam = FraudFamily(members=members)
    data = fam.load_data("handbook", data_dir=data_dir)
    t_data = time.time() - t0
    click.echo(
        f"data: train {len(data.x_train):,} ({int(data.y_train.sum())} frauds), val "
        f"{len(data.x_val):,}, test {len(data.x_test):,} ({int(data.y_test.sum())} frauds); "
        f"{t_data:.0f} s"
    )
    plan = fraud_plan(plan_name, epochs, teacher_epochs, seed)
    try:
        result = plan.run(fam, data, Gate(fam.metric, tolerance))
        gate_passed = True
    except GateFailed as exc:
        click.echo(f"gate failed: {exc}")
        result, gate_passed = exc.result, False
    elapsed = time.time() - t0
    table = rows(result)
    for r, c in zip(table, result.candidates, strict=True):
        cuda = _cuda_latency(c.onnx, data.x_test[0])
        if cuda:
            r["cuda"] = cuda
    dep = result.deployed
    teacher = result.teacher
    summary = {
        "deployed": dep.name if dep else None,
        "gate_passed": gate_passed,
        "targets": TARGETS,
        "deployed_vs_targets": None
        if dep is None
        else {
            "ap": dep.metrics["ap"],
            "cp100": dep.metrics["cp100"],
            "ap_minus_teacher": dep.metrics["ap"] - teacher.metrics["ap"],
            "x_smaller": teacher.size_bytes / dep.size_bytes,
            "rows_per_s": dep.latency["throughput_per_s"],
        },
    }
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "seconds": round(elapsed, 1),
        "data_seconds": round(t_data, 1),
    }
    ref = "\n".join(
        f"| {r['model']} | – | {r['ap']} | {r['cp100'] if r['cp100'] is not None else '–'} |"
        for r in HANDBOOK_REFERENCE
    )
    notes = (
        "## Next to the handbook (test week 2018-08-08 → 08-14)\n\n"
        "| model | AUC | AP | CP@100 |\n|---|---|---|---|\n"
        + "\n".join(
            f"| finscore {c.name} | {c.metrics['auc']:.3f} | {c.metrics['ap']:.3f} | "
            f"{c.metrics['cp100']:.3f} |"
            for c in result.candidates
        )
        + "\n"
        + ref
        + f"\n\nLatency: ONNX Runtime {env['onnxruntime']} CPU, 1 intra-op thread "
        f"({env['processor'] or env['machine']}); run took {elapsed:.0f} s.\n\n"
        f"Reproduce: `.venv/bin/python bench/compress_fraud.py {' '.join(sys.argv[1:])}`\n"
    )
    path = write_report(result, out, "fraud compression benchmark (handbook data)", notes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(
        json.dumps({"rows": table, "summary": summary, "env": env}, indent=2, default=str)
    )
    from finscore.compression.cli import print_table

    print_table(result)
    click.echo(notes)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"report: {path}")


if __name__ == "__main__":
    main()

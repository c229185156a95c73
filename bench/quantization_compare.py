"""Post-training int8 vs quantization-aware training vs float16, on both families (issue 19).

One plan per family on simulated data (small: a few minutes on 2 cores): a teacher, a distilled
MLP student, then from that student: static int8 per tensor, static int8 per channel with the
accuracy-aware fallback, float16 with per-operator fallback, and quantization-aware training
(fake int8 during a distillation fine-tune, exported as QDQ). Reports the test metric (fraud:
AP; market: macro-F1), the validation metric, bytes, batch-1 p50 latency (ONNX Runtime CPU, one
thread) and whether the row scores the same in any batch::

    .venv/bin/python bench/quantization_compare.py --out reports/quantization-compare

Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finscore.compression.plan import BATCH_ATOL, Gate, Plan  # noqa: E402
from finscore.compression.steps import (  # noqa: E402
    Distill,
    Float16,
    QuantizationAware,
    QuantizePerChannel,
    QuantizeStatic,
)

LABELS = {
    "teacher": "teacher (fp32)",
    "distill": "student (fp32)",
    "quantize_static": "PTQ int8, per tensor",
    "quantize_per_channel": "PTQ int8, per channel + fallback",
    "float16": "float16 + fallback",
    "qat": "QAT int8 (QDQ)",
}


def _family(name: str, seed: int, size: str):  # noqa: ANN202
    if name == "fraud":
        from finscore.compression.fraud import FraudFamily

        fam = FraudFamily(teacher_hidden=(64, 32))
        n = {"small": 800, "medium": 2000}[size]
        return fam, fam.load_data("sim", n_customers=n, days=60, seed=seed)
    from finscore.compression.market import MarketFamily

    fam = MarketFamily(window=50, horizon=10)
    n, cap = {"small": (20_000, 6000), "medium": (60_000, 20_000)}[size]
    return fam, fam.load_data("sim", n=n, seed=seed, quick=True, max_train=cap)


def compare(family: str, seed: int, size: str, epochs: int, teacher_epochs: int) -> dict:
    t0 = time.perf_counter()
    fam, data = _family(family, seed, size)
    width = 32 if family == "fraud" else 24
    steps = [
        Distill(width, epochs=epochs),
        QuantizeStatic(2048),
        QuantizePerChannel(2048),
        Float16(),
        QuantizationAware(epochs=max(1, epochs // 2)),
    ]
    plan = Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed)
    result = plan.run(fam, data, Gate(fam.metric, 1.0))
    rows = []
    for c in result.candidates:
        rows.append({
            "model": LABELS.get(c.name, c.name),
            "step": c.name,
            "test_" + fam.metric: c.metrics[fam.metric],
            "val_" + fam.metric: c.val_metrics.get(fam.metric),
            "bytes": c.size_bytes,
            "p50_ms": c.latency.get("p50_ms"),
            "rows_per_s": c.latency.get("throughput_per_s"),
            "batch_invariant": c.batch_variance <= BATCH_ATOL,
            "fallback": next((s["params"].get("float_nodes") or s["params"].get("fp32_ops")
                              for s in c.steps if s["step"] in ("quantize_per_channel", "float16")),
                             None),
        })  # fmt: skip
    return {"family": family, "metric": fam.metric, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "train_rows": int(len(data.x_train)), "test_rows": int(len(data.x_test))}  # fmt: skip


def markdown(reports: list[dict], command: str) -> str:
    out = [f"Command: `{command}`", ""]
    for rep in reports:
        m = rep["metric"]
        out += [f"**{rep['family']}** (simulated; {rep['train_rows']:,} training rows, "
                f"{rep['test_rows']:,} test rows; {rep['seconds']} s)", "",
                f"| model | test {m} | val {m} | bytes | batch-1 p50 ms | batch invariant | "
                "kept float |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rep["rows"]:
            fb = r["fallback"]
            out.append(
                f"| {r['model']} | {r['test_' + m]:.4f} | {r['val_' + m]:.4f} | {r['bytes']:,} | "
                f"{r['p50_ms']:.4f} | {'yes' if r['batch_invariant'] else 'no'} | "
                f"{', '.join(fb) if fb else '-'} |"
            )
        out.append("")
    return "\n".join(out)


@click.command()
@click.option("--family", "families", multiple=True, default=("fraud", "market"))
@click.option("--size", type=click.Choice(["small", "medium"]), default="small")
@click.option("--epochs", default=4, show_default=True, help="Student distillation epochs.")
@click.option("--teacher-epochs", default=6, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("reports/quantization-compare")
)
def main(
    families: tuple[str, ...], size: str, epochs: int, teacher_epochs: int, seed: int, out: Path
) -> None:
    """Compare post-training int8, per-channel int8 with fallback, float16 and QAT."""
    torch.set_num_threads(1)
    reports = [compare(f, seed, size, epochs, teacher_epochs) for f in families]
    command = "python bench/quantization_compare.py " + " ".join(sys.argv[1:])
    text = markdown(reports, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": platform.machine(), "reports": reports}, indent=1))  # fmt: skip
    click.echo(text)


if __name__ == "__main__":
    main()

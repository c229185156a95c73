"""Every registered artifact on every execution provider: batch-1 latency and batched throughput.

For each model version in a registry (teachers and students; fp32, fp16, int8 as published, and
with ``--fp16`` a float16 conversion of every fp32 one), on each requested provider (default
``CPU,CUDA,TensorRT``): batch-1 p50/p99 latency over ``--repeats`` runs after warm-up, and
rows/s at each ``--batches`` size (at least ``--seconds`` of runs each). Writes a markdown
table to ``--out`` and, with ``--docs``, between the ``<!-- gpu-providers:start -->`` and
``<!-- gpu-providers:end -->`` markers of that file (appended as a section when absent).

A provider this onnxruntime build lacks, or one that does not start (no device, no driver), is
reported as unavailable in the table's note and skipped; the CPU column always runs. So on a
machine without a GPU the script still runs and says clearly that CUDA/TensorRT are missing::

    .venv/bin/python bench/gpu_providers.py var/registry --fp16 --out reports/gpu-providers.md \\
        --docs docs/BENCHMARKS.md

On a GPU machine install the GPU build first (``pip install 'finscore[gpu]'``, which replaces
``onnxruntime`` by ``onnxruntime-gpu``; TensorRT also needs the TensorRT libraries).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finscore.models.registry import Registry  # noqa: E402
from finscore.providers import CPU, available, parse, short  # noqa: E402

START, END = "<!-- gpu-providers:start -->", "<!-- gpu-providers:end -->"


@dataclass
class Row:
    model: str
    version: str
    precision: str
    bytes: int
    provider: str
    p50_ms: float
    p99_ms: float
    rows_per_s: dict[int, float] = field(default_factory=dict)


def precision_of(model: bytes) -> str:
    """int8 (QDQ or integer ops), fp16 (float16 weights) or fp32, from the graph."""
    g = onnx.load_from_string(model).graph
    ops = {n.op_type for n in g.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "MatMulInteger",
              "DynamicQuantizeLinear", "QGemm"}:  # fmt: skip
        return "int8"
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in g.initializer):
        return "fp16"
    return "fp32"


def _provider_options(provider: str, cache: str) -> list:
    if provider == CPU:
        return []  # CPU is appended as the fallback anyway
    if provider == "TensorrtExecutionProvider":
        return [(provider, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                            "trt_fp16_enable": True})]  # fmt: skip
    return [provider]


def session_on(model: bytes, provider: str, cache: str) -> ort.InferenceSession | None:
    """A session whose first provider is ``provider`` (CPU as fallback for unsupported nodes);
    None when ``provider`` does not start."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        s = ort.InferenceSession(model, sess_options=so,
                                 providers=[*_provider_options(provider, cache), CPU])  # fmt: skip
    except Exception:  # noqa: BLE001 - a provider that cannot start: reported as unavailable
        return None
    return s if s.get_providers()[0] == provider else None


def measure(
    s: ort.InferenceSession, row: np.ndarray, batches: list[int], repeats: int, seconds: float
) -> tuple[float, float, dict[int, float]]:
    """(batch-1 p50 ms, p99 ms, {batch: rows/s})."""
    name = s.get_inputs()[0].name
    one = row[None].astype(np.float32)
    for _ in range(20):
        s.run(None, {name: one})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, {name: one})
        times.append(time.perf_counter() - t0)
    rates = {}
    for b in batches:
        many = np.ascontiguousarray(np.repeat(one, b, axis=0))
        for _ in range(3):  # warm-up: TensorRT builds an engine per new shape
            s.run(None, {name: many})
        runs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or runs < 3:
            s.run(None, {name: many})
            runs += 1
        rates[b] = runs * b / (time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), rates


def models(
    registry: Path, names: list[str] | None, fp16: bool
) -> list[tuple[str, str, bytes, np.ndarray]]:
    """(name, version, ONNX bytes, one input row) of every version (and fp16 conversions)."""
    reg = Registry(registry)
    out = []
    for name in names or reg.names():
        for m in reg.list(name):
            art = reg.get(name, m.version)
            row = np.asarray(art.manifest.reference_inputs, np.float32)[0]
            out.append((name, m.version, art.onnx, row))
            if fp16 and precision_of(art.onnx) == "fp32":
                try:
                    from finscore.compression.quantize import float16_bytes
                except ImportError:  # the compress extra is not installed
                    continue
                out.append((name, f"{m.version}+fp16", float16_bytes(art.onnx), row))
    return out


def run(
    registry: Path, providers: tuple[str, ...], batches: list[int], repeats: int, seconds: float,
    names: list[str] | None = None, fp16: bool = False,
) -> tuple[list[Row], dict[str, str]]:  # fmt: skip
    """Every model on every provider that starts; ({provider: why not} for the others)."""
    have = set(available())
    skipped: dict[str, str] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as cache:
        for name, version, model, row in models(registry, names, fp16):
            for p in providers:
                if p in skipped:
                    continue
                if p not in have:
                    skipped[p] = "not in this onnxruntime build (install finscore[gpu])"
                    continue
                s = session_on(model, p, cache)
                if s is None:
                    if p == CPU:
                        raise RuntimeError(f"{name} v{version} does not load on the CPU")
                    skipped[p] = "in this build but did not start (no device or driver)"
                    continue
                p50, p99, rates = measure(s, row, batches, repeats, seconds)
                rows.append(Row(name, version, precision_of(model), len(model), short(p),
                                p50, p99, rates))  # fmt: skip
    return rows, skipped


def markdown(rows: list[Row], skipped: dict[str, str], batches: list[int], command: str) -> str:
    env = (f"{platform.machine()}, onnxruntime {ort.__version__}, providers in this build: "
           f"{', '.join(short(p) for p in available())}")  # fmt: skip
    lines = [f"Command: `{command}`", "", f"Machine: {env}.", ""]
    for p, why in skipped.items():
        lines.append(f"- **{short(p)} unavailable**: {why}; its column was not measured.")
    if skipped:
        lines.append("")
    head = ["model", "version", "precision", "bytes", "provider", "batch-1 p50 ms",
            "batch-1 p99 ms", *[f"rows/s @ {b}" for b in batches]]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r.model, r.version, r.precision, f"{r.bytes:,}", r.provider, f"{r.p50_ms:.3f}",
                 f"{r.p99_ms:.3f}", *[f"{r.rows_per_s[b]:,.0f}" for b in batches]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_docs(path: Path, table: str) -> None:
    """Put ``table`` between the markers of ``path`` (a new section at the end without them)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{table}{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## GPU execution providers (issue 19)\n\n" + block + "\n"
    path.write_text(text)


@click.command()
@click.argument("registry", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--providers", default="CPU,CUDA,TensorRT", show_default=True)
@click.option("--batches", default="64,1024,8192", show_default=True, help="Batched sizes.")
@click.option("--repeats", default=300, show_default=True, help="Batch-1 runs.")
@click.option("--seconds", default=0.5, show_default=True, help="Per batched measurement.")
@click.option("--name", "names", multiple=True, help="Only these models (default: all).")
@click.option("--fp16", is_flag=True, help="Also a float16 conversion of every fp32 version.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/gpu-providers.md"))
@click.option("--docs", type=click.Path(path_type=Path), default=None,
              help="Also write the table between the markers of this file.")  # fmt: skip
def main(
    registry: Path, providers: str, batches: str, repeats: int, seconds: float,
    names: tuple[str, ...], fp16: bool, out: Path, docs: Path | None,
) -> None:  # fmt: skip
    """Measure REGISTRY's artifacts on CPU / CUDA / TensorRT."""
    order = parse(providers)
    sizes = [int(b) for b in batches.split(",") if b.strip()]
    rows, skipped = run(registry, order, sizes, repeats, seconds, list(names) or None, fp16)
    for p, why in skipped.items():
        click.echo(f"{short(p)} unavailable: {why}", err=True)
    command = "python bench/gpu_providers.py " + " ".join(sys.argv[1:])
    table = markdown(rows, skipped, sizes, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    out.with_suffix(".json").write_text(json.dumps(
        {"rows": [r.__dict__ for r in rows], "unavailable": skipped}, indent=1))  # fmt: skip
    if docs is not None:
        write_docs(docs, table)
    click.echo(table)


if __name__ == "__main__":
    main()

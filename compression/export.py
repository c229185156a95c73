"""ONNX export with a dynamic batch axis, parity checks and CPU latency measurement."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from finscore.compression.exceptions import ExportError, ParityError
from finscore.providers import create_session

OPSET = 17


def export_onnx(model: nn.Module, example: np.ndarray, input_name: str, output_name: str) -> bytes:
    """Export ``model`` (already wrapped with its output head) with a dynamic batch axis."""
    from finscore.compression.nn import SharedLinear

    model.eval()
    # Weight-shared layers must stay uint8 index + codebook in the file: constant folding would
    # materialise them (as int64 indices or dense floats). ONNX Runtime folds them at load time.
    shared = any(isinstance(m, SharedLinear) for m in model.modules())
    buf = io.BytesIO()
    x = torch.as_tensor(example[:2], dtype=torch.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                buf,  # type: ignore[arg-type]  # a file-like object is documented and works
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=not shared,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export failed: {exc}") from exc
    from finscore.compression.qat import fold_weight_quantizers

    # quantization-aware models: fake-quantised weights become int8 initializers
    return compact_onnx(fold_weight_quantizers(buf.getvalue()))


def compact_onnx(model: bytes) -> bytes:
    """The same graph with short tensor names and no node names or doc strings.

    Exporters name every node and intermediate tensor after its module path
    (``/model/body/body.0/Gemm_output_0``): for a student of a few hundred weights that text is
    most of the file. Graph inputs and outputs keep their contract names; graphs with
    subgraph attributes (If/Loop) are left as they are.
    """
    proto = onnx.load_from_string(model)
    proto.producer_name = "finscore"
    proto.doc_string = ""
    g = proto.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in g.node for a in n.attribute):  # fmt: skip
        return proto.SerializeToString()
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"t{len(names):x}"
        return names[name]

    for init in g.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for vi in g.value_info:
        vi.name = short(vi.name)
    g.doc_string = ""
    return proto.SerializeToString()


def session(
    model: bytes, threads: int = 1, providers: Sequence[str] | None = None
) -> ort.InferenceSession:
    """A session with ``threads`` intra-op threads on ``providers`` (None: the process default,
    ``FINSCORE_EXECUTION_PROVIDERS``; see :mod:`finscore.providers`, unavailable ones dropped
    with one warning)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return create_session(model, so, providers)


def run_onnx(
    model: bytes, x: np.ndarray, batch: int = 8192, providers: Sequence[str] | None = None
) -> np.ndarray:
    """The first output of ``model`` on ``x``, scored ``batch`` rows at a time."""
    s = session(model, providers=providers)
    name = s.get_inputs()[0].name
    outs = [
        s.run(None, {name: x[i : i + batch].astype(np.float32)})[0] for i in range(0, len(x), batch)
    ]
    return np.concatenate(outs) if outs else np.zeros((0,))


def batch_variance(model: bytes, x: np.ndarray, rows: int = 32) -> float:
    """Max |output of a row scored alone − the same row scored in a batch of ``len(x)``|.

    A streaming worker scores whatever a poll brings, so an output must not depend on its
    batch: fp32 networks differ by float rounding only (~1e-7); dynamic int8 quantises each
    batch's activations with the batch's own range, so its outputs move with the batch.
    """
    full = run_onnx(model, x)
    alone = np.concatenate([run_onnx(model, x[i : i + 1]) for i in range(min(rows, len(x)))])
    return float(np.max(np.abs(alone - full[: len(alone)]))) if len(alone) else 0.0


@torch.no_grad()
def check_parity(torch_model: nn.Module, onnx_bytes: bytes, x: np.ndarray, atol: float) -> float:
    """Max |torch − onnxruntime| on ``x``; raises ParityError above ``atol``."""
    torch_model.eval()
    want = torch_model(torch.as_tensor(x, dtype=torch.float32)).numpy()
    got = run_onnx(onnx_bytes, x)
    err = float(np.max(np.abs(want - got))) if len(x) else 0.0
    if err > atol:
        raise ParityError(f"ONNX output differs from torch by {err:.2e} (tolerance {atol:.0e})")
    return err


def measure_latency(
    model: bytes,
    example_row: np.ndarray,
    *,
    repeats: int = 300,
    big: int = 1024,
    threads: int = 1,
    providers: Sequence[str] | None = None,
) -> dict:
    """Batch-1 p50/p99 (ms) over ``repeats`` runs after 20 warm-ups, and batch-``big``
    throughput (rows/s, at least 0.5 s of runs), ONNX Runtime with ``threads`` intra-op
    threads (1: per-core numbers) on ``providers`` (None: the configured default, CPU unless
    ``FINSCORE_EXECUTION_PROVIDERS`` says otherwise)."""
    s = session(model, threads=threads, providers=providers)
    name = s.get_inputs()[0].name
    one = example_row[None, ...].astype(np.float32)
    for _ in range(20):
        s.run(None, {name: one})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s.run(None, {name: one})
        times.append(time.perf_counter() - t0)
    many = np.repeat(one, big, axis=0)
    s.run(None, {name: many})
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5 or runs < 3:
        s.run(None, {name: many})
        runs += 1
    elapsed = time.perf_counter() - t0
    return {
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "throughput_per_s": float(runs * big / elapsed),
    }

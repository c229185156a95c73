"""float16 and per-channel int8 with accuracy-aware per-operator fallback (issue 19)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from finscore.compression.export import export_onnx, run_onnx
from finscore.compression.quantize import greedy_fallback
from finscore.compression.steps import Distill, Float16, QuantizePerChannel, StepContext

_students: dict[str, object] = {}


def _student_onnx(ctx: StepContext) -> bytes:
    fam = ctx.family
    if fam.name not in _students:
        _students[fam.name] = Distill(16, epochs=1).apply(ctx.teacher, ctx)
    return export_onnx(
        fam.head(_students[fam.name]),
        ctx.data.x_test,
        fam.input_name,
        "score" if fam.name == "fraud" else "probs",
    )


def _init_types(model: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for init in onnx.load_from_string(model).graph.initializer:
        out[init.data_type] = out.get(init.data_type, 0) + int(np.prod(init.dims or [1]))
    return out


def test_greedy_fallback_keeps_float_the_operator_that_recovers_most() -> None:
    # metric = 1 - sum of the damage done by the operators still quantised
    damage = {"a": 0.01, "b": 0.2, "c": 0.05}

    def build(kept: tuple[str, ...]) -> bytes:
        return ",".join(sorted(kept)).encode()

    def measure(model: bytes) -> tuple[float, float]:
        kept = set(filter(None, model.decode().split(",")))
        return 1 - sum(v for k, v in damage.items() if k not in kept), 0.0

    best, trials = greedy_fallback(build, list(damage), measure, lambda m, _d: m >= 0.9, 3)
    assert best.kept_float == ("b",) and abs(best.metric - 0.94) < 1e-9
    assert len(trials) == 1 + 3  # the all-quantised model, then one round of three
    best, _ = greedy_fallback(build, list(damage), measure, lambda m, _d: m >= 0.99, 3)
    assert best.kept_float == ("b", "c")
    best, _ = greedy_fallback(build, list(damage), measure, lambda m, _d: False, 1)
    assert len(best.kept_float) == 1  # capped at max_fallbacks, returned for the gate to judge


def test_float16_halves_the_weights_and_keeps_raw_inputs_in_float32(fraud_ctx) -> None:  # noqa: ANN001
    src = _student_onnx(fraud_ctx)
    step = Float16()
    half = step.apply(src, fraud_ctx)
    types = _init_types(half)
    assert types.get(onnx.TensorProto.FLOAT16, 0) > 0
    weights_fp32 = _init_types(src)[onnx.TensorProto.FLOAT]
    assert types.get(onnx.TensorProto.FLOAT, 0) < weights_fp32 / 4  # only the standardisation
    assert len(half) < 0.75 * len(src)
    g = onnx.load_from_string(half).graph
    first = [n for n in g.node if g.input[0].name in n.input]
    assert {n.op_type for n in first} == {"Sub"}  # raw inputs are standardised in float32
    x = fraud_ctx.data.x_test[:256]
    assert np.max(np.abs(run_onnx(half, x) - run_onnx(src, x))) < 0.01
    assert step.fp32_ops == []  # within tolerance: nothing had to fall back


def test_float16_falls_back_per_operator_when_the_gate_demands_it(fraud_ctx) -> None:  # noqa: ANN001
    src = _student_onnx(fraud_ctx)
    step = Float16(tolerance=-1.0, max_fallbacks=1)  # never acceptable: one fallback, then stop
    kept = step.apply(src, fraud_ctx)
    assert len(step.fp32_ops) == 1
    assert step.describe()["params"]["fp32_ops"] == step.fp32_ops  # recorded in the manifest

    # the op type kept really runs in float32: every input of its nodes is float32 (in the
    # fully converted model the same nodes read float16)
    def input_types(model: bytes, op_type: str) -> set[int]:
        g = onnx.shape_inference.infer_shapes(onnx.load_from_string(model)).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input]}
        types |= {i.name: i.data_type for i in g.initializer}
        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
        return {
            types[x] for n in g.node if n.op_type == op_type for x in n.input
            if types.get(x) in floats
        }  # fmt: skip

    [op] = step.fp32_ops
    assert input_types(kept, op) == {onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.FLOAT16 in input_types(Float16().apply(src, fraud_ctx), op)


def test_per_channel_int8_has_one_scale_per_output_channel(fraud_ctx) -> None:  # noqa: ANN001
    src = _student_onnx(fraud_ctx)
    q = QuantizePerChannel(256, tolerance=1.0, atol=1.0).apply(src, fraud_ctx)  # no fallback
    g = onnx.load_from_string(q).graph
    inits = {i.name: i for i in g.initializer}
    per_channel = [
        n
        for n in g.node
        if n.op_type == "DequantizeLinear"
        and n.input[1] in inits
        and numpy_helper.to_array(inits[n.input[1]]).size > 1
    ]
    assert per_channel, "no per-channel weight scales"
    assert any(i.data_type == onnx.TensorProto.INT8 for i in g.initializer)


def test_per_channel_fallback_leaves_the_chosen_nodes_float(fraud_ctx) -> None:  # noqa: ANN001
    src = _student_onnx(fraud_ctx)
    full = QuantizePerChannel(256, tolerance=1.0, atol=1.0).apply(src, fraud_ctx)
    step = QuantizePerChannel(256, tolerance=-1.0, atol=1.0, max_fallbacks=1)
    partial = step.apply(src, fraud_ctx)
    assert len(step.float_nodes) == 1 and step.float_nodes[0].startswith("Gemm_")

    def dq(model: bytes) -> int:
        return sum(n.op_type == "DequantizeLinear" for n in onnx.load_from_string(model).graph.node)

    assert dq(partial) < dq(full)

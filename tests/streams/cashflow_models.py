"""A tiny cash-flow ONNX model (onnx.helper, no torch) and its artifact, for stream tests:
``quantiles[n, h, q] = m_q · mean(x[n, :lookback]) + 0.01 · h`` with ``m = (0.8, 1.0, 1.2)``,
so each day's quantiles are ordered whenever the scaled takings are non-negative."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from finscore.features.cashflow import HORIZON, LOOKBACK, QUANTILES, cashflow_feature_names
from finscore.models.registry import Artifact, Manifest

MULTIPLIERS = (0.8, 1.0, 1.2)


def cashflow_onnx(lookback: int = LOOKBACK, horizon: int = HORIZON) -> bytes:
    """features [N, lookback + 8] → quantiles [N, horizon, 3] (see the module docstring)."""
    q = len(MULTIPLIERS)
    w = np.zeros((lookback + 8, horizon * q), dtype=np.float32)
    for h in range(horizon):
        for k, m in enumerate(MULTIPLIERS):
            w[:lookback, h * q + k] = m / lookback
    b = np.array([0.01 * h for h in range(horizon) for _ in range(q)], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Reshape", ["z", "shape"], ["quantiles"]),
        ],
        "cashflow_linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", lookback + 8])],
        [helper.make_tensor_value_info("quantiles", TensorProto.FLOAT, ["N", horizon, q])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([-1, horizon, q], dtype=np.int64), "shape"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def expected_outputs(x: np.ndarray, lookback: int = LOOKBACK, horizon: int = HORIZON) -> np.ndarray:
    """What :func:`cashflow_onnx` computes, in numpy (float64)."""
    mean = np.asarray(x, dtype=np.float64)[:, :lookback].mean(1)
    return np.stack(
        [[m * mean + 0.01 * h for m in MULTIPLIERS] for h in range(horizon)], 0
    ).transpose(2, 0, 1)


def cashflow_artifact(version: str = "1") -> Artifact:
    """An unsigned Artifact of :func:`cashflow_onnx` with reference I/O and the family's params."""
    model = cashflow_onnx()
    ref_in = np.random.default_rng(1).uniform(0, 2, (3, LOOKBACK + 8)).astype(np.float32)
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ref_out = s.run(None, {"features": ref_in})[0]
    manifest = Manifest(
        name="cashflow", version=version, family="cashflow",
        sha256=hashlib.sha256(model).hexdigest(), size_bytes=len(model),
        input_name="features", output_name="quantiles", input_shape=[None, LOOKBACK + 8],
        feature_names=cashflow_feature_names(),
        params={"lookback_days": LOOKBACK, "horizon_days": HORIZON,
                "quantiles": list(QUANTILES), "min_scale": 1.0},
        parent_sha256=None, teacher_sha256=None,
        steps=[{"step": "test-model", "params": {}}], data_fingerprint="none", metrics={},
        latency={}, reference_inputs=ref_in.tolist(), reference_outputs=ref_out.tolist(),
        created_at=datetime.now(UTC).isoformat(),
    )  # fmt: skip
    return Artifact(manifest, model)

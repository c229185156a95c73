"""Tiny, valid ONNX models built with onnx.helper (no torch): the pipeline must not care which
model it runs, so streaming tests use these until (and beside) compressed ones."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from finscore.features.fraud import FRAUD_FEATURE_NAMES
from finscore.models.registry import Artifact, Manifest, generate_keypair

# One Ed25519 key pair for the whole test session: workers refuse unsigned models by default, so
# the stream kit signs every announcement with TEST_SIGNING_KEY and workers verify with
# TEST_VERIFY_KEY unless a test says otherwise.
TEST_SIGNING_KEY, TEST_VERIFY_KEY = generate_keypair()


def signed(a: Artifact) -> Artifact:
    """``a`` signed with the session's test key."""
    return a.sign(TEST_SIGNING_KEY)


def _session_out(model: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0])


def fraud_onnx(seed: int = 0, bias: float = -2.0, f: int = len(FRAUD_FEATURE_NAMES)) -> bytes:
    """Logistic regression over ``f`` fraud features: features [N,F] → score [N]."""
    w = np.random.default_rng(seed).normal(0, 0.05, size=(f, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["p"]),
            helper.make_node("Reshape", ["p", "shape"], ["score"]),
        ],
        "fraud_lr",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([bias], dtype=np.float32), "b"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def market_onnx(seed: int = 0, window: int = 100) -> bytes:
    """Mean over the window then softmax(linear): book [N,T,40] → probs [N,3]."""
    w = np.random.default_rng(seed).normal(0, 0.1, size=(40, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["book"], ["m"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], ["probs"], axis=-1),
        ],
        "market_lin",
        [helper.make_tensor_value_info("book", TensorProto.FLOAT, ["N", window, 40])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.zeros(3, dtype=np.float32), "b"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def artifact(
    family: str,
    version: str = "1",
    seed: int = 0,
    window: int = 100,
    feature_names: list[str] | None = None,
) -> Artifact:
    """An unsigned registry Artifact around one of the tiny models, with reference I/O; a fraud
    model reads ``feature_names`` (default: every feature, in order)."""
    if family == "fraud":
        names = list(FRAUD_FEATURE_NAMES) if feature_names is None else list(feature_names)
        model = fraud_onnx(seed, f=len(names))
        ref_in = np.random.default_rng(seed + 1).normal(size=(4, len(names)))
        shape, params = [None, len(names)], {}
        io = ("features", "score")
    else:
        model = market_onnx(seed, window)
        ref_in = np.random.default_rng(seed + 1).normal(size=(2, window, 40))
        names, shape, params = [], [None, window, 40], {"window": window, "horizon": 10}
        io = ("book", "probs")
    ref_in = ref_in.astype(np.float32)
    manifest = Manifest(
        name=family,
        version=version,
        family=family,
        sha256=hashlib.sha256(model).hexdigest(),
        size_bytes=len(model),
        input_name=io[0],
        output_name=io[1],
        input_shape=shape,
        feature_names=names,
        params=params,
        parent_sha256=None,
        teacher_sha256=None,
        steps=[{"step": "test-model", "params": {"seed": seed}}],
        data_fingerprint="none",
        metrics={},
        latency={},
        reference_inputs=ref_in.tolist(),
        reference_outputs=_session_out(model, ref_in).tolist(),
        created_at=datetime.now(UTC).isoformat(),
        threshold=0.5 if family == "fraud" else None,
    )
    return Artifact(manifest=manifest, onnx=model, signature=None)

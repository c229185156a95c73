"""Post-training int8 quantisation with ONNX Runtime, on ONNX bytes (temp files inside)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from finscore.compression.export import compact_onnx


class _Rows(CalibrationDataReader):
    """Feeds calibration rows one small batch at a time."""

    def __init__(self, name: str, rows: np.ndarray, batch: int = 64) -> None:
        self._batches = iter(
            [{name: rows[i : i + batch].astype(np.float32)} for i in range(0, len(rows), batch)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _input_name(model: bytes) -> str:
    return onnx.load_from_string(model).graph.input[0].name


def _preprocess(src: Path, dst: Path) -> Path:
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
        return src


class _Quiet:
    """Silence the quantiser's per-tensor INFO chatter (it logs through the root logger)."""

    def __enter__(self) -> None:
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().setLevel(self.level)


def quantize_dynamic_bytes(model: bytes) -> bytes:
    """Dynamic quantisation: int8 weights, activations quantised on the fly."""
    with tempfile.TemporaryDirectory() as d, _Quiet():
        src, pre, dst = Path(d, "in.onnx"), Path(d, "pre.onnx"), Path(d, "out.onnx")
        src.write_bytes(model)
        quantize_dynamic(str(_preprocess(src, pre)), str(dst), weight_type=QuantType.QInt8)
        return compact_onnx(dst.read_bytes())


def _static_ops() -> list[str]:
    """Every op ONNX Runtime can quantise except the output heads: a QDQ pair after the final
    Sigmoid/Softmax would round probabilities to 1/255 steps (and break "rows sum to 1")."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Sigmoid", "Softmax"})


_STATIC_OPS = _static_ops()


def _named(model: bytes) -> onnx.ModelProto:
    """``model`` with every node named ``<op>_<index>`` (what fallback lists refer to)."""
    proto = onnx.load_from_string(model)
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type}_{i}"
    return proto


def prepare_static(model: bytes) -> bytes:
    """The quantiser's pre-processing (shape inference, graph optimisation), nodes named
    ``<op>_<index>``: the graph :func:`quantize_static_bytes` quantises, whose node names
    :func:`quantizable_nodes` lists and ``exclude`` takes."""
    with tempfile.TemporaryDirectory() as d, _Quiet():
        src, pre = Path(d, "in.onnx"), Path(d, "pre.onnx")
        src.write_bytes(model)
        return _named(_preprocess(src, pre).read_bytes()).SerializeToString()


def quantizable_nodes(prepared: bytes) -> list[str]:
    """Names of the nodes of a :func:`prepare_static` graph that static quantisation touches
    (weights first: Gemm/MatMul/Conv/LSTM... then the rest), in graph order."""
    heavy = {"Gemm", "MatMul", "Conv", "ConvTranspose", "LSTM", "GRU", "Attention"}
    nodes = [n for n in onnx.load_from_string(prepared).graph.node if n.op_type in _STATIC_OPS]
    return [n.name for n in nodes if n.op_type in heavy] + [
        n.name for n in nodes if n.op_type not in heavy
    ]


def quantize_static_bytes(
    model: bytes,
    calibration: np.ndarray,
    per_channel: bool = False,
    exclude: Sequence[str] = (),
    *,
    prepared: bool = False,
) -> bytes:
    """Static QDQ quantisation (int8 activations and weights; weights per output channel with
    ``per_channel``), calibrated on ``calibration`` (rows fed in batches of 64); the output head
    stays float, and so do the nodes named in ``exclude`` (names of the :func:`prepare_static`
    graph; pass that graph with ``prepared=True``). Scales are fixed at calibration, so a row
    scores the same alone and in any batch."""
    src_bytes = model if prepared else prepare_static(model)
    with tempfile.TemporaryDirectory() as d, _Quiet():
        src, dst = Path(d, "pre.onnx"), Path(d, "out.onnx")
        src.write_bytes(src_bytes)
        quantize_static(
            str(src),
            str(dst),
            _Rows(_input_name(model), calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=_STATIC_OPS,
            nodes_to_exclude=list(exclude),
        )
        return compact_onnx(dst.read_bytes())


# -- float16 ------------------------------------------------------------------------------------
HEAVY_OPS = frozenset({"Gemm", "MatMul", "Conv", "ConvTranspose", "LSTM", "GRU", "Attention"})
#: Kept float32 by default: the output heads (probabilities near 0 lose their resolution in
#: float16) besides the converter's own list (ops without float16 kernels, ML ops).
FP16_KEEP_OPS = ("Sigmoid", "Softmax")


def float16_input_prefix(model: bytes) -> list[str]:
    """Names (``<op>_<index>``) of the nodes before the first heavy op (Gemm/MatMul/Conv/LSTM):
    the standardisation and window summaries that read raw inputs. They stay float32: raw
    amounts and LOB prices exceed float16's range (65,504) and would become inf."""
    out = []
    for node in _named(model).graph.node:
        if node.op_type in HEAVY_OPS:
            break
        out.append(node.name)
    return out


def float16_op_types(model: bytes) -> list[str]:
    """Op types of ``model`` that :func:`float16_bytes` converts by default (fallback
    candidates), heavy ops first."""
    prefix = set(float16_input_prefix(model))
    ops: list[str] = []
    for node in _named(model).graph.node:
        skip = node.name in prefix or node.op_type in (*FP16_KEEP_OPS, "Constant", *ops)
        if not skip:
            ops.append(node.op_type)
    return sorted(ops, key=lambda op: op not in HEAVY_OPS)


def float16_bytes(model: bytes, keep_ops: Sequence[str] = ()) -> bytes:
    """``model`` with weights and activations in float16 (inputs and outputs stay float32, so
    the contract does not change), except the input prefix (:func:`float16_input_prefix`), the
    output head (:data:`FP16_KEEP_OPS`) and every node whose op type is in ``keep_ops`` (the
    accuracy fallback): those run in float32 with casts around them. Needs
    ``onnxconverter-common`` (in ``finscore[compress]``)."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:  # pragma: no cover - part of the compress extra
        from finscore.compression.exceptions import CompressionError

        raise CompressionError(
            "float16 conversion needs onnxconverter-common", hint="pip install 'finscore[compress]'"
        ) from exc
    proto = _named(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the value was truncated/clamped" notes
        converted = float16.convert_float_to_float16(
            proto,
            keep_io_types=True,
            disable_shape_infer=False,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_OPS, *keep_ops],
            node_block_list=float16_input_prefix(model),
        )
    del converted.graph.value_info[:]  # shape annotations of the conversion: not needed to run
    return compact_onnx(converted.SerializeToString())


# -- accuracy-aware fallback ---------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One candidate of an accuracy-aware search: what stayed float, its metric and error."""

    kept_float: tuple[str, ...]
    metric: float
    max_abs_diff: float
    model: bytes


def greedy_fallback(
    build: Callable[[tuple[str, ...]], bytes],
    candidates: Sequence[str],
    measure: Callable[[bytes], tuple[float, float]],
    acceptable: Callable[[float, float], bool],
    max_fallbacks: int,
) -> tuple[Trial, list[Trial]]:
    """Accuracy-aware per-operator fallback, greedy, one at a time.

    ``build(kept_float)`` makes the reduced-precision model with the named operators (nodes or
    op types) left in float32; ``measure(model)`` returns (validation metric, max |output −
    float32 output|); ``acceptable(metric, diff)`` says whether it is good enough. Start with
    nothing kept float; while not acceptable, try keeping each remaining candidate float as
    well and keep the one that recovers most (best metric, then smallest error); stop when
    acceptable, after ``max_fallbacks`` operators, or when none is left. Returns the final trial
    (acceptable or not: the plan's gate judges) and every trial measured, in order."""
    kept: tuple[str, ...] = ()
    model = build(kept)
    best = Trial(kept, *measure(model), model)
    trials = [best]
    while not acceptable(best.metric, best.max_abs_diff) and len(kept) < max_fallbacks:
        options = []
        for c in candidates:
            if c in kept:
                continue
            m = build((*kept, c))
            options.append(Trial((*kept, c), *measure(m), m))
        if not options:
            break
        trials += options
        best = max(options, key=lambda t: (t.metric, -t.max_abs_diff))
        kept = best.kept_float
    return best, trials

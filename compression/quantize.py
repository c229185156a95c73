"""Post-training int8 quantisation with ONNX Runtime, on ONNX bytes (temp files inside)."""

from __future__ import annotations

import logging
import tempfile
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


def quantize_static_bytes(
    model: bytes, calibration: np.ndarray, per_channel: bool = False
) -> bytes:
    """Static QDQ quantisation (int8 activations and weights), calibrated on ``calibration``
    (rows fed in batches of 64); the output head stays float."""
    with tempfile.TemporaryDirectory() as d, _Quiet():
        src, pre, dst = Path(d, "in.onnx"), Path(d, "pre.onnx"), Path(d, "out.onnx")
        src.write_bytes(model)
        quantize_static(
            str(_preprocess(src, pre)),
            str(dst),
            _Rows(_input_name(model), calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=_STATIC_OPS,
        )
        return compact_onnx(dst.read_bytes())

"""Quantization-aware training: fake int8 quantisation in the forward pass, straight-through
gradients, exported as QDQ ONNX (QuantizeLinear/DequantizeLinear pairs, int8 weights).

:class:`ActQuant` fake-quantises activations per tensor (asymmetric int8) with a range observed
during training (exponential moving average of each batch's min/max) and frozen for inference;
:class:`QATLinear` fake-quantises its weights per output channel (symmetric int8, scale =
max|w| / 127). Both use torch's ``fake_quantize_*`` ops, whose gradient is the
straight-through estimator (identity inside the range) and which the ONNX exporter writes as
QuantizeLinear → DequantizeLinear; :func:`fold_weight_quantizers` then stores each quantised
weight as an int8 initializer (a quarter of the float32 bytes), as post-training static
quantisation does. ONNX Runtime runs the result on any provider (CPU: fused int8 kernels).
Inference scales are constants, so outputs never depend on the batch.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F  # noqa: N812

from finscore.compression.nn import MLP

__all__ = ["ActQuant", "QATLinear", "fold_weight_quantizers", "freeze", "prepare_qat"]

QMIN, QMAX = -128, 127
#: torch emulation vs ONNX Runtime's fused int8 kernels (ties rounded differently).
QAT_PARITY_ATOL = 0.01


class ActQuant(nn.Module):
    """Per-tensor asymmetric int8 fake quantisation of activations.

    Training: the range [lo, hi] follows each batch's min/max (EMA with ``momentum``; the first
    batch sets it; 0 is always inside, so ReLU outputs' zero is exact) and the scale/zero point
    buffers follow the range. Eval/export: the buffers are used as they are (constants)."""

    lo: torch.Tensor
    hi: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    seen: torch.Tensor

    def __init__(self, momentum: float = 0.05) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(1.0))
        self.register_buffer("seen", torch.tensor(False))
        self.register_buffer("scale", torch.tensor(1.0 / 255))
        self.register_buffer("zero_point", torch.tensor(QMIN, dtype=torch.int32))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        if not bool(self.seen):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.seen.fill_(True)
        else:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)
        self.update_qparams()

    @torch.no_grad()
    def update_qparams(self) -> None:
        scale = torch.clamp((self.hi - self.lo) / (QMAX - QMIN), min=1e-8)
        zp = torch.clamp(torch.round(QMIN - self.lo / scale), QMIN, QMAX)
        self.scale.copy_(scale)
        self.zero_point.copy_(zp.to(torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.observe(x)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, QMIN, QMAX)


class QATLinear(nn.Linear):
    """An ``nn.Linear`` whose weights are fake-quantised per output channel (symmetric int8).

    The scale is recomputed from the weights while training; :func:`freeze` fixes it (a buffer)
    for inference and export."""

    w_scale: torch.Tensor
    w_zero: torch.Tensor

    @classmethod
    def of(cls, lin: nn.Linear) -> QATLinear:
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None)
        new.load_state_dict(lin.state_dict())
        new.register_buffer("w_scale", new._scale())
        new.register_buffer("w_zero", torch.zeros(lin.out_features, dtype=torch.int32))
        return new

    @torch.no_grad()
    def _scale(self) -> torch.Tensor:
        return torch.clamp(self.weight.abs().amax(1) / QMAX, min=1e-8)

    def quantized_weight(self) -> torch.Tensor:
        if self.training:
            self.w_scale.copy_(self._scale())
        return torch.fake_quantize_per_channel_affine(
            self.weight, self.w_scale, self.w_zero, 0, QMIN, QMAX
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def prepare_qat(mlp: MLP, momentum: float = 0.05) -> MLP:
    """A copy of an :class:`~finscore.compression.nn.MLP` (or subclass) with an
    :class:`ActQuant` before every Linear and every Linear a :class:`QATLinear`; the output
    logits stay float (the head's Sigmoid/Softmax run in float, as in post-training int8)."""
    m = copy.deepcopy(mlp)
    layers: list[nn.Module] = []
    for mod in m.body:
        if isinstance(mod, nn.Linear):
            layers += [ActQuant(momentum), QATLinear.of(mod)]
        else:
            layers.append(mod)
    m.body = nn.Sequential(*layers)
    m.fake_quant = True  # type: ignore[assignment]  # plan.py: not a dense float model
    return m


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """Fix every weight scale to the final weights and every activation range; eval mode."""
    for mod in model.modules():
        if isinstance(mod, QATLinear):
            mod.w_scale.copy_(mod._scale())
        elif isinstance(mod, ActQuant):
            mod.update_qparams()
    return model.eval()


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def fold_weight_quantizers(model: bytes) -> bytes:
    """Replace every ``QuantizeLinear`` of a constant (a fake-quantised weight) by its int8
    result, stored as an initializer the ``DequantizeLinear`` reads: round half to even and
    saturate, as ONNX Runtime's QuantizeLinear does. Graphs without such nodes come back as
    they are."""
    proto = onnx.load_from_string(model)
    g = proto.graph
    consts = _constants(g)
    folded = False
    keep = []
    for node in g.node:
        if node.op_type == "QuantizeLinear" and all(i in consts for i in node.input[:3]):
            w, scale, zp = (consts[i] for i in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            q = np.rint(w.astype(np.float32) / scale.astype(np.float32)) + zp.astype(np.int32)
            info = np.iinfo(zp.dtype)
            q = np.clip(q, info.min, info.max).astype(zp.dtype)
            g.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded = True
            continue
        keep.append(node)
    if not folded:
        return model
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    alive = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(alive)
    nodes = [n for n in g.node if n.op_type != "Constant" or n.output[0] in used]
    del g.node[:]
    g.node.extend(nodes)
    return proto.SerializeToString()

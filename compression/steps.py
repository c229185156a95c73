"""Compression steps: one interface, composable in a :class:`~finscore.compression.plan.Plan`.

A step has a ``name``, ``params`` (recorded in manifests) and ``apply(model, ctx) -> model``;
``ctx`` (:class:`StepContext`) carries the family, the :class:`TrainData`, the teacher (and its
cached logits) and the seed. Torch-stage steps return an ``nn.Module`` (the next step starts
from it); ONNX-stage steps (``stage = "onnx"``: int8 quantisation) take and return ONNX bytes
and branch from the last *dense* torch model (weight-shared layers compute their weights at
run time, which ONNX Runtime's quantiser cannot quantise).

Steps: :class:`Distill`, :class:`ArchitectureSearch`, :class:`PruneStructured` (MLPs only),
:class:`PruneUnstructured`, :class:`WeightShare` (MLPs only), :class:`QuantizeDynamic`,
:class:`QuantizeStatic`. Tolerances: torch-stage outputs match their ONNX export within 1e-4;
int8 outputs stay within 0.05 of their fp32 source (``plan.QUANT_ATOL``) — probabilities move
by int8 rounding, so int8 candidates are judged by the gate's metric, not by bit parity.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from finscore.compression.exceptions import CompressionError
from finscore.compression.family import Family, TrainData
from finscore.compression.nn import MLP, SharedLinear, count_params


@dataclass
class StepContext:
    """What steps share during one plan run."""

    family: Family
    data: TrainData
    teacher: nn.Module
    seed: int = 0
    epochs: int = 5
    teacher_soft: np.ndarray | None = None
    fine_tune_lr: float = 5e-4
    fine_tune_alpha: float = 0.5
    log: list[dict] = field(default_factory=list)  # side candidates (architecture search)

    def soft(self) -> np.ndarray:
        if self.teacher_soft is None:
            self.teacher_soft = self.family.logits(self.teacher, self.data.x_train)
        return self.teacher_soft


class CompressionStep:
    """Base class: ``name``, ``params`` (recorded in the manifest) and ``apply``."""

    name = "step"
    stage = "torch"  # or "onnx"

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def apply(self, model: Any, ctx: StepContext) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """``{"step": name, "params": {...}}`` with JSON-safe values (what manifests record)."""
        return {"step": self.name, "params": {k: _json_safe(v) for k, v in self.params.items()}}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, nn.Module):
        return type(value).__name__
    return getattr(value, "__name__", type(value).__name__)


def _fine_tune(model: nn.Module, ctx: StepContext, epochs: int, after_step=None) -> nn.Module:  # noqa: ANN001
    """Recover after pruning/sharing: distillation from the teacher (T = 2, alpha =
    ``ctx.fine_tune_alpha``) at ``ctx.fine_tune_lr``."""
    if epochs <= 0:
        return model
    return ctx.family.train(
        model, ctx.data, epochs=epochs, seed=ctx.seed + 17, soft=ctx.soft(), temperature=2.0,
        alpha=ctx.fine_tune_alpha, lr=ctx.fine_tune_lr, after_step=after_step,
    )  # fmt: skip


StudentSpec = int | tuple | list | Callable[[TrainData], nn.Module] | nn.Module


def make_student(spec: StudentSpec, ctx: StepContext) -> nn.Module:
    """A fresh student: ``family.student(data, spec)`` for a width (int) or a shape (sequence of
    hidden widths, where the family supports it), ``spec(data)`` for a factory, a deep copy for
    a module."""
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    if callable(spec):
        return spec(ctx.data)
    return ctx.family.student(ctx.data, spec)  # type: ignore[arg-type]


class Distill(CompressionStep):
    """Knowledge distillation of the incoming model (the teacher) into a new student.

    The family's ``train`` with ``soft`` = the incoming model's logits minimises
    ``alpha · T² · soft loss + (1 − alpha) · hard-label loss``: the soft loss is the KL of the
    temperature-``T`` softmaxes (market) or the BCE against σ(teacher logit / T) (binary fraud
    head). ``student`` is a width, a shape (hidden widths), a factory ``data -> nn.Module`` or a
    module (see :func:`make_student`).
    """

    name = "distill"

    def __init__(
        self,
        student: StudentSpec = 32,
        temperature: float = 4.0,
        alpha: float = 0.7,
        epochs: int | None = None,
        lr: float = 1e-3,
    ) -> None:
        self.student, self.temperature, self.alpha = student, temperature, alpha
        self.epochs, self.lr = epochs, lr

    @property
    def width(self) -> StudentSpec:
        """The student spec (kept under its old name)."""
        return self.student

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        soft = ctx.soft() if model is ctx.teacher else ctx.family.logits(model, ctx.data.x_train)
        return ctx.family.train(
            make_student(self.student, ctx), ctx.data, epochs=self.epochs or ctx.epochs,
            seed=ctx.seed, soft=soft, temperature=self.temperature, alpha=self.alpha, lr=self.lr,
        )  # fmt: skip


class ArchitectureSearch(CompressionStep):
    """Distil every candidate shape; keep the best *validation* metric within the budgets.

    ``widths`` are candidate shapes: widths (ints) and/or hidden-layer tuples (a depth search),
    anything :func:`make_student` takes. A candidate fits when its exported ONNX is at most
    ``budget_bytes`` and its batch-1 p50 latency (ONNX Runtime, 1 thread) at most
    ``budget_latency_ms`` (None = no limit). Every candidate is logged in ``ctx.log``; the pick
    is recorded as ``chosen_width`` in the step's params (and so in the manifest). Raises
    :class:`CompressionError` when none fits.
    """

    name = "architecture_search"

    def __init__(
        self,
        widths: tuple[StudentSpec, ...] = (8, 16, 32, 64),
        budget_bytes: int | None = None,
        budget_latency_ms: float | None = None,
        temperature: float = 4.0,
        alpha: float = 0.7,
        epochs: int | None = None,
        lr: float = 1e-3,
        *,
        candidates: tuple[StudentSpec, ...] | None = None,
    ) -> None:
        self.widths, self.lr = tuple(candidates) if candidates is not None else widths, lr
        self.budget_bytes, self.budget_latency_ms = budget_bytes, budget_latency_ms
        self.temperature, self.alpha, self.epochs = temperature, alpha, epochs
        self.chosen_width: StudentSpec | None = None

    @property
    def candidates(self) -> tuple[StudentSpec, ...]:
        return self.widths

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from finscore.compression.export import export_onnx, measure_latency

        fam, best, best_score = ctx.family, None, -np.inf
        for w in self.widths:
            student = Distill(w, self.temperature, self.alpha, self.epochs, self.lr).apply(
                model, ctx
            )
            onnx_bytes = export_onnx(
                fam.head(student), ctx.data.x_val, fam.input_name, fam.output_name
            )
            lat = measure_latency(onnx_bytes, ctx.data.x_val[0], repeats=100)
            probs = _head_outputs(fam, student, ctx.data.x_val)
            score = fam.evaluate(probs, ctx.data, split="val")[fam.metric]
            fits = (self.budget_bytes is None or len(onnx_bytes) <= self.budget_bytes) and (
                self.budget_latency_ms is None or lat["p50_ms"] <= self.budget_latency_ms
            )
            ctx.log.append({"width": _json_safe(w), "bytes": len(onnx_bytes), "val_metric": score,
                            "fits": fits, "latency": lat, "params": count_params(student)})  # fmt: skip
            if fits and score > best_score:
                best, best_score, self.chosen_width = student, score, w
        if best is None:
            raise CompressionError(
                "no student shape fits the size/latency budget",
                hint="raise budget_bytes / budget_latency_ms or add smaller shapes",
            )
        return best


@torch.no_grad()
def _head_outputs(fam: Family, model: nn.Module, x: np.ndarray) -> np.ndarray:
    head = fam.head(model).eval()
    return torch.cat(
        [head(torch.as_tensor(x[i : i + 8192])) for i in range(0, len(x), 8192)]
    ).numpy()


def _mlp_only(model: nn.Module, step: str) -> MLP:
    if not isinstance(model, MLP):
        raise CompressionError(
            f"{step} supports MLP students (got {type(model).__name__})",
            hint="distil into an MLP student first (market students are WindowMLPs); "
            "prune conv/LSTM networks with prune_unstructured",
        )
    return model


class PruneStructured(CompressionStep):
    """Remove whole hidden neurons and rebuild smaller ``nn.Linear`` layers, so the network
    physically shrinks (fewer parameters, a smaller ONNX file, less compute); then fine-tune
    with the teacher's soft targets.

    A hidden neuron's importance is its mean |activation| on training rows times the L2 norm of
    its outgoing weights (its column in the next layer): what it contributes downstream, so
    dead neurons go first whatever their weights. In every hidden layer the ``amount`` share
    with the lowest importance goes (at least 2 neurons stay). Limits: :class:`MLP` students (and
    subclasses such as the market's ``WindowMLP``) only; conv/LSTM networks raise
    :class:`CompressionError` — prune those with :class:`PruneUnstructured`."""

    name = "prune_structured"

    def __init__(self, amount: float = 0.5, fine_tune_epochs: int = 3) -> None:
        self.amount, self.fine_tune_epochs = amount, fine_tune_epochs

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        mlp = copy.deepcopy(_mlp_only(model, self.name)).eval()
        linears = [m for m in mlp.body if isinstance(m, nn.Linear)]
        activity = _hidden_activity(mlp, ctx)
        keep_in = torch.arange(linears[0].in_features)
        new_layers = []
        for i, lin in enumerate(linears):
            w, b = lin.weight.data[:, keep_in], lin.bias.data
            if i < len(linears) - 1:
                nxt = linears[i + 1].weight.data
                importance = activity[i] * nxt.norm(dim=0)
                n_keep = max(2, int(round(len(importance) * (1 - self.amount))))
                keep_out = torch.sort(torch.topk(importance, n_keep).indices).values
            else:
                keep_out = torch.arange(w.shape[0])
            new = nn.Linear(len(keep_in), len(keep_out))
            new.weight.data, new.bias.data = w[keep_out].clone(), b[keep_out].clone()
            new_layers.append(new)
            keep_in = keep_out
        it = iter(new_layers)
        mlp.body = nn.Sequential(*[next(it) if isinstance(m, nn.Linear) else m for m in mlp.body])
        return _fine_tune(mlp, ctx, self.fine_tune_epochs)


@torch.no_grad()
def _hidden_activity(mlp: MLP, ctx: StepContext, rows: int = 2048) -> list[torch.Tensor]:
    """Mean |activation| of every hidden neuron (after its ReLU) on training rows."""
    acts: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: acts.append(out.abs().mean(0)))
        for m in mlp.body
        if isinstance(m, nn.ReLU)
    ]
    try:
        mlp(torch.as_tensor(ctx.data.calibration(rows, ctx.seed), dtype=torch.float32))
    finally:
        for h in hooks:
            h.remove()
    return acts


class PruneUnstructured(CompressionStep):
    """Global L1 magnitude pruning of ``amount`` of the Linear/Conv weights, fine-tuned with the
    mask held, then made permanent (zeros in dense tensors)."""

    name = "prune_unstructured"

    def __init__(self, amount: float = 0.5, fine_tune_epochs: int = 3) -> None:
        self.amount, self.fine_tune_epochs = amount, fine_tune_epochs

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        m = copy.deepcopy(model)
        params = [
            (mod, "weight")
            for mod in m.modules()
            if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d)
        ]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=self.amount)
        m = _fine_tune(m, ctx, self.fine_tune_epochs)
        for mod, name in params:
            prune.remove(mod, name)
        return m


def kmeans_1d(values: np.ndarray, k: int, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Linear-initialised 1-D k-means (as in Deep Compression): (centroids, assignment)."""
    lo, hi = float(values.min()), float(values.max())
    c = np.linspace(lo, hi, k)
    for _ in range(iters):
        a = np.abs(values[:, None] - c[None, :]).argmin(1)
        for j in range(k):
            sel = values[a == j]
            if len(sel):
                c[j] = sel.mean()
    return c, np.abs(values[:, None] - c[None, :]).argmin(1)


class WeightShare(CompressionStep):
    """Deep Compression weight sharing: cluster each Linear layer's non-zero weights into
    ``clusters − 1`` shared values (+ an exact zero) with linear-initialised 1-D k-means,
    fine-tune the codebook (each centroid's gradient is the sum of its weights' gradients —
    autograd through ``codebook[index]``), and store weights as uint8 indices + a float
    codebook: the ONNX graph keeps ``Gather(codebook, index)`` unfolded, so the artifact holds
    1 byte per weight instead of 4 (ONNX Runtime folds the Gather once, at load)."""

    name = "weight_share"

    def __init__(
        self, clusters: int = 16, fine_tune_epochs: int = 2, *, bits: int | None = None
    ) -> None:
        """``clusters`` shared values per layer (centroid 0 is an exact, pinned zero), or
        ``bits`` (``clusters = 2**bits``, at most 8: indices are stored as uint8)."""
        if bits is not None:
            clusters = 2**bits
        if not 2 <= clusters <= 256:
            raise ValueError("clusters must be in 2..256 (uint8 indices)")
        self.clusters, self.fine_tune_epochs = clusters, fine_tune_epochs

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        mlp = copy.deepcopy(_mlp_only(model, self.name))
        layers = []
        for mod in mlp.body:
            if not isinstance(mod, nn.Linear):
                layers.append(mod)
                continue
            w = mod.weight.data.numpy().ravel()
            idx = np.zeros(len(w), dtype=np.int64)
            nz = w != 0
            codebook = np.zeros(self.clusters, dtype=np.float32)
            if nz.sum() >= self.clusters - 1:
                c, a = kmeans_1d(w[nz], self.clusters - 1)
                codebook[1:] = c
                idx[nz] = a + 1
            else:
                codebook[1 : 1 + nz.sum()] = w[nz]
                idx[nz] = np.arange(1, 1 + nz.sum())
            index = torch.as_tensor(idx.reshape(mod.weight.shape))
            layers.append(SharedLinear(torch.as_tensor(codebook), index, mod.bias.data))
        mlp.body = nn.Sequential(*layers)
        mlp.weight_shared = True  # type: ignore[assignment]
        mlp = _fine_tune(mlp, ctx, self.fine_tune_epochs)
        with torch.no_grad():  # the zero centroid stays exactly zero (pruned weights stay pruned)
            for mod in mlp.modules():
                if isinstance(mod, SharedLinear):
                    mod.codebook[0] = 0.0
        return mlp.eval()


class QuantizeDynamic(CompressionStep):
    """ONNX Runtime dynamic int8 quantisation (weights int8, activations quantised at run time)."""

    name = "quantize_dynamic"
    stage = "onnx"

    def apply(self, model: bytes, ctx: StepContext) -> bytes:
        from finscore.compression.quantize import quantize_dynamic_bytes

        return quantize_dynamic_bytes(model)


class QuantizeStatic(CompressionStep):
    """ONNX Runtime static int8 quantisation, QDQ format, calibrated on training rows."""

    name = "quantize_static"
    stage = "onnx"

    def __init__(self, calibration_size: int = 2048, per_channel: bool = False) -> None:
        self.calibration_size, self.per_channel = calibration_size, per_channel

    def apply(self, model: bytes, ctx: StepContext) -> bytes:
        from finscore.compression.quantize import quantize_static_bytes

        calib = ctx.data.calibration(self.calibration_size, ctx.seed)
        return quantize_static_bytes(model, calib, per_channel=self.per_channel)


def _val_measure(src: bytes, ctx: StepContext, rows: int = 512):  # noqa: ANN202
    """(reference validation metric of ``src``, measure(model) -> (metric, max |diff|))."""
    from finscore.compression.export import run_onnx

    fam, data = ctx.family, ctx.data
    want = run_onnx(src, data.x_val[:rows])
    reference = fam.evaluate(run_onnx(src, data.x_val), data, split="val")[fam.metric]

    def measure(model: bytes) -> tuple[float, float]:
        metric = fam.evaluate(run_onnx(model, data.x_val), data, split="val")[fam.metric]
        diff = float(np.max(np.abs(run_onnx(model, data.x_val[:rows]) - want))) if rows else 0.0
        return float(metric), diff

    return float(reference), measure


class Float16(CompressionStep):
    """Mixed precision: weights and activations in float16 where that is safe, per-operator
    fallback to float32 chosen by the accuracy gate.

    Inputs and outputs stay float32 (the workers' contract); so do the nodes that read raw
    inputs (standardisation, window summaries: raw amounts and LOB prices exceed float16's
    65,504) and the output head (Sigmoid/Softmax). Then, greedily, one operator type at a time
    (:func:`~finscore.compression.quantize.greedy_fallback`): while the validation metric drops
    more than ``tolerance`` below the float32 source's, or an output moves more than ``atol``,
    keep float32 the op type whose fallback recovers most (at most ``max_fallbacks``). The op
    types kept float32 are recorded as ``fp32_ops`` (so in the manifest). Weights take half
    the bytes; on GPUs (CUDA/TensorRT) float16 runs on tensor cores, on CPUs ONNX Runtime
    casts back where it lacks float16 kernels (smaller, not faster). Deterministic and batch
    invariant (no data-dependent scales)."""

    name = "float16"
    stage = "onnx"

    def __init__(
        self, tolerance: float = 0.002, atol: float = 0.01, max_fallbacks: int = 4
    ) -> None:
        self.tolerance, self.atol, self.max_fallbacks = tolerance, atol, max_fallbacks
        self.fp32_ops: list[str] = []

    def apply(self, model: bytes, ctx: StepContext) -> bytes:
        from finscore.compression.quantize import float16_bytes, float16_op_types, greedy_fallback

        reference, measure = _val_measure(model, ctx)
        best, _ = greedy_fallback(
            lambda keep: float16_bytes(model, keep),
            float16_op_types(model),
            measure,
            lambda metric, diff: metric >= reference - self.tolerance and diff <= self.atol,
            self.max_fallbacks,
        )
        self.fp32_ops = list(best.kept_float)
        return best.model


class QuantizePerChannel(CompressionStep):
    """Per-channel static int8 (QDQ; weight scales per output channel, activation scales fixed
    at calibration, so outputs never depend on the batch) with an accuracy-aware fallback.

    Every quantisable node is quantised; then, greedily, one node at a time: while the
    validation metric drops more than ``tolerance`` below the float32 source's, or an output
    moves more than ``atol``, the node whose return to float recovers most stays float
    (``nodes_to_exclude``; at most ``max_fallbacks``), as accuracy-aware tuners (Intel Neural
    Compressor, Olive) do. The nodes left float are recorded as ``float_nodes``
    (``<op>_<index>`` of the pre-processed graph)."""

    name = "quantize_per_channel"
    stage = "onnx"

    def __init__(
        self,
        calibration_size: int = 2048,
        tolerance: float = 0.005,
        atol: float = 0.05,
        max_fallbacks: int = 4,
    ) -> None:
        self.calibration_size, self.tolerance, self.atol = calibration_size, tolerance, atol
        self.max_fallbacks = max_fallbacks
        self.float_nodes: list[str] = []

    def apply(self, model: bytes, ctx: StepContext) -> bytes:
        from finscore.compression.quantize import (
            greedy_fallback,
            prepare_static,
            quantizable_nodes,
            quantize_static_bytes,
        )

        calib = ctx.data.calibration(self.calibration_size, ctx.seed)
        prepared = prepare_static(model)
        reference, measure = _val_measure(model, ctx)
        best, _ = greedy_fallback(
            lambda keep: quantize_static_bytes(
                prepared, calib, per_channel=True, exclude=keep, prepared=True
            ),
            quantizable_nodes(prepared),
            measure,
            lambda metric, diff: metric >= reference - self.tolerance and diff <= self.atol,
            self.max_fallbacks,
        )
        self.float_nodes = list(best.kept_float)
        return best.model


class QuantizationAware(CompressionStep):
    """Quantization-aware training: fine-tune the incoming MLP student with fake int8
    quantisation in the forward pass (per-channel symmetric weights, per-tensor activations
    with ranges observed during training, straight-through gradients; see
    :mod:`finscore.compression.qat`), distilling from the teacher (T = 2, alpha =
    ``ctx.fine_tune_alpha``) for ``epochs`` at ``lr``; the result exports as QDQ ONNX with int8
    weights. The network learns around its own rounding, which post-training int8 cannot.

    The returned module's torch forward *is* the int8 emulation; ONNX Runtime's fused int8
    kernels round some ties the other way, so parity with the export is checked within
    ``parity_atol`` (0.01) instead of 1e-4. MLP students only (market: ``WindowMLP``)."""

    name = "qat"

    def __init__(self, epochs: int = 2, lr: float = 2e-4, momentum: float = 0.05) -> None:
        self.epochs, self.lr, self.momentum = epochs, lr, momentum

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from finscore.compression.qat import QAT_PARITY_ATOL, ActQuant, freeze, prepare_qat

        qat = prepare_qat(_mlp_only(model, self.name), self.momentum)
        with torch.no_grad():  # initial activation ranges from calibration rows
            for mod in qat.modules():
                if isinstance(mod, ActQuant):
                    mod.train()
            qat(torch.as_tensor(ctx.data.calibration(2048, ctx.seed), dtype=torch.float32))
        if self.epochs > 0:
            qat = ctx.family.train(
                qat, ctx.data, epochs=self.epochs, seed=ctx.seed + 29, soft=ctx.soft(),
                temperature=2.0, alpha=ctx.fine_tune_alpha, lr=self.lr,
            )  # fmt: skip
        qat = freeze(qat)
        qat.parity_atol = QAT_PARITY_ATOL  # type: ignore[assignment]
        return qat

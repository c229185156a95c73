"""A :class:`Plan` chains compression steps; running it yields every candidate, measured.

Run: train the teacher (or take one), apply the steps in order (each step's output is a
candidate), export every candidate to ONNX, check parity with its torch source, evaluate it on
the validation and the test split, measure size and latency, and pick the **deployed**
candidate: the smallest one whose gated metric **on the validation split** is within
``tolerance`` of the teacher's (ties: lower latency) and whose outputs do not depend on the
batch they are scored in (a streaming worker scores whatever a poll brings; dynamic int8,
which quantises activations per batch, fails this). The test split is only reported, never
used to decide, so the deployed model's test figures are an unbiased estimate. When none
passes, :class:`~finscore.compression.exceptions.GateFailed` is raised and nothing is published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from finscore.compression.exceptions import GateFailed
from finscore.compression.export import (
    batch_variance,
    check_parity,
    export_onnx,
    measure_latency,
    run_onnx,
)
from finscore.compression.family import Family, TrainData
from finscore.compression.nn import count_params, seed_everything
from finscore.compression.steps import CompressionStep, StepContext
from finscore.models.registry import Artifact, Manifest

FP32_ATOL = 1e-4
QUANT_ATOL = 0.05  # int8 candidates: outputs within 0.05 of their fp32 source (plus the gate)
BATCH_ATOL = 1e-5  # deployable: a row's output alone and inside a batch agree to float rounding


@dataclass(frozen=True)
class Gate:
    """A candidate passes when ``metric >= reference − tolerance`` on the validation split (the
    reference is the teacher's validation metric, or a given one); ONNX-stage (int8)
    candidates must also stay within :data:`QUANT_ATOL` of their fp32 source (a family's own
    ``parity_atol`` when it sets one: a regression's outputs are not probabilities)."""

    metric: str
    tolerance: float

    def passes(self, reference: float, value: float) -> bool:
        return value >= reference - self.tolerance


@dataclass
class Candidate:
    """One model of the run (the teacher included), exported and measured."""

    name: str
    onnx: bytes
    steps: list[dict]
    metrics: dict[str, float]  # on the test split (reported)
    params: int
    latency: dict[str, float]
    parity_error: float
    torch_model: nn.Module | None = None
    val_outputs: np.ndarray | None = None
    passes_gate: bool = False
    parent_sha256: str | None = None  # the candidate it was made from (None: the teacher)
    verdict: str = ""  # why it passed or failed the gate (one line)
    val_metrics: dict[str, float] = field(default_factory=dict)  # on the validation split (gated)
    batch_variance: float = 0.0  # see export.batch_variance; deployable only <= BATCH_ATOL

    @property
    def size_bytes(self) -> int:
        return len(self.onnx)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()


@dataclass
class RunResult:
    family: str
    gate: Gate
    candidates: list[Candidate]
    deployed: Candidate | None
    data_fingerprint: str
    search_log: list[dict] = field(default_factory=list)

    @property
    def teacher(self) -> Candidate:
        return self.candidates[0]


@dataclass
class Plan:
    """Ordered steps (see :mod:`finscore.compression.steps`)."""

    steps: list[CompressionStep]
    teacher_epochs: int = 10
    epochs: int = 5
    seed: int = 0
    fine_tune_lr: float = 5e-4  # after pruning / weight sharing (distillation from the teacher)
    fine_tune_alpha: float = 0.5

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.steps]

    def run(
        self,
        family: Family,
        data: TrainData,
        gate: Gate,
        teacher: nn.Module | None = None,
        reference_metric: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Train (or reuse) the teacher, apply the steps, measure every candidate, gate.

        ``reference_metric`` overrides the gate's reference (a validation-split metric); by
        default it is the teacher's. ``progress`` is told what runs now (one short line per
        stage: the teacher, each step, the gate).
        """
        say = progress or (lambda _msg: None)
        torch.set_num_threads(max(1, torch.get_num_threads()))
        seed_everything(self.seed)
        if teacher is None:
            say(f"training the teacher ({self.teacher_epochs} epochs)")
            teacher = family.train(
                family.teacher(data), data, epochs=self.teacher_epochs, seed=self.seed
            )
        ctx = StepContext(
            family, data, teacher, seed=self.seed, epochs=self.epochs,
            fine_tune_lr=self.fine_tune_lr, fine_tune_alpha=self.fine_tune_alpha,
        )  # fmt: skip
        cands = [
            self._measure("teacher", teacher, family, data, [{"step": "teacher", "params": {}}])
        ]
        model, dense = teacher, teacher
        applied: list[dict] = []
        dense_applied: list[dict] = []
        parent, dense_parent = cands[0].sha256, cands[0].sha256
        for i, step in enumerate(self.steps, 1):
            say(f"step {i}/{len(self.steps)}: {step.name}")
            if step.stage == "onnx":
                # branches from the last dense model: its steps, not the weight-shared ones
                src = self._measure("src", dense, family, data, dense_applied, measure=False)
                q = step.apply(src.onnx, ctx)
                cand = self._measure_onnx(
                    step.name, q, src, family, data, dense_applied + [step.describe()]
                )
                cand.parent_sha256 = dense_parent
                cands.append(cand)
                continue
            model = step.apply(model, ctx)
            applied = applied + [step.describe()]
            cand = self._measure(step.name, model, family, data, applied)
            cand.parent_sha256, parent = parent, cand.sha256
            if not getattr(model, "weight_shared", False) and not getattr(
                model, "fake_quant", False
            ):  # ONNX-stage steps start from a dense float model, not a shared or QAT one
                dense, dense_parent, dense_applied = model, cand.sha256, applied
            cands.append(cand)
        say("gating the candidates")
        for c in cands:
            if c.val_outputs is not None:
                c.val_metrics = family.evaluate(c.val_outputs, data, split="val")
        reference = (
            cands[0].val_metrics[gate.metric] if reference_metric is None else reference_metric
        )
        cands[0].verdict = "reference" if reference_metric is None else "teacher"
        parity_atol = float(getattr(family, "parity_atol", QUANT_ATOL))
        for c in cands[1:]:
            value = c.val_metrics[gate.metric]
            c.batch_variance = batch_variance(c.onnx, data.x_test[:256])
            c.passes_gate = (
                gate.passes(reference, value)
                and c.parity_error <= parity_atol
                and c.batch_variance <= BATCH_ATOL
            )
            if c.parity_error > parity_atol:
                c.verdict = f"parity error {c.parity_error:.3g} > {parity_atol}"
            elif c.batch_variance > BATCH_ATOL:
                c.verdict = f"outputs depend on the batch (by up to {c.batch_variance:.2g})"
            else:
                c.verdict = (
                    f"validation {gate.metric} {value:.4f} vs {reference:.4f} - {gate.tolerance}"
                )
        passing = [c for c in cands[1:] if c.passes_gate]
        deployed = (
            min(passing, key=lambda c: (c.size_bytes, c.latency["p50_ms"])) if passing else None
        )
        result = RunResult(family.name, gate, cands, deployed, data.fingerprint, ctx.log)
        if deployed is None:
            best = (
                max(cands[1:], key=lambda c: c.val_metrics[gate.metric])
                if len(cands) > 1
                else cands[0]
            )
            failed = GateFailed(
                gate.metric, reference, best.val_metrics[gate.metric], gate.tolerance
            )
            failed.result = result  # what was measured, for the report
            raise failed
        return result

    def _measure(
        self, name: str, model: nn.Module, family: Family, data: TrainData, steps: list[dict],
        measure: bool = True,
    ) -> Candidate:  # fmt: skip
        head = family.head(model).eval()
        onnx_bytes = export_onnx(head, data.x_test, family.input_name, family.output_name)
        # quantization-aware models say how close their int8 export must be (qat.py)
        err = check_parity(
            head, onnx_bytes, data.x_test[:256], getattr(model, "parity_atol", FP32_ATOL)
        )
        if not measure:
            return Candidate(name, onnx_bytes, steps, {}, 0, {}, err, model)
        outputs = run_onnx(onnx_bytes, data.x_test)
        with torch.no_grad():
            val = run_onnx(onnx_bytes, data.x_val)
        return Candidate(
            name, onnx_bytes, steps, family.evaluate(outputs, data), count_params(model),
            measure_latency(onnx_bytes, data.x_test[0]), err, model, val,
        )  # fmt: skip

    def _measure_onnx(
        self,
        name: str,
        q: bytes,
        src: Candidate,
        family: Family,
        data: TrainData,
        steps: list[dict],
    ) -> Candidate:
        outputs = run_onnx(q, data.x_test)
        want = run_onnx(src.onnx, data.x_test[:256])
        err = float(np.max(np.abs(run_onnx(q, data.x_test[:256]) - want)))
        return Candidate(
            name, q, steps, family.evaluate(outputs, data),
            count_params(src.torch_model) if src.torch_model is not None else 0,
            measure_latency(q, data.x_test[0]), err, None, run_onnx(q, data.x_val),
        )  # fmt: skip


def to_artifact(result: RunResult, cand: Candidate, family: Family, data: TrainData) -> Artifact:
    """An unversioned registry artifact for a candidate, with reference inputs for smoke tests."""
    ref_in = family.example(data, 4) if hasattr(family, "example") else data.x_test[:4]
    ref_out = run_onnx(cand.onnx, ref_in)
    params = dict(family.params(data))
    # The training-time distributions the sidecar's population-stability checks compare against.
    qs = np.linspace(0, 1, 11)
    if cand.val_outputs is not None and np.asarray(cand.val_outputs).ndim == 1:
        params["score_quantiles"] = np.quantile(cand.val_outputs, qs).round(6).tolist()
    if data.x_train.ndim == 2:
        params["feature_quantiles"] = np.quantile(data.x_train, qs, axis=0).T.round(6).tolist()
    manifest = Manifest(
        name=family.name,
        version="",
        family=family.name,
        sha256=cand.sha256,
        size_bytes=cand.size_bytes,
        input_name=family.input_name,
        output_name=family.output_name,
        input_shape=[None, *data.x_test.shape[1:]],
        feature_names=family.feature_names() if hasattr(family, "feature_names") else [],
        params=params,
        parent_sha256=cand.parent_sha256,
        teacher_sha256=result.teacher.sha256,
        steps=cand.steps,
        data_fingerprint=result.data_fingerprint,
        metrics={k: float(v) for k, v in cand.metrics.items()}
        | {"teacher_" + k: float(v) for k, v in result.teacher.metrics.items()},
        latency=cand.latency,
        reference_inputs=np.asarray(ref_in, dtype=np.float32).tolist(),
        reference_outputs=np.asarray(ref_out, dtype=np.float32).tolist(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        threshold=family.threshold(cand.val_outputs, data)
        if cand.val_outputs is not None
        else None,
    )
    return Artifact(manifest, cand.onnx)

"""Contract checks every compression step and every exported artifact must pass.

In the style of river's ``yield_checks``: :func:`check_step` and :func:`check_artifact` yield
``(name, check)`` pairs, so a test suite can parametrise over (step × check) and
(artifact × check) and each failure names exactly what broke. A check raises
``AssertionError`` (or the toolkit's own error) when the contract does not hold.

Step checks: the step's output exports and loads in ONNX Runtime with the family's input and
output names; it reproduces its source (torch stages: the torch module, atol 1e-4; ONNX stages
such as int8 quantisation: the fp32 ONNX it came from, within ``atol_quantized``, 0.05 by
default — int8 rounding); applying it twice with the same seed gives identical ONNX bytes (or,
failing that, identical outputs); the batch axis is dynamic; the output obeys the family's
ONNX contract (fraud: ``score`` [N] in [0, 1]; market: ``probs`` [N, 3], rows summing to 1); a
row scores the same alone and inside a batch (dynamic int8 fails this, by design).

Artifact checks: the manifest's sha256 and size match the bytes; the bytes load in ONNX
Runtime and reproduce the manifest's reference outputs; the output contract holds on the
reference inputs; optionally parity with a source (torch module or ONNX bytes); with ``x``, a
row scores the same alone and inside a batch (what a deployed model must do: workers score
whatever a poll brings); the artifact fits on the ``model-updates`` topic under Kafka's default
message limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from finscore.compression.export import batch_variance, check_parity, export_onnx, run_onnx
from finscore.compression.plan import BATCH_ATOL
from finscore.compression.steps import CompressionStep, StepContext
from finscore.models.registry import KAFKA_DEFAULT_MESSAGE_BYTES, Artifact
from finscore.providers import create_session

Check = tuple[str, Callable[[], None]]
QUANTIZED_ATOL = 0.05


def _onnx_of(step: CompressionStep, model: Any, ctx: StepContext) -> tuple[bytes, Any]:
    """(ONNX bytes of the step's output, its source: torch module or fp32 ONNX bytes)."""
    fam = ctx.family
    if step.stage == "onnx":
        src = export_onnx(fam.head(model), ctx.data.x_test, fam.input_name, fam.output_name)
        return step.apply(src, ctx), src
    out = step.apply(model, ctx)
    return export_onnx(fam.head(out), ctx.data.x_test, fam.input_name, fam.output_name), out


def assert_output_contract(output_name: str, x: np.ndarray, y: np.ndarray) -> None:
    """The ONNX contract the workers rely on (see CONTEXT: fraud ``score``, market ``probs``)."""
    assert np.isfinite(y).all(), "non-finite outputs"
    if output_name == "score":
        assert y.shape == (len(x),), f"score must be [N], got {y.shape}"
        assert (y >= 0).all() and (y <= 1).all(), "score must be a probability"
    elif output_name == "probs":
        assert y.shape == (len(x), 3), f"probs must be [N, 3], got {y.shape}"
        assert np.allclose(y.sum(1), 1, atol=1e-3), "probs rows must sum to 1"
    elif output_name == "quantiles":  # cash flow: [N, days, levels], never crossing
        assert y.ndim == 3 and y.shape[0] == len(x), f"quantiles must be [N, H, Q], got {y.shape}"
        assert (np.diff(y, axis=-1) >= 0).all(), "quantiles must not cross"


def check_step(
    step: CompressionStep, model: Any, ctx: StepContext, atol_quantized: float = QUANTIZED_ATOL
) -> Iterator[Check]:
    """Checks for ``step`` applied to ``model`` with the data and family of ``ctx``."""
    fam = ctx.family
    onnx_bytes, source = _onnx_of(step, model, ctx)
    x = ctx.data.x_test[:128]

    def loads_in_onnxruntime() -> None:
        s = create_session(onnx_bytes)
        assert s.get_inputs()[0].name == fam.input_name
        assert s.get_outputs()[0].name == fam.output_name

    def matches_its_source() -> None:
        if step.stage == "onnx":
            err = float(np.max(np.abs(run_onnx(onnx_bytes, x) - run_onnx(source, x))))
            assert err <= atol_quantized, f"quantised output differs by {err}"
        else:
            check_parity(fam.head(source), onnx_bytes, x, getattr(source, "parity_atol", 1e-4))

    def is_seeded_deterministic() -> None:
        again, _ = _onnx_of(step, model, ctx)
        if again != onnx_bytes:  # identical bytes, or at least identical outputs
            assert np.array_equal(run_onnx(again, x), run_onnx(onnx_bytes, x)), (
                "same seed, other model"
            )

    def has_a_dynamic_batch_axis() -> None:
        for n in (1, 7, 300):
            xx = np.repeat(ctx.data.x_test[:1], n, axis=0)
            assert len(run_onnx(onnx_bytes, xx)) == n

    def obeys_the_output_contract() -> None:
        assert_output_contract(fam.output_name, x, run_onnx(onnx_bytes, x))

    def is_batch_invariant() -> None:
        err = batch_variance(onnx_bytes, x)
        assert err <= BATCH_ATOL, f"a row's output depends on its batch (by up to {err:.2g})"

    yield "loads_in_onnxruntime", loads_in_onnxruntime
    yield "matches_its_source", matches_its_source
    yield "is_seeded_deterministic", is_seeded_deterministic
    yield "has_a_dynamic_batch_axis", has_a_dynamic_batch_axis
    yield "obeys_the_output_contract", obeys_the_output_contract
    yield "is_batch_invariant", is_batch_invariant


def check_artifact(
    artifact: Artifact,
    source: Any = None,
    x: np.ndarray | None = None,
    atol: float = 1e-4,
) -> Iterator[Check]:
    """Checks for an artifact; with ``source`` (torch module with its head, or ONNX bytes) and
    ``x``, also parity with it within ``atol`` (use :data:`QUANTIZED_ATOL` for int8)."""
    m = artifact.manifest

    def manifest_hash_matches_bytes() -> None:
        assert m.sha256 == hashlib.sha256(artifact.onnx).hexdigest()
        artifact.verify(smoke=False)

    def size_is_recorded() -> None:
        assert m.size_bytes == len(artifact.onnx)

    def loads_and_reproduces_reference_outputs() -> None:
        s = create_session(artifact.onnx)
        assert s.get_inputs()[0].name == m.input_name
        assert s.get_outputs()[0].name == m.output_name
        assert m.reference_inputs, "no reference inputs for the smoke test"
        artifact.smoke_test()

    def obeys_the_output_contract() -> None:
        ref = np.asarray(m.reference_inputs, np.float32)
        assert_output_contract(m.output_name, ref, run_onnx(artifact.onnx, ref))

    def matches_its_source() -> None:
        if source is None or x is None:
            return
        if isinstance(source, bytes):
            err = float(np.max(np.abs(run_onnx(artifact.onnx, x) - run_onnx(source, x))))
            assert err <= atol, f"differs from its source by {err}"
        else:
            check_parity(source, artifact.onnx, x, atol)

    def is_batch_invariant() -> None:
        if x is None:
            return
        err = batch_variance(artifact.onnx, x)
        assert err <= BATCH_ATOL, f"a row's output depends on its batch (by up to {err:.2g})"

    def fits_on_the_model_updates_topic() -> None:
        assert len(artifact.onnx) + len(m.to_json()) < KAFKA_DEFAULT_MESSAGE_BYTES

    yield "manifest_hash_matches_bytes", manifest_hash_matches_bytes
    yield "size_is_recorded", size_is_recorded
    yield "loads_and_reproduces_reference_outputs", loads_and_reproduces_reference_outputs
    yield "obeys_the_output_contract", obeys_the_output_contract
    yield "matches_its_source", matches_its_source
    yield "is_batch_invariant", is_batch_invariant
    yield "fits_on_the_model_updates_topic", fits_on_the_model_updates_topic


# The names the first test suite used.
step_checks = check_step
artifact_checks = check_artifact

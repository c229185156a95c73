"""Contract checks every compression step and every exported artifact must pass.

In the style of river's ``yield_checks``: :func:`step_checks` and :func:`artifact_checks` yield
named check functions, so a test suite can parametrise over (step × check) and
(artifact × check) and each failure names exactly what broke.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np
import onnxruntime as ort

from finscore.compression.export import check_parity, export_onnx, run_onnx
from finscore.compression.steps import CompressionStep, StepContext
from finscore.registry import Artifact

Check = tuple[str, Callable[[], None]]


def _onnx_of(step: CompressionStep, model, ctx: StepContext) -> tuple[bytes, object]:  # noqa: ANN001
    fam = ctx.family
    if step.stage == "onnx":
        src = export_onnx(fam.head(model), ctx.data.x_test, fam.input_name, fam.output_name)
        return step.apply(src, ctx), src
    out = step.apply(model, ctx)
    return export_onnx(fam.head(out), ctx.data.x_test, fam.input_name, fam.output_name), out


def step_checks(step: CompressionStep, model, ctx: StepContext, atol_quantized: float = 0.05) -> Iterator[Check]:  # noqa: ANN001
    """Checks for one step applied to ``model``: loads, parity, determinism, batch axis."""
    fam = ctx.family
    onnx_bytes, source = _onnx_of(step, model, ctx)
    x = ctx.data.x_test[:128]

    def loads_in_onnxruntime() -> None:
        s = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        assert s.get_inputs()[0].name == fam.input_name
        assert s.get_outputs()[0].name == fam.output_name

    def matches_its_source() -> None:
        if step.stage == "onnx":
            err = np.max(np.abs(run_onnx(onnx_bytes, x) - run_onnx(source, x)))  # type: ignore[arg-type]
            assert err <= atol_quantized, f"quantised output differs by {err}"
        else:
            check_parity(fam.head(source), onnx_bytes, x, 1e-4)  # type: ignore[arg-type]

    def is_seeded_deterministic() -> None:
        again, _ = _onnx_of(step, model, ctx)
        assert np.array_equal(run_onnx(again, x), run_onnx(onnx_bytes, x)), "same seed, other model"

    def has_a_dynamic_batch_axis() -> None:
        for n in (1, 7, 300):
            xx = np.repeat(ctx.data.x_test[:1], n, axis=0)
            assert len(run_onnx(onnx_bytes, xx)) == n

    yield "loads_in_onnxruntime", loads_in_onnxruntime
    yield "matches_its_source", matches_its_source
    yield "is_seeded_deterministic", is_seeded_deterministic
    yield "has_a_dynamic_batch_axis", has_a_dynamic_batch_axis


def artifact_checks(artifact: Artifact) -> Iterator[Check]:
    """Checks for a registered artifact: hash, size, loads, smoke test on reference inputs."""

    def manifest_hash_matches_bytes() -> None:
        assert artifact.manifest.sha256 == hashlib.sha256(artifact.onnx).hexdigest()
        artifact.verify()

    def size_is_recorded() -> None:
        assert artifact.manifest.size_bytes == len(artifact.onnx)

    def loads_and_reproduces_reference_outputs() -> None:
        artifact.smoke_test()

    def fits_on_the_model_updates_topic() -> None:
        assert len(artifact.onnx) < 1_000_000

    yield "manifest_hash_matches_bytes", manifest_hash_matches_bytes
    yield "size_is_recorded", size_is_recorded
    yield "loads_and_reproduces_reference_outputs", loads_and_reproduces_reference_outputs
    yield "fits_on_the_model_updates_topic", fits_on_the_model_updates_topic

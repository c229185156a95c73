"""Every compression step and every exported artifact passes the same contract checks."""

from __future__ import annotations

import pytest
from finscore.compression.checks import artifact_checks, step_checks
from finscore.compression.steps import (
    ArchitectureSearch,
    Distill,
    PruneStructured,
    PruneUnstructured,
    QuantizeDynamic,
    QuantizeStatic,
    WeightShare,
)

FRAUD_STEPS = [
    Distill(8, epochs=1),
    ArchitectureSearch((4, 8), epochs=1),
    PruneStructured(0.5, 1),
    PruneUnstructured(0.5, 1),
    WeightShare(8, 1),
    QuantizeDynamic(),
    QuantizeStatic(256),
]
MARKET_STEPS = [Distill(8, epochs=1), PruneUnstructured(0.5, 0), QuantizeDynamic()]
CHECKS = ["loads_in_onnxruntime", "matches_its_source", "is_seeded_deterministic",
          "has_a_dynamic_batch_axis"]  # fmt: skip


def _source(step, ctx):  # noqa: ANN001, ANN202
    """Steps that prune or share start from a small dense student, like in a plan."""
    if isinstance(
        step, PruneStructured | PruneUnstructured | WeightShare | QuantizeDynamic | QuantizeStatic
    ):
        return Distill(16, epochs=1).apply(ctx.teacher, ctx)
    return ctx.teacher


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("step", FRAUD_STEPS, ids=lambda s: s.name)
def test_fraud_step_contract(step, check, fraud_ctx) -> None:  # noqa: ANN001
    checks = dict(step_checks(step, _source(step, fraud_ctx), fraud_ctx))
    checks[check]()


@pytest.mark.parametrize("step", MARKET_STEPS, ids=lambda s: s.name)
def test_market_step_contract(step, market_ctx) -> None:  # noqa: ANN001
    for _, check in step_checks(step, _source(step, market_ctx), market_ctx):
        check()


def test_market_teacher_exports_with_parity(market_ctx) -> None:  # noqa: ANN001
    from finscore.compression.export import check_parity, export_onnx

    fam = market_ctx.family
    head = fam.head(market_ctx.teacher)
    onnx_bytes = export_onnx(head, market_ctx.data.x_test, fam.input_name, fam.output_name)
    assert check_parity(head, onnx_bytes, market_ctx.data.x_test[:64], 1e-4) <= 1e-4


def test_structured_pruning_physically_shrinks_the_network(fraud_ctx) -> None:  # noqa: ANN001
    from finscore.compression.nn import count_params

    student = Distill(16, epochs=1).apply(fraud_ctx.teacher, fraud_ctx)
    pruned = PruneStructured(0.5, 0).apply(student, fraud_ctx)
    assert pruned.hidden == [8, 4] and student.hidden == [16, 8]
    assert count_params(pruned) < 0.6 * count_params(student)


def test_weight_sharing_stores_one_byte_per_weight(fraud_ctx) -> None:  # noqa: ANN001
    import onnx
    from finscore.compression.export import export_onnx

    student = Distill(64, epochs=1).apply(fraud_ctx.teacher, fraud_ctx)
    shared = WeightShare(16, 0).apply(student, fraud_ctx)
    fam = fraud_ctx.family
    proto = onnx.load_from_string(
        export_onnx(fam.head(shared), fraud_ctx.data.x_test, "features", "score")
    )
    kinds = {init.data_type for init in proto.graph.initializer if len(init.dims) == 2}
    assert kinds == {onnx.TensorProto.UINT8}  # every weight matrix is uint8 indices
    for lin in shared.linears():
        assert len(set(lin.weight.detach().numpy().ravel().tolist())) <= 16


@pytest.fixture(scope="module")
def artifacts(fraud_ctx, market_ctx, tmp_path_factory):  # noqa: ANN001, ANN201
    from finscore.compression.plan import Gate, Plan, to_artifact

    from finscore.registry import Registry

    reg = Registry(tmp_path_factory.mktemp("registry"))
    out = []
    for ctx, steps in ((fraud_ctx, [Distill(8, epochs=1), QuantizeDynamic()]),
                       (market_ctx, [Distill(8, epochs=1)])):  # fmt: skip
        result = Plan(steps, epochs=1, seed=0).run(
            ctx.family, ctx.data, Gate(ctx.family.metric, 1.0), teacher=ctx.teacher
        )
        for cand in result.candidates:
            out.append(
                (
                    f"{ctx.family.name}-{cand.name}",
                    reg.publish(to_artifact(result, cand, ctx.family, ctx.data)),
                )
            )
    return out


@pytest.mark.parametrize("check", ["manifest_hash_matches_bytes", "size_is_recorded",
                                   "loads_and_reproduces_reference_outputs", "fits_on_the_model_updates_topic"])  # fmt: skip
def test_every_exported_artifact_passes_the_artifact_contract(artifacts, check) -> None:  # noqa: ANN001
    assert len(artifacts) == 5
    for _, art in artifacts:
        dict(artifact_checks(art))[check]()

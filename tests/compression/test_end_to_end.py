"""A whole compression run on tiny simulated data: teacher → distil → prune → weight-share →
quantize → gate → registry → report; and the gate refusing an impossible tolerance."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from finscore.app.cli.compress import compress
from finscore.compression.checks import check_artifact
from finscore.compression.exceptions import GateFailed
from finscore.compression.plan import Gate, Plan, to_artifact
from finscore.compression.report import pareto, write_report
from finscore.compression.steps import (
    Distill,
    PruneStructured,
    PruneUnstructured,
    QuantizeDynamic,
    QuantizeStatic,
    WeightShare,
)
from finscore.features.fraud import FRAUD_FEATURE_NAMES
from finscore.models.registry import Registry, generate_keypair

STEPS = ["distill", "prune_structured", "prune_unstructured", "weight_share",
         "quantize_dynamic", "quantize_static"]  # fmt: skip


@pytest.fixture(scope="module")
def run(fraud_ctx):  # noqa: ANN001, ANN201
    plan = Plan(
        [Distill(16, epochs=2), PruneStructured(0.5, 1), PruneUnstructured(0.5, 1),
         WeightShare(16, 1), QuantizeDynamic(), QuantizeStatic(512)],
        epochs=1, seed=0,
    )  # fmt: skip
    return plan.run(fraud_ctx.family, fraud_ctx.data, Gate("ap", 0.5), teacher=fraud_ctx.teacher)


def test_every_step_yields_a_measured_candidate(run) -> None:  # noqa: ANN001
    assert [c.name for c in run.candidates] == ["teacher", *STEPS]
    for c in run.candidates:
        assert set(c.metrics) == {"ap", "auc", "cp100"}
        assert all(np.isfinite(v) for v in c.metrics.values())
        assert c.latency["p50_ms"] > 0 and c.latency["p99_ms"] >= c.latency["p50_ms"]
        assert c.latency["throughput_per_s"] > 0
        assert c.params > 0 and c.size_bytes == len(c.onnx)
    sizes = {c.name: c.size_bytes for c in run.candidates}
    assert sizes["distill"] < sizes["teacher"] and sizes["weight_share"] < sizes["distill"], sizes
    assert run.deployed is not None and run.deployed.passes_gate
    assert run.deployed.size_bytes == min(c.size_bytes for c in run.candidates if c.passes_gate)


def test_candidates_record_their_lineage(run) -> None:  # noqa: ANN001
    by = {c.name: c for c in run.candidates}
    assert by["teacher"].parent_sha256 is None
    assert by["distill"].parent_sha256 == by["teacher"].sha256
    assert by["prune_structured"].parent_sha256 == by["distill"].sha256
    assert by["weight_share"].parent_sha256 == by["prune_unstructured"].sha256
    # int8 quantisation branches from the last dense model (weight-shared layers are not dense)
    assert by["quantize_dynamic"].parent_sha256 == by["prune_unstructured"].sha256
    assert [s["step"] for s in by["quantize_static"].steps] == [
        "distill", "prune_structured", "prune_unstructured", "quantize_static"
    ]  # fmt: skip


def test_weight_sharing_and_pruning_really_shrink_the_artifact(run) -> None:  # noqa: ANN001
    by = {c.name: c for c in run.candidates}
    assert by["prune_structured"].params < by["distill"].params
    assert by["prune_unstructured"].params < by["prune_structured"].params
    assert by["weight_share"].size_bytes < by["prune_unstructured"].size_bytes
    proto = onnx.load_from_string(by["weight_share"].onnx)
    assert any(n.op_type == "Gather" for n in proto.graph.node)
    q = onnx.load_from_string(by["quantize_static"].onnx)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)  # QDQ format


def test_the_deployed_student_is_published_signed_and_passes_the_artifact_contract(
    run, fraud_ctx, tmp_path
) -> None:  # noqa: ANN001
    private, public = generate_keypair()
    reg = Registry(tmp_path / "registry")
    fam, data = fraud_ctx.family, fraud_ctx.data
    art = reg.publish(to_artifact(run, run.deployed, fam, data), signing_key_hex=private)
    reg.promote("fraud", art.manifest.version)
    loaded = reg.get("fraud")
    loaded.verify(public, require_signature=True)
    for name, check in check_artifact(loaded, run.deployed.onnx, data.x_test[:64]):
        check(), name
    m = loaded.manifest
    assert m.version == "1" and m.name == m.family == "fraud"
    assert (m.input_name, m.output_name) == ("features", "score")
    assert m.input_shape == [None, len(FRAUD_FEATURE_NAMES)]
    assert m.feature_names == fam.feature_names()
    assert m.teacher_sha256 == run.teacher.sha256 and m.parent_sha256 == run.deployed.parent_sha256
    assert m.sha256 == hashlib.sha256(loaded.onnx).hexdigest() == run.deployed.sha256
    assert m.data_fingerprint == data.fingerprint
    assert {"ap", "auc", "cp100", "teacher_ap"} <= set(m.metrics)
    assert m.threshold is not None and 0 < m.threshold < 1
    assert [s["step"] for s in m.steps] == [s["step"] for s in run.deployed.steps]
    assert m.size_bytes < 100_000


def test_report_has_a_table_row_per_candidate_and_pareto_plots(run, tmp_path) -> None:  # noqa: ANN001
    path = write_report(run, tmp_path / "report", "tiny run")
    text = path.read_text()
    for c in run.candidates:
        assert f"| {c.name} |" in text
    for svg in ("size.svg", "latency.svg"):
        body = (tmp_path / "report" / svg).read_text()
        assert body.startswith("<svg") and "Pareto" in body
        assert body.count("<circle") >= len(run.candidates)
    assert pareto([(1, 0.5), (2, 0.6), (3, 0.55), (0.5, 0.4)]) == [3, 0, 1]


def test_an_impossible_tolerance_fails_the_gate_and_registers_nothing(fraud_ctx, tmp_path) -> None:  # noqa: ANN001
    plan = Plan([Distill(8, epochs=1), QuantizeDynamic()], epochs=1, seed=0)
    with pytest.raises(GateFailed) as e:
        plan.run(fraud_ctx.family, fraud_ctx.data, Gate("ap", -1.0), teacher=fraud_ctx.teacher)
    msg = str(e.value)
    assert "ap" in msg and "-1.0000" in msg and f"{e.value.reference:.4f}" in msg
    assert e.value.result is not None and e.value.result.deployed is None


def test_cli_gate_failure_exits_non_zero_with_one_line_and_registers_nothing(tmp_path) -> None:
    reg_dir, report = tmp_path / "registry", tmp_path / "report"
    args = ["fraud", "--sim-size", "300", "40", "--epochs", "1", "--teacher-epochs", "1",
            "--tolerance", "-1", "--registry", str(reg_dir), "--report", str(report)]  # fmt: skip
    result = CliRunner().invoke(compress, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "accuracy gate failed" in errors[0]
    assert Registry(reg_dir).list("fraud") == []
    assert "GATE FAILED" in (report / "report.md").read_text()


def test_cli_publishes_the_deployed_student(tmp_path) -> None:
    reg_dir = tmp_path / "registry"
    args = ["fraud", "--sim-size", "300", "40", "--epochs", "1", "--teacher-epochs", "1",
            "--tolerance", "1", "--registry", str(reg_dir), "--report", str(tmp_path / "r"),
            "--promote"]  # fmt: skip
    result = CliRunner().invoke(compress, args)
    assert result.exit_code == 0, result.output
    assert "registered fraud v1" in result.output
    champion = Registry(reg_dir).champion("fraud")
    assert champion is not None
    champion.verify()

"""What the sidecar promotes out of a recompression run (``gated_candidate``), on the figures
of a real run: the fraud sidecar's recompression at day 54 of the drift scenario
(``TxSimConfig(n_customers=500, n_terminals=1000, days=56, drift_day=40, seed=3)``)."""

from __future__ import annotations

from types import SimpleNamespace

from finscore.app.sidecar.gate import gated_candidate
from finscore.compression.plan import Candidate, Gate, RunResult

# name, validation AP, hold-out AP, passed the gate, bytes
DAY_54 = [("teacher", 0.918, 0.824, False, 40_000), ("distill", 0.917, 0.820, True, 9_000),
          ("prune_structured", 0.906, 0.797, True, 6_000),
          ("weight_share", 0.905, 0.794, True, 5_000),
          ("quantize_dynamic", 0.907, 0.796, False, 3_000)]  # fmt: skip


def run_of(rows: list[tuple[str, float, float, bool, int]], deployed: str) -> RunResult:
    cands = [Candidate(name=n, onnx=b"\0" * size, steps=[], metrics={"ap": test}, params=0,
                       latency={"p50_ms": 0.1}, parity_error=0.0, passes_gate=ok,
                       val_metrics={"ap": val}) for n, val, test, ok, size in rows]  # fmt: skip
    chosen = next(c for c in cands if c.name == deployed)
    return RunResult("fraud", Gate("ap", 0.02), cands, chosen, "fp")


class Plan:
    def __init__(self, result: RunResult) -> None:
        self.result = result

    def run(self, family, data, gate):  # noqa: ANN001, ANN201
        return self.result


FAMILY = SimpleNamespace(name="fraud", metric="ap")


def test_the_smallest_candidate_that_holds_on_the_hold_out_too_is_promoted() -> None:
    """The plan deployed weight sharing (0.013 short of its teacher on validation) but it is
    0.030 short on the hold-out; distillation alone holds on both, so it is promoted."""
    _, cand = gated_candidate(Plan(run_of(DAY_54, "weight_share")), FAMILY, None, 0.02)  # type: ignore[arg-type]
    assert cand.name == "distill"


def test_the_smallest_of_those_holding_on_both_is_chosen() -> None:
    rows = [(n, val, test + (0.02 if n != "teacher" else 0.0), ok, size)
            for n, val, test, ok, size in DAY_54]  # fmt: skip
    _, cand = gated_candidate(Plan(run_of(rows, "weight_share")), FAMILY, None, 0.02)  # type: ignore[arg-type]
    assert cand.name == "weight_share"  # quantize_dynamic is smaller but failed the gate


def test_when_none_holds_on_the_hold_out_the_plans_choice_stands() -> None:
    rows = [(n, val, test - (0.05 if n != "teacher" else 0.0), ok, size)
            for n, val, test, ok, size in DAY_54]  # fmt: skip
    _, cand = gated_candidate(Plan(run_of(rows, "weight_share")), FAMILY, None, 0.02)  # type: ignore[arg-type]
    assert cand.name == "weight_share"

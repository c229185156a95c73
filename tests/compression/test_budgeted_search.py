"""The budgeted architecture search (compression/search.py): it samples and refines shapes under a
byte and a latency budget, refuses a budget nothing meets, records its candidates and their
Pareto fronts, and is deterministic for a seed (latency injected here, so the tests are too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finscore.compression.exceptions import CompressionError
from finscore.compression.search import BudgetedSearch


def fake_latency(onnx: bytes, row: np.ndarray) -> float:
    """A deterministic stand-in for the measured batch-1 p50: 1 ms per 10 kB."""
    return len(onnx) / 10_000


def _search(**kw) -> BudgetedSearch:  # noqa: ANN003
    base = dict(n_random=4, n_evolve=2, search_epochs=1, epochs=1, widths=(4, 8, 16, 32),
                latency_fn=fake_latency)  # fmt: skip
    return BudgetedSearch(**(base | kw))


def _dominated(e: dict, table: list[dict], x: str) -> bool:
    return any(
        o[x] <= e[x] and o["val_metric"] >= e["val_metric"]
        and (o[x] < e[x] or o["val_metric"] > e["val_metric"])
        for o in table
    )  # fmt: skip


def test_a_budget_no_candidate_meets_raises_with_a_hint(fraud_ctx) -> None:  # noqa: ANN001
    with pytest.raises(CompressionError) as exc:
        _search(budget_bytes=200).apply(fraud_ctx.teacher, fraud_ctx)
    assert exc.value.hint and "budget_bytes" in exc.value.hint
    with pytest.raises(CompressionError) as exc:
        _search(budget_latency_ms=1e-6).apply(fraud_ctx.teacher, fraud_ctx)
    assert exc.value.hint and "budget_latency_ms" in exc.value.hint


def test_a_tight_latency_budget_excludes_what_a_loose_one_keeps(fraud_ctx) -> None:  # noqa: ANN001
    loose, tight = _search(budget_latency_ms=100.0), _search(budget_latency_ms=0.3)
    loose.apply(fraud_ctx.teacher, fraud_ctx)
    tight.apply(fraud_ctx.teacher, fraud_ctx)
    fits = {e["shape"]: e["fits"] for e in loose.table}
    fits_tight = {e["shape"]: e["fits"] for e in tight.table}
    both = fits.keys() & fits_tight.keys()
    assert all(fits[s] for s in both if fits_tight[s])
    assert any(fits[s] and not fits_tight[s] for s in both)
    assert any(not e["fits_latency"] and e["fits_bytes"] for e in tight.table)
    assert all(e["p50_ms"] <= 0.3 for e in tight.table if e["fits"])
    chosen = [e for e in tight.table if e["chosen"]]
    assert len(chosen) == 1 and chosen[0]["p50_ms"] <= 0.3
    # the random phase samples the same shapes whatever the budget; their latency decides
    first = [e["shape"] for e in loose.table if e["phase"] == "random"]
    assert first == [e["shape"] for e in tight.table if e["phase"] == "random"]


def test_the_fronts_are_the_non_dominated_candidates(fraud_ctx) -> None:  # noqa: ANN001
    step = _search(n_random=6, n_evolve=2)
    step.apply(fraud_ctx.teacher, fraud_ctx)
    assert len(step.table) == 8
    for x, flag in (("bytes", "front_bytes"), ("p50_ms", "front_latency")):
        front = [e for e in step.table if e[flag]]
        assert front
        for e in step.table:
            assert e[flag] == (not _dominated(e, step.table, x)), (x, e)
        assert step.front(x) == sorted(front, key=lambda e: e[x])


def test_the_same_seed_makes_the_same_choice(fraud_ctx) -> None:  # noqa: ANN001
    runs = []
    for seed in (3, 3, 4):
        step = _search(seed=seed, budget_bytes=6000, budget_latency_ms=0.5)
        model = step.apply(fraud_ctx.teacher, fraud_ctx)
        runs.append((step.chosen, [(e["shape"], e["val_metric"]) for e in step.table], model))
    (c1, t1, m1), (c2, t2, m2), (_, t3, _) = runs
    assert c1 == c2 and t1 == t2
    x = torch.as_tensor(fraud_ctx.data.x_val[:64])
    assert torch.equal(m1(x), m2(x))
    assert [s for s, _ in t1] != [s for s, _ in t3]  # another seed samples other shapes
    assert step.describe()["params"]["chosen"]["hidden"]  # the pick reaches the manifest


def test_evolution_refines_the_best_fits(fraud_ctx) -> None:  # noqa: ANN001
    step = _search(n_random=3, n_evolve=3)
    step.apply(fraud_ctx.teacher, fraud_ctx)
    shapes = [e["shape"] for e in step.table]
    assert len(set(shapes)) == len(shapes) == 6  # no shape is trained twice
    evolved = [e for e in step.table[3:] if e["phase"] == "evolve"]
    assert evolved and all(e["phase"] == "explore" for e in step.table[3:] if e not in evolved)
    for e in evolved:
        parent = step.table[e["parent"]]
        assert parent["fits"] and e["parent"] < e["index"]


def test_market_search_samples_the_window_summary(market_ctx) -> None:  # noqa: ANN001
    from finscore.compression.nn import SummaryMLP

    step = _search(n_random=4, n_evolve=1, widths=(8, 16), spans=((0,), (10, 0), (5, 20, 0)))
    model = step.apply(market_ctx.teacher, market_ctx)
    assert isinstance(model, SummaryMLP)
    assert {tuple(e["spans"]) for e in step.table} <= {(0,), (10, 0), (5, 20, 0)}
    assert list(model.spans) == step.chosen["spans"]
    assert model.hidden == step.chosen["hidden"]


def test_summary_mlp_with_spans_10_and_window_is_the_window_mlp(market_ctx) -> None:  # noqa: ANN001
    """Spans (10, 0) over the market's relative path compute the existing students' summary."""
    from finscore.compression.market import WindowMLP, relative_path, summarize
    from finscore.compression.nn import SummaryMLP, window_summary

    x = torch.as_tensor(market_ctx.data.x_val[:16])
    assert torch.equal(window_summary(relative_path(x), (10, 0)), summarize(x))
    old = market_ctx.family.student(market_ctx.data, 8)
    assert isinstance(old, WindowMLP)
    new = SummaryMLP(x.shape[-1], old.hidden, 3, spans=(10, 0), transform=relative_path)
    new.load_state_dict(old.state_dict())
    assert torch.equal(new(x), old(x))


def test_search_plans_use_both_budgets() -> None:
    from finscore.compression.plans import PLAN_NAMES, fraud_plan, market_plan

    assert "search" in PLAN_NAMES
    for make in (fraud_plan, market_plan):
        first = make("search", 4, 2, 0).steps[0].describe()
        assert first["step"] == "budgeted_search"
        assert first["params"]["budget_bytes"] and first["params"]["budget_latency_ms"]
    assert fraud_plan("default", 4, 2, 0).steps[0].name == "architecture_search"  # unchanged


def test_the_report_shows_the_search_and_its_fronts(fraud_ctx, tmp_path) -> None:  # noqa: ANN001
    from finscore.compression.plan import Gate, Plan
    from finscore.compression.report import write_report

    plan = Plan([_search(n_random=3, n_evolve=1, budget_bytes=6000)], epochs=1)
    result = plan.run(fraud_ctx.family, fraud_ctx.data, Gate("ap", 1.0), teacher=fraud_ctx.teacher)
    text = write_report(result, tmp_path, "search").read_text()
    assert "Budgeted architecture search" in text and "Pareto" in text
    assert (tmp_path / "search-size.svg").exists() and (tmp_path / "search-latency.svg").exists()
    assert result.candidates[1].steps[0]["params"]["chosen"]["hidden"]


def test_the_pick_is_the_best_finalist_after_full_training(fraud_ctx) -> None:  # noqa: ANN001
    step = _search(n_random=4, n_evolve=0, finalists=2, search_epochs=1, epochs=2)
    step.apply(fraud_ctx.teacher, fraud_ctx)
    finalists = [e for e in step.table if "final_val_metric" in e]
    fitting = sorted((e for e in step.table if e["fits"]), key=lambda e: -e["val_metric"])
    assert [e["index"] for e in finalists] == sorted(e["index"] for e in fitting[:2])
    (chosen,) = [e for e in step.table if e["chosen"]]
    assert chosen["final_val_metric"] == max(e["final_val_metric"] for e in finalists)

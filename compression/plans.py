"""Every named compression plan, in one place.

Each function returns a :class:`~finscore.compression.plan.Plan`; the caller chooses epochs and
seed. Who uses which:

=====================  ===============================================  ======================
plan                   what it is                                       used by
=====================  ===============================================  ======================
``fraud_quick``        width-32 student, a quarter pruned, shared       ``finscore compress
                       weights, static int8                             fraud --plan quick``
``fraud_default``      width search under 16 kB, pruned, shared,        ``--plan default``,
                       both int8 quantisations                          the benchmark
``market_quick``       width-16 student, half pruned, dynamic int8      ``finscore compress
                                                                        market --plan quick``
``market_default``     width search, half pruned, both int8             ``--plan default``
``fraud_search``       budgeted search (16 kB, 0.1 ms), then as         ``--plan search``
                       ``fraud_default``
``market_search``      budgeted search incl. the window summary         ``--plan search``
                       (32 kB, 0.2 ms), then as ``market_default``
``fraud_recompress``   the sidecar's fraud recompression (width 64)     ``finscore sidecar``
``market_recompress``  the sidecar's market recompression (width 32)    ``finscore sidecar``
=====================  ===============================================  ======================

The sidecar's plans differ from the command's on purpose and keep their own names: they run
unattended on a small recent window, with the library's default fine-tuning (lr 5e-4,
alpha 0.5), and their gate picks the best compressed candidate when none is within tolerance
(:func:`finscore.app.sidecar.gate.gated_candidate`). Their dynamic int8 candidate never deploys
(its outputs depend on the batch), so what they publish is an fp32 student.
"""

from __future__ import annotations

from finscore.compression.plan import Plan
from finscore.compression.search import BudgetedSearch
from finscore.compression.steps import (
    ArchitectureSearch,
    Distill,
    PruneStructured,
    PruneUnstructured,
    QuantizeDynamic,
    QuantizeStatic,
    WeightShare,
)

__all__ = [
    "PLAN_NAMES",
    "fraud_default",
    "fraud_plan",
    "fraud_quick",
    "fraud_recompress",
    "fraud_search",
    "market_default",
    "market_plan",
    "market_quick",
    "market_recompress",
    "market_search",
]

#: The names ``finscore compress --plan`` accepts.
PLAN_NAMES = ("quick", "default", "search")


def fraud_quick(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """One width-32 student distilled at a high learning rate (T = 2, alpha = 0.9, lr 5e-3), a
    quarter of its neurons pruned, weights shared (32 clusters), both fine-tuned by
    distillation (lr 2e-3, alpha 0.9), and static int8 (the README tour, demos). It passes its
    gate (validation AP within 0.05 of the teacher's) on its default data with a margin: seeds
    0-2 lose 0.001-0.011 AP. The former recipe (lr 1e-3, half the neurons pruned, dynamic int8)
    lost 0.05-0.2: too slow a student for 10 epochs, too aggressive a pruning, and dynamic int8
    never deploys (its outputs depend on the batch)."""
    steps = [
        Distill(32, temperature=2.0, alpha=0.9, lr=5e-3),
        PruneStructured(0.25, 3),
        WeightShare(32, 3),
        QuantizeStatic(1024),
    ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed,
                fine_tune_lr=2e-3, fine_tune_alpha=0.9)  # fmt: skip


def fraud_default(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """A width search under 16 kB distilled at a high learning rate (T = 2, alpha = 0.9), then
    structured pruning and weight sharing (64 clusters) fine-tuned by distillation for
    ``max(2, epochs // 4)`` epochs each, and both int8 quantisations branching from the pruned
    model (the benchmark's plan). No unstructured pruning: with weight sharing every weight
    costs one byte, zero or not, so it saves nothing and cost validation AP on the handbook
    data."""
    ft = max(2, epochs // 4)
    steps = [
        ArchitectureSearch(
            (16, 32, 64, (32, 32, 16)), budget_bytes=16_000, temperature=2.0, alpha=0.9, lr=5e-3
        ),
        PruneStructured(0.25, ft),
        WeightShare(64, ft),
        QuantizeDynamic(),
        QuantizeStatic(2048),
    ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed,
                fine_tune_lr=2e-3, fine_tune_alpha=0.9)  # fmt: skip


def market_quick(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """A width-16 student, half its weights pruned (one fine-tune epoch), dynamic int8."""
    steps = [Distill(16), PruneUnstructured(0.5, 1), QuantizeDynamic()]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed)


def market_default(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """A width search (8, 16, 32), half the weights pruned (two fine-tune epochs), both int8
    quantisations."""
    steps = [
        ArchitectureSearch((8, 16, 32)),
        PruneUnstructured(0.5, 2),
        QuantizeDynamic(),
        QuantizeStatic(1024),
    ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed)


def fraud_search(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """:func:`fraud_default` with a budgeted architecture search instead of its 4-shape grid:
    16 seeded shapes (8 random, 8 evolved; depth 1-3 × widths 4-128, non-increasing), each
    distilled ``max(2, epochs // 10)`` epochs (T = 2, alpha = 0.9, lr 5e-3), under 16 kB and a
    batch-1 p50 of 0.1 ms (a guard: fraud students take ~0.01 ms on one core, so measurement
    noise does not decide); the best 3 are distilled ``epochs`` epochs and the best of those
    is pruned, shared and quantised as in :func:`fraud_default` (see docs/BENCHMARKS.md,
    "Budgeted architecture search")."""
    plan = fraud_default(epochs, teacher_epochs, seed)
    plan.steps[0] = BudgetedSearch(
        16_000, 0.1, search_epochs=max(2, epochs // 10), finalists=3, temperature=2.0,
        alpha=0.9, lr=5e-3,
    )  # fmt: skip
    return plan


def market_search(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """:func:`market_default` with a budgeted architecture search instead of its width grid:
    16 seeded shapes (8 random, 8 evolved; depth 1-3 × widths 8-64 × the window summary's
    spans, :data:`~finscore.compression.search.DEFAULT_SPANS`), each distilled
    ``max(1, epochs // 10)`` epochs, under 32 kB and a batch-1 p50 of 0.2 ms (a guard: market
    students take 0.01-0.04 ms on one core); the best 3 are distilled ``epochs`` epochs and
    the best of those is pruned and quantised as in :func:`market_default`."""
    plan = market_default(epochs, teacher_epochs, seed)
    plan.steps[0] = BudgetedSearch(
        32_000, 0.2, widths=(8, 16, 32, 64), search_epochs=max(1, epochs // 10), finalists=3
    )
    return plan


def fraud_recompress(epochs: int, seed: int = 0) -> Plan:
    """The sidecar's fraud recompression on its recent labelled window: a width-64 student, a
    quarter of the neurons pruned (4 fine-tune epochs), 16 shared weights (3), dynamic int8;
    teacher and students train ``epochs`` epochs (small windows need many)."""
    steps = [Distill(64), PruneStructured(0.25, 4), WeightShare(16, 3), QuantizeDynamic()]
    return Plan(steps, teacher_epochs=epochs, epochs=epochs, seed=seed)


def market_recompress(epochs: int, seed: int = 0) -> Plan:
    """The sidecar's market recompression on its recent book history: a width-32 student, half
    its weights pruned (2 fine-tune epochs), dynamic int8; teacher and students train
    ``epochs`` epochs."""
    steps = [Distill(32), PruneUnstructured(0.5, 2), QuantizeDynamic()]
    return Plan(steps, teacher_epochs=epochs, epochs=epochs, seed=seed)


def fraud_plan(name: str, epochs: int, teacher_epochs: int, seed: int) -> Plan:
    """``finscore compress fraud``'s plan by name: :func:`fraud_quick` for ``quick``,
    :func:`fraud_search` for ``search``, else :func:`fraud_default` (as it always chose)."""
    make = {"quick": fraud_quick, "search": fraud_search}.get(name, fraud_default)
    return make(epochs, teacher_epochs, seed)


def market_plan(name: str, epochs: int, teacher_epochs: int, seed: int) -> Plan:
    """``finscore compress market``'s plan by name: :func:`market_quick` for ``quick``,
    :func:`market_search` for ``search``, else :func:`market_default`."""
    make = {"quick": market_quick, "search": market_search}.get(name, market_default)
    return make(epochs, teacher_epochs, seed)

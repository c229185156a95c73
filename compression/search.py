"""Budgeted architecture search: random sampling plus evolutionary refinement of student shapes
under a byte and a measured-latency budget, with the Pareto fronts of what it tried.

:class:`BudgetedSearch` is a torch-stage :class:`~finscore.compression.steps.CompressionStep`
(usable in any :class:`~finscore.compression.plan.Plan`). Its space: MLP depth × hidden widths
(non-increasing by default) and, for windowed inputs ``[N, T, W]`` (the market family), the
window summary's spans (:class:`~finscore.compression.nn.SummaryMLP`: the last row plus the
mean of the last ``s`` rows for each span, ``0`` = the whole window).

Evaluation budget: ``n_random`` seeded random shapes, then ``n_evolve`` mutations of the best
fitting ones (a parent drawn from the top three by validation metric; one change: a width one
step up or down, a layer added or removed, other spans; a random shape, phase ``explore``, when
nothing fits yet or 50 mutations gave only shapes already trained or over the byte budget),
each distilled for ``search_epochs``
(optionally on ``search_rows`` training rows); no shape is trained twice. Shapes whose exported
ONNX exceeds ``budget_bytes`` are refused before training (the size of a shape does not depend
on its weights), so every trained candidate can be chosen on size. Every trained candidate is
measured: exported ONNX bytes, batch-1 p50 latency (ONNX Runtime, 1 thread, the batch-1 part
of :func:`~finscore.compression.export.measure_latency`), validation metric. The
``finalists`` best candidates within both budgets (by search validation metric; ties: fewer
bytes, then the earlier candidate) are retrained with the plan's epochs on all rows (a
two-fidelity search: short training ranks, full training decides among the few best;
``final_val_metric`` in the table) and the pick is the finalist with the best validation
metric; its shape is recorded as ``chosen`` in the step's params (so in the manifest), the
table of candidates in ``ctx.log`` (so in the run's report, with both Pareto fronts).

Determinism: sampling, mutation, training and the choice are seeded (``seed``, else the plan's).
Latency is never a ranking criterion, only a filter against ``budget_latency_ms``; a measured
p50 within ``latency_margin`` (relative) of the budget is flagged ``latency_marginal`` in the
table, and when such a candidate could change the pick (a finalist is marginal, or one that
would have been a finalist was excluded as marginal) the step's ``latency_decided`` param is true: only then can
measurement noise change the choice (move the budget away from the flagged p50s). Tests inject
``latency_fn`` for a deterministic latency.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from finscore.compression.exceptions import CompressionError
from finscore.compression.family import TrainData
from finscore.compression.nn import SummaryMLP, count_params, seed_everything
from finscore.compression.steps import CompressionStep, StepContext

__all__ = ["DEFAULT_SPANS", "BudgetedSearch", "Shape", "batch1_p50_ms"]

#: Window-summary options searched for windowed inputs: the last row with the mean of the
#: window; with the mean of the last 10 (and the window: the market students' summary); ...
DEFAULT_SPANS: tuple[tuple[int, ...], ...] = ((), (0,), (10,), (10, 0), (5, 20, 0), (20, 50, 0))

LatencyFn = Callable[[bytes, np.ndarray], float]


@dataclasses.dataclass(frozen=True)
class Shape:
    """A student shape: hidden widths and, for windowed inputs, the summary's spans."""

    hidden: tuple[int, ...]
    spans: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        """``"32-16"``, or ``"32-16 [last+10+all]"`` with spans (``all``: the window)."""
        if self.spans is None:
            return "-".join(map(str, self.hidden))
        parts = ["last"] + ["all" if s <= 0 else str(s) for s in self.spans]
        return "-".join(map(str, self.hidden)) + " [" + "+".join(parts) + "]"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hidden": list(self.hidden)}
        if self.spans is not None:
            out["spans"] = list(self.spans)
        return out


def batch1_p50_ms(model: bytes, row: np.ndarray, repeats: int = 200) -> float:
    """Batch-1 p50 (ms) of ``model`` on ``row`` over ``repeats`` runs after 20 warm-ups, ONNX
    Runtime with 1 intra-op thread: :func:`~finscore.compression.export.measure_latency`'s
    ``p50_ms`` without its batch throughput (half a second per model)."""
    from finscore.compression.export import session

    s = session(model, threads=1)
    name = s.get_inputs()[0].name
    one = {name: row[None, ...].astype(np.float32)}
    for _ in range(20):
        s.run(None, one)
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        s.run(None, one)
        times[i] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1000)


class BudgetedSearch(CompressionStep):
    """Search student shapes under ``budget_bytes`` and ``budget_latency_ms`` (None: no limit).

    See the module docstring for the space, the evaluation budget and determinism. After
    :meth:`apply`: ``chosen`` (params: the picked shape), :attr:`table` (every trained
    candidate, also appended to ``ctx.log``) and :meth:`front`. Raises :class:`CompressionError`
    when no candidate fits (with the smallest bytes / fastest p50 seen in the hint).

    ``depths``/``widths``: the MLP space (``funnel``: hidden widths non-increasing);
    ``spans``: the window-summary options for windowed inputs (None: :data:`DEFAULT_SPANS`);
    ignored for tabular inputs. ``n_random``/``n_evolve``: the evaluation budget;
    ``search_epochs``: each candidate's training, on ``search_rows`` random training rows
    (None: all); ``finalists``: how many of the best are retrained for ``epochs`` (None: the
    plan's) to decide the pick (with 1 and ``epochs == search_epochs`` on all rows the searched
    model itself is returned); ``temperature``/``alpha``/``lr``: distillation, as
    :class:`~finscore.compression.steps.Distill`; ``seed``: the sampling seed (None: the
    plan's). ``latency_repeats``: batch-1 runs per measurement; ``latency_margin``: the
    relative band around ``budget_latency_ms`` flagged as marginal; ``latency_fn(onnx, row) ->
    p50 ms`` replaces the measurement (tests, or a deterministic proxy; not recorded).
    """

    name = "budgeted_search"

    def __init__(
        self,
        budget_bytes: int | None = None,
        budget_latency_ms: float | None = None,
        *,
        depths: Sequence[int] = (1, 2, 3),
        widths: Sequence[int] = (4, 8, 16, 32, 64, 128),
        spans: Sequence[Sequence[int]] | None = None,
        funnel: bool = True,
        n_random: int = 8,
        n_evolve: int = 8,
        search_epochs: int = 2,
        epochs: int | None = None,
        search_rows: int | None = None,
        temperature: float = 4.0,
        alpha: float = 0.7,
        lr: float = 1e-3,
        seed: int | None = None,
        latency_repeats: int = 200,
        latency_margin: float = 0.1,
        latency_fn: LatencyFn | None = None,
        finalists: int = 1,
    ) -> None:
        if not depths or not widths or min(depths) < 1:
            raise ValueError("depths (>= 1) and widths must not be empty")
        self.budget_bytes, self.budget_latency_ms = budget_bytes, budget_latency_ms
        self.depths = sorted({int(d) for d in depths})
        self.widths = sorted({int(w) for w in widths})
        self.spans = [list(s) for s in (spans if spans is not None else DEFAULT_SPANS)]
        self.funnel = funnel
        self.n_random, self.n_evolve = n_random, n_evolve
        self.search_epochs, self.epochs, self.search_rows = search_epochs, epochs, search_rows
        self.temperature, self.alpha, self.lr, self.seed = temperature, alpha, lr, seed
        self.latency_repeats, self.latency_margin = latency_repeats, latency_margin
        self._latency_fn = latency_fn
        self.finalists = finalists
        self.chosen: dict[str, Any] | None = None
        self.latency_decided = False
        self._table: list[dict[str, Any]] = []
        self._n_out: int | None = None

    # -- results ------------------------------------------------------------------------------
    @property
    def table(self) -> list[dict[str, Any]]:
        """Every trained candidate of the last :meth:`apply`, in evaluation order."""
        return self._table

    def front(self, x: str = "bytes") -> list[dict[str, Any]]:
        """The Pareto front of :attr:`table` for ``x`` (``"bytes"`` or ``"p50_ms"``, minimised)
        against the validation metric (maximised), by increasing ``x``."""
        flag = "front_bytes" if x == "bytes" else "front_latency"
        return sorted((e for e in self._table if e[flag]), key=lambda e: e[x])

    # -- the space ----------------------------------------------------------------------------
    def _normal(self, hidden: Sequence[int], spans: tuple[int, ...] | None) -> Shape:
        h = tuple(sorted(hidden, reverse=True)) if self.funnel else tuple(hidden)
        return Shape(h, spans)

    def _random(self, rng: np.random.Generator, windowed: bool) -> Shape:
        depth = int(rng.choice(self.depths))
        hidden = [int(rng.choice(self.widths)) for _ in range(depth)]
        spans = tuple(self.spans[int(rng.integers(len(self.spans)))]) if windowed else None
        return self._normal(hidden, spans)

    def _mutate(self, shape: Shape, rng: np.random.Generator) -> Shape:
        hidden, spans = list(shape.hidden), shape.spans
        ops = ["width"]
        if len(hidden) < max(self.depths):
            ops.append("add")
        if len(hidden) > min(self.depths):
            ops.append("remove")
        if spans is not None and len(self.spans) > 1:
            ops.append("spans")
        op = ops[int(rng.integers(len(ops)))]
        i = int(rng.integers(len(hidden)))
        if op == "width":
            pos = int(np.searchsorted(self.widths, hidden[i]))
            step = 1 if rng.random() < 0.5 else -1
            hidden[i] = self.widths[int(np.clip(pos + step, 0, len(self.widths) - 1))]
        elif op == "add":
            hidden.insert(i, hidden[i])
        elif op == "remove":
            del hidden[i]
        else:
            others = [tuple(s) for s in self.spans if tuple(s) != spans]
            spans = others[int(rng.integers(len(others)))]
        return self._normal(hidden, spans)

    # -- one candidate ------------------------------------------------------------------------
    def _student(self, shape: Shape, ctx: StepContext) -> nn.Module:
        if shape.spans is None:
            return ctx.family.student(ctx.data, shape.hidden)  # type: ignore[arg-type]
        transform = None
        from finscore.compression.market import MarketFamily, relative_path

        if isinstance(ctx.family, MarketFamily):
            transform = relative_path
        x = ctx.data.x_train
        if self._n_out is None:  # the family's head: what its own students output
            self._n_out = int(getattr(ctx.family.student(ctx.data, 4), "n_out", 1))
        n_out = self._n_out
        probe = SummaryMLP(x.shape[-1], [1], n_out, spans=shape.spans, transform=transform)
        with torch.no_grad():
            s = probe.summary(torch.as_tensor(x[:4096], dtype=torch.float32)).numpy()
        return SummaryMLP(x.shape[-1], list(shape.hidden), n_out, s.mean(0), s.std(0),
                          spans=shape.spans, transform=transform)  # fmt: skip

    def _export(self, model: nn.Module, ctx: StepContext) -> bytes:
        from finscore.compression.export import export_onnx

        fam = ctx.family
        return export_onnx(fam.head(model), ctx.data.x_val, fam.input_name, fam.output_name)

    def _train(
        self, shape: Shape, ctx: StepContext, data: TrainData, soft: np.ndarray, epochs: int
    ) -> nn.Module:
        seed_everything(ctx.seed)
        return ctx.family.train(
            self._student(shape, ctx), data, epochs=epochs, seed=ctx.seed, soft=soft,
            temperature=self.temperature, alpha=self.alpha, lr=self.lr,
        )  # fmt: skip

    def _latency(self, onnx: bytes, row: np.ndarray) -> float:
        if self._latency_fn is not None:
            return float(self._latency_fn(onnx, row))
        return batch1_p50_ms(onnx, row, self.latency_repeats)

    # -- the search ---------------------------------------------------------------------------
    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from finscore.compression.export import run_onnx

        fam, data = ctx.family, ctx.data
        windowed = data.x_train.ndim == 3
        rng = np.random.default_rng(ctx.seed if self.seed is None else self.seed)
        soft = ctx.soft() if model is ctx.teacher else fam.logits(model, data.x_train)
        search_data, search_soft = data, soft
        if self.search_rows is not None and self.search_rows < len(data.x_train):
            idx = np.sort(rng.choice(len(data.x_train), self.search_rows, replace=False))
            search_data = dataclasses.replace(
                data, x_train=data.x_train[idx], y_train=data.y_train[idx]
            )
            search_soft = soft[idx]
        sizes: dict[Shape, int] = {}  # bytes of every shape looked at (trained or refused)
        table: list[dict[str, Any]] = []
        models: list[nn.Module] = []
        trained: set[Shape] = set()
        self._table, self.chosen, self.latency_decided = table, None, False
        self._n_out = None

        def size(shape: Shape) -> int:
            if shape not in sizes:
                sizes[shape] = len(self._export(self._student(shape, ctx), ctx))
            return sizes[shape]

        def admissible(shape: Shape) -> bool:
            return shape not in trained and (
                self.budget_bytes is None or size(shape) <= self.budget_bytes
            )

        def evaluate(shape: Shape, phase: str, parent: int | None) -> None:
            student = self._train(shape, ctx, search_data, search_soft, self.search_epochs)
            onnx = self._export(student, ctx)
            p50 = self._latency(onnx, data.x_val[0])
            metric = float(fam.evaluate(run_onnx(onnx, data.x_val), data, split="val")[fam.metric])
            fits_b = self.budget_bytes is None or len(onnx) <= self.budget_bytes
            fits_l = self.budget_latency_ms is None or p50 <= self.budget_latency_ms
            marginal = self.budget_latency_ms is not None and (
                abs(p50 - self.budget_latency_ms) <= self.latency_margin * self.budget_latency_ms
            )
            table.append({
                "step": self.name, "index": len(table), "phase": phase, "parent": parent,
                "shape": shape.label, **shape.describe(), "width": shape.label,
                "params": count_params(student), "bytes": len(onnx), "p50_ms": p50,
                "latency": {"p50_ms": p50}, "val_metric": metric, "metric": fam.metric,
                "fits_bytes": fits_b, "fits_latency": fits_l, "latency_marginal": marginal,
                "fits": fits_b and fits_l, "front_bytes": False, "front_latency": False,
                "chosen": False,
            })  # fmt: skip
            models.append(student)
            trained.add(shape)

        for _ in range(self.n_random):  # random phase
            for _attempt in range(200):
                shape = self._random(rng, windowed)
                if admissible(shape):
                    evaluate(shape, "random", None)
                    break
        for _ in range(self.n_evolve):  # evolutionary refinement of the best fits
            parents = sorted(
                (e for e in table if e["fits"]), key=lambda e: (-e["val_metric"], e["index"])
            )[:3]
            for attempt in range(200):
                if parents and attempt < 50:
                    p = parents[int(rng.integers(len(parents)))]
                    shape, parent = self._mutate(_shape_of(p), rng), p["index"]
                else:  # nothing fits yet, or the parents' neighbours are spent: explore
                    shape, parent = self._random(rng, windowed), None
                if admissible(shape):
                    evaluate(shape, "evolve" if parent is not None else "explore", parent)
                    break
        self._mark_fronts(table)
        fitting = [e for e in table if e["fits"]]
        if not fitting:
            raise self._refusal(table, sizes)
        ranked = sorted(fitting, key=lambda e: (-e["val_metric"], e["bytes"], e["index"]))
        final_epochs = self.epochs or ctx.epochs
        reuse = final_epochs == self.search_epochs and search_data is data
        finalists = ranked[: max(1, self.finalists)]
        final: dict[int, nn.Module] = {}
        for e in finalists:  # the best few, trained as the plan trains its students
            if reuse:
                final[e["index"]] = models[e["index"]]
                e["final_val_metric"] = e["val_metric"]
                continue
            final[e["index"]] = self._train(_shape_of(e), ctx, data, soft, final_epochs)
            outputs = run_onnx(self._export(final[e["index"]], ctx), data.x_val)
            e["final_val_metric"] = float(fam.evaluate(outputs, data, split="val")[fam.metric])
        best = max(
            finalists, key=lambda e: (e["final_val_metric"], -e["bytes"], -e["index"])
        ) if len(finalists) > 1 else finalists[0]  # fmt: skip
        best["chosen"] = True
        self.chosen = {**_shape_of(best).describe(), "label": best["shape"]}
        self.latency_decided = bool(
            any(e["latency_marginal"] for e in finalists)
            or any(
                e["latency_marginal"] and e["fits_bytes"] and not e["fits_latency"]
                and e["val_metric"] > finalists[-1]["val_metric"]
                for e in table
            )
        )  # fmt: skip
        ctx.log.extend(table)
        return final[best["index"]]

    @staticmethod
    def _mark_fronts(table: list[dict[str, Any]]) -> None:
        from finscore.compression.report import pareto

        for x, flag in (("bytes", "front_bytes"), ("p50_ms", "front_latency")):
            for i in pareto([(float(e[x]), float(e["val_metric"])) for e in table]):
                table[i][flag] = True

    def _refusal(self, table: list[dict[str, Any]], sizes: dict[Shape, int]) -> CompressionError:
        if not table:
            smallest = min(sizes.values()) if sizes else 0
            return CompressionError(
                f"no student shape fits budget_bytes={self.budget_bytes} (the smallest shape "
                f"tried takes {smallest:,} bytes)",
                hint=f"raise budget_bytes to at least {smallest:,} or search smaller widths/depths",
            )
        small = min(e["bytes"] for e in table)
        fast = min(e["p50_ms"] for e in table)
        return CompressionError(
            f"none of {len(table)} student shapes fits the budgets (budget_bytes="
            f"{self.budget_bytes}, budget_latency_ms={self.budget_latency_ms}); smallest "
            f"{small:,} bytes, fastest p50 {fast:.4f} ms",
            hint=f"raise budget_latency_ms above {fast:.4f} ms or budget_bytes above {small:,}, "
            "or search smaller widths/depths",
        )


def _shape_of(entry: dict[str, Any]) -> Shape:
    spans = entry.get("spans")
    return Shape(tuple(entry["hidden"]), tuple(spans) if spans is not None else None)

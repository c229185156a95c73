"""Budgeted architecture search against the old 4-point grid, on the same data and teacher.

For each family: train a teacher, then (a) the budgeted search
(:class:`~finscore.compression.search.BudgetedSearch`: seeded random shapes plus evolutionary
refinement, short search training, the pick retrained with ``--epochs``) and (b) the grid the
default plan uses (:class:`~finscore.compression.steps.ArchitectureSearch`, every shape trained
``--epochs``) under the same byte and latency budgets and distillation settings. Prints the
search's candidate table, its two Pareto fronts (bytes vs validation metric, batch-1 p50 vs
validation metric) and the comparison (the choice, its validation and test metric, bytes, p50,
student epochs spent, seconds); writes ``bench.json`` under ``--out``::

    .venv/bin/python bench/architecture_search.py --family fraud
    FINSCORE_DATA_DIR=/work/shared/data .venv/bin/python bench/architecture_search.py --family market

Fraud: the transaction simulator (``finscore compress fraud --plan quick``'s data, 1,500
customers × 60 days, and its teacher). Market: the LOBSTER GOOG sample when the data folder has
it (window 100, horizon 10, ``--market-train`` training windows), else the book simulator.
Latency: ONNX Runtime, 1 intra-op thread, this machine; torch 1 thread.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from finscore.compression.nn import seed_everything

#: The grids of the default plans (compression/plans.py) and the distillation settings.
FRAUD_GRID: tuple[Any, ...] = (16, 32, 64, (32, 32, 16))
MARKET_GRID: tuple[Any, ...] = (8, 16, 32)
FRAUD_DISTIL = {"temperature": 2.0, "alpha": 0.9, "lr": 5e-3}
MARKET_DISTIL: dict[str, float] = {}


def _fraud(data_dir: Path | None, teacher_epochs: int) -> tuple[Any, Any, Any, str]:
    from finscore.compression.fraud import FraudFamily

    fam = FraudFamily(teacher_hidden=(128, 64), members=1)
    data = fam.load_data("sim", n_customers=1500, days=60, seed=0)
    seed_everything(0)
    teacher = fam.train(fam.teacher(data), data, epochs=teacher_epochs, seed=0)
    return fam, data, teacher, "fraud simulator (1,500 customers × 60 days, data seed 0)"


def _market(data_dir: Path | None, teacher_epochs: int, max_train: int) -> tuple[Any, ...]:
    from finscore.compression.market import MarketFamily

    fam = MarketFamily(window=100, horizon=10)
    try:
        data = fam.load_data("lobster", data_dir=data_dir, quick=True, max_train=max_train)
        what = f"LOBSTER GOOG 2012-06-21 (window 100, horizon 10, {len(data.x_train):,} train)"
    except (FileNotFoundError, OSError) as exc:
        click.echo(f"no LOBSTER data ({exc}); using the book simulator")
        fam = MarketFamily(window=50, horizon=10)
        data = fam.load_data("sim", quick=True, max_train=max_train)
        what = f"book simulator (window 50, horizon 10, {len(data.x_train):,} train)"
    seed_everything(0)
    teacher = fam.train(fam.teacher(data), data, epochs=teacher_epochs, seed=0)
    return fam, data, teacher, what


def _measure(model: Any, fam: Any, data: Any) -> dict[str, Any]:
    from finscore.compression.export import export_onnx, run_onnx
    from finscore.compression.nn import count_params
    from finscore.compression.search import batch1_p50_ms

    onnx = export_onnx(fam.head(model), data.x_val, fam.input_name, fam.output_name)
    return {
        "val": float(fam.evaluate(run_onnx(onnx, data.x_val), data, split="val")[fam.metric]),
        "test": float(fam.evaluate(run_onnx(onnx, data.x_test), data)[fam.metric]),
        "bytes": len(onnx),
        "p50_ms": batch1_p50_ms(onnx, data.x_val[0], 500),
        "params": count_params(model),
    }


def _grid_label(w: Any, windowed: bool) -> str:
    """A grid entry as the search labels shapes (an int width: hidden (w, max(4, w // 2)))."""
    hidden = [w, max(4, w // 2)] if isinstance(w, int) else list(w)
    return "-".join(map(str, hidden)) + (" [last+10+all]" if windowed else "")


def run_family(
    family: str, *, data_dir: Path | None, seeds: list[int], epochs: int, search_epochs: int,
    n_random: int, n_evolve: int, finalists: int, budget_bytes: int, budget_latency_ms: float,
    teacher_epochs: int, max_train: int,
) -> dict[str, Any]:  # fmt: skip
    """One teacher (seed 0), then for every seed the budgeted search and the grid on one
    family's data; prints the first seed's candidate table and fronts and the comparison;
    returns the bench's JSON for the family."""
    from finscore.compression.report import search_fronts, search_table
    from finscore.compression.search import BudgetedSearch
    from finscore.compression.steps import ArchitectureSearch, StepContext

    t0 = time.time()
    widths: tuple[int, ...]
    if family == "fraud":
        fam, data, teacher, what = _fraud(data_dir, teacher_epochs)
        grid, distil, widths = FRAUD_GRID, FRAUD_DISTIL, (4, 8, 16, 32, 64, 128)
    else:
        fam, data, teacher, what = _market(data_dir, teacher_epochs, max_train)
        grid, distil, widths = MARKET_GRID, MARKET_DISTIL, (8, 16, 32, 64)
    windowed = data.x_train.ndim == 3
    t_teacher = time.time() - t0
    click.echo(f"{family}: {what}; teacher {teacher_epochs} epochs in {t_teacher:.0f} s")
    rows = [{**_measure(teacher, fam, data), "seed": 0, "method": "teacher",
             "choice": type(teacher).__name__, "epochs": teacher_epochs,
             "seconds": round(t_teacher, 1)}]  # fmt: skip
    runs = []
    for seed in seeds:
        search = BudgetedSearch(
            budget_bytes, budget_latency_ms, widths=widths, n_random=n_random,
            n_evolve=n_evolve, search_epochs=search_epochs, epochs=epochs, finalists=finalists,
            **distil,  # type: ignore[arg-type]
        )  # fmt: skip
        t1 = time.time()
        picked = search.apply(teacher, StepContext(fam, data, teacher, seed=seed, epochs=epochs))
        t_search = time.time() - t1
        old = ArchitectureSearch(grid, budget_bytes=budget_bytes,
                                 budget_latency_ms=budget_latency_ms, epochs=epochs, **distil)  # fmt: skip
        grid_ctx = StepContext(fam, data, teacher, seed=seed, epochs=epochs)
        t2 = time.time()
        gridded = old.apply(teacher, grid_ctx)
        t_grid = time.time() - t2
        table = search.table
        if seed == seeds[0]:
            click.echo(f"\n{family}: budgeted search, seed {seed} ({len(table)} candidates, "
                       f"{search_epochs} epochs each; budgets {budget_bytes:,} bytes, "
                       f"{budget_latency_ms} ms)\n")  # fmt: skip
            click.echo("\n".join(search_table(table)))
            click.echo("\n" + "\n".join(search_fronts(table)))
        assert search.chosen is not None
        rows.append({**_measure(picked, fam, data), "seed": seed, "method": "budgeted search",
                     "choice": search.chosen["label"],
                     "epochs": len(table) * search_epochs
                     + sum("final_val_metric" in e for e in table) * epochs,
                     "seconds": round(t_search, 1)})  # fmt: skip
        rows.append({**_measure(gridded, fam, data), "seed": seed, "method": "old grid",
                     "choice": _grid_label(old.chosen_width, windowed),
                     "epochs": len(grid) * epochs, "seconds": round(t_grid, 1)})  # fmt: skip
        grid_log = [{**e, "shape": _grid_label(e["width"], windowed)} for e in grid_ctx.log]
        click.echo(f"seed {seed}: old grid (every shape {epochs} epochs): " + "; ".join(
            f"{e['shape']}: {e['bytes']:,} B, val {e['val_metric']:.4f}, fits {e['fits']}"
            for e in grid_log))  # fmt: skip
        runs.append({"seed": seed, "search": table, "chosen": search.chosen,
                     "latency_decided": search.latency_decided, "grid": grid_log})  # fmt: skip
    click.echo(f"\n| {family} | seed | choice | val {fam.metric} | test {fam.metric} | bytes "
               "| p50 ms | student epochs | seconds |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        click.echo(f"| {r['method']} | {r['seed']} | {r['choice']} | {r['val']:.4f} | "
                   f"{r['test']:.4f} | {r['bytes']:,} | {r['p50_ms']:.4f} | {r['epochs']} | "
                   f"{r['seconds']} |")  # fmt: skip
    for method in ("budgeted search", "old grid"):
        got = [r for r in rows if r["method"] == method]
        click.echo(f"mean over seeds, {method}: val {np.mean([r['val'] for r in got]):.4f}, "
                   f"test {np.mean([r['test'] for r in got]):.4f}, "
                   f"bytes {np.mean([r['bytes'] for r in got]):,.0f}, "
                   f"seconds {np.mean([r['seconds'] for r in got]):.1f}")  # fmt: skip
    return {
        "family": family, "data": what, "seeds": seeds, "epochs": epochs,
        "search_epochs": search_epochs, "budget_bytes": budget_bytes,
        "budget_latency_ms": budget_latency_ms, "runs": runs, "compare": rows,
        "seconds": round(time.time() - t0, 1),
    }  # fmt: skip


@click.command()
@click.option("--family", type=click.Choice(["fraud", "market", "both"]), default="both")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding lobster_sample_2012-06-21/ (default FINSCORE_DATA_DIR).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/bench-search"))
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    help="Comma-separated search/grid seeds (one teacher, seed 0).",
)
@click.option("--epochs", type=int, default=None, help="Final / grid epochs (fraud 10, market 15).")
@click.option("--search-epochs", type=int, default=None, help="Per candidate (fraud 2, market 3).")
@click.option("--n-random", type=int, default=8, show_default=True)
@click.option("--n-evolve", type=int, default=8, show_default=True)
@click.option(
    "--finalists",
    type=int,
    default=3,
    show_default=True,
    help="The best searched shapes retrained with --epochs; the pick is the best.",
)
@click.option("--teacher-epochs", type=int, default=None, help="fraud 8, market 4.")
@click.option(
    "--budget-bytes",
    type=int,
    default=None,
    help="Override the plans' byte budget (fraud 16,000, market 32,000).",
)
@click.option(
    "--budget-latency-ms",
    type=float,
    default=None,
    help="Override the plans' latency budget (fraud 0.1, market 0.2).",
)
@click.option("--market-train", type=int, default=10_000, show_default=True,
              help="Market training windows (the teacher is the slow part).")  # fmt: skip
def main(family, data_dir, out, seeds, epochs, search_epochs, n_random, n_evolve, finalists,
         teacher_epochs, budget_bytes, budget_latency_ms, market_train) -> None:  # noqa: ANN001  # fmt: skip
    """Run the budgeted search and the old grid; print the tables, write ``bench.json``."""
    import torch

    torch.set_num_threads(1)
    env = os.environ.get("FINSCORE_DATA_DIR")
    data_dir = data_dir or (Path(env) if env else None)
    # budgets: the search plans' (compression/plans.py)
    settings = {
        "fraud": dict(epochs=epochs or 10, search_epochs=search_epochs or 2,
                      budget_bytes=16_000, budget_latency_ms=0.1,
                      teacher_epochs=teacher_epochs or 8),
        "market": dict(epochs=epochs or 15, search_epochs=search_epochs or 3,
                       budget_bytes=32_000, budget_latency_ms=0.2,
                       teacher_epochs=teacher_epochs or 4),
    }  # fmt: skip
    for fam_settings in settings.values():
        if budget_bytes is not None:
            fam_settings["budget_bytes"] = budget_bytes
        if budget_latency_ms is not None:
            fam_settings["budget_latency_ms"] = budget_latency_ms
    seed_list = [int(x) for x in str(seeds).split(",") if x.strip()]
    results = []
    for fam in ["fraud", "market"] if family == "both" else [family]:
        results.append(run_family(fam, data_dir=data_dir, seeds=seed_list, n_random=n_random,
                                  n_evolve=n_evolve, finalists=finalists,
                                  max_train=market_train,
                                  **settings[fam]))  # type: ignore[arg-type]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-{budget_bytes}" if budget_bytes is not None else ""
    path = out / f"bench-{family}{tag}.json"
    path.write_text(json.dumps(results, indent=1, default=_jsonable))
    click.echo(f"\nwrote {path}")


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)


if __name__ == "__main__":
    main()

"""Market models against the naive baselines, on the LOBSTER sample days (GOOG, AMZN).

Protocol: :meth:`MarketFamily.load_data` on the LOBSTER sample (``quick``: train 0–60 % of the
day's events, validation 60–75 %, test 75–100 %, window 100, stride 4, the last 20,000
training windows, α from the training part), for each symbol and horizon k:

* baselines (:mod:`finscore.compression.market_eval`): majority class, persistence (the label
  that ended k events ago), logistic regression on the window's mid returns;
* unless ``--no-teacher``: the DeepLOB-style teacher in the ``--layout`` feature layout, trained
  with early stopping on validation macro-F1 (``--patience``, ``--max-epochs``), checkpointed
  every epoch under ``--checkpoints`` (an interrupted run resumes), then the students
  (``--widths``) distilled from it (T = 2, α = 0.7, ``--student-epochs``), over the family's
  window summary (last row, mean of the last 10, mean of the window) or, with
  ``--student-spans``, the last row and the means of those spans (0 = the window);
* with ``--search``: also :class:`~finscore.compression.search.BudgetedSearch` distilling from
  the same teacher's logits on the same data with the students' settings (T = 2, α = 0.7,
  lr 3e-3): depth 1–3 × widths 4–128 and the window summary's spans, ``--search-random`` +
  ``--search-evolve`` shapes under ``--budget-bytes`` (exported ONNX) and, if given,
  ``--budget-latency-ms``, each trained ``--search-epochs``; the ``--search-finalists`` best
  are retrained for ``--student-epochs`` and the best on validation macro-F1 is the row
  "student, budgeted search (<shape>)"; its candidate table goes into the JSON;
* for every model: test macro-F1 / accuracy and a signal-following strategy (long UP, short
  DOWN, flat FLAT, held k events, mid to mid) — hit rate, P&L per trade and total, in ticks
  of $0.01, before costs.

Everything on the CPU with 1 torch thread::

    FINSCORE_DATA_DIR=/work/shared/data .venv/bin/python bench/market_models.py \\
        --symbols GOOG,AMZN --horizons 10,20,50 [--no-teacher] [--layout book40+mid] [--search]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from finscore.compression.family import TrainData
from finscore.compression.market import MarketFamily, relative_path
from finscore.compression.market_eval import (
    fit_returns_logistic,
    majority_baseline,
    persistence_baseline,
    score,
    signal_pnl,
    train_early_stopping,
)
from finscore.compression.nn import SummaryMLP, count_params
from finscore.compression.search import BudgetedSearch
from finscore.compression.steps import StepContext


def row(fam: MarketFamily, label: str, y: np.ndarray, pred: np.ndarray, **extra: object) -> dict:
    r = {"model": label, **{k: round(v, 4) for k, v in score(y, pred).items()}}
    r.update(
        {k: round(v, 4) if isinstance(v, float) else v for k, v in signal_pnl(fam, pred).items()}
    )
    r.update(extra)
    click.echo(json.dumps(r))
    return r


def spans_student(data: TrainData, width: int, spans: tuple[int, ...]) -> torch.nn.Module:
    """The family's student shape (hidden ``width``, ``max(4, width // 2)``) over the last row
    and the means of the last ``spans`` rows (0: the window) of the relative path; with
    ``spans=(10, 0)`` it computes what :meth:`MarketFamily.student` computes."""
    x = data.x_train
    probe = SummaryMLP(x.shape[-1], [1], 3, spans=spans, transform=relative_path)
    with torch.no_grad():
        s = probe.summary(torch.as_tensor(x[:4096], dtype=torch.float32)).numpy()
    return SummaryMLP(x.shape[-1], [width, max(4, width // 2)], 3, s.mean(0), s.std(0),
                      spans=spans, transform=relative_path)  # fmt: skip


def searched_student(
    fam: MarketFamily, data: TrainData, teacher: torch.nn.Module, soft: np.ndarray, *,
    epochs: int, seed: int, budget_bytes: int, budget_latency_ms: float | None,
    n_random: int, n_evolve: int, search_epochs: int, finalists: int,
) -> tuple[torch.nn.Module, BudgetedSearch]:  # fmt: skip
    """:class:`BudgetedSearch` on ``data`` distilling from ``teacher`` (its training logits
    ``soft``) with the fixed students' distillation (T = 2, α = 0.7, lr 3e-3), finalists
    retrained for ``epochs``; returns the picked student and the step (``chosen``, ``table``)."""
    step = BudgetedSearch(
        budget_bytes, budget_latency_ms, n_random=n_random, n_evolve=n_evolve,
        search_epochs=search_epochs, epochs=epochs, finalists=finalists,
        temperature=2.0, alpha=0.7, lr=3e-3,
    )  # fmt: skip
    ctx = StepContext(fam, data, teacher, seed=seed, epochs=epochs, teacher_soft=soft)
    return step.apply(teacher, ctx), step


@click.command()
@click.option("--symbols", default="GOOG,AMZN")
@click.option("--horizons", default="10,20,50")
@click.option("--layout", default="book40+mid", show_default=True)
@click.option("--teacher/--no-teacher", default=True)
@click.option("--max-epochs", default=30, show_default=True)
@click.option("--patience", default=4, show_default=True)
@click.option("--widths", default="64,16")
@click.option("--student-epochs", default=10, show_default=True)
@click.option("--student-spans", default="", help="e.g. 20,50,0 (default: the family's summary)")
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoints", default="var/checkpoints", type=click.Path(path_type=Path))
@click.option("--out", default="/tmp/market_models", type=click.Path(path_type=Path))
@click.option("--search/--no-search", default=False, help="also the budgeted search student")
@click.option("--budget-bytes", default=32000, show_default=True, help="ONNX bytes (search)")
@click.option("--budget-latency-ms", default=None, type=float, help="batch-1 p50 (search)")
@click.option("--search-random", default=8, show_default=True)
@click.option("--search-evolve", default=8, show_default=True)
@click.option("--search-epochs", default=3, show_default=True)
@click.option("--search-finalists", default=3, show_default=True)
def main(
    symbols: str, horizons: str, layout: str, teacher: bool, max_epochs: int, patience: int,
    widths: str, student_epochs: int, student_spans: str, seed: int, checkpoints: Path,
    out: Path, search: bool, budget_bytes: int, budget_latency_ms: float | None,
    search_random: int, search_evolve: int, search_epochs: int, search_finalists: int,
) -> None:  # fmt: skip
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    spans = tuple(int(v) for v in student_spans.split(",") if v.strip())
    summary = (
        (", summary last+" + "+".join(str(v) if v > 0 else "all" for v in spans)) if spans else ""
    )
    results = []
    for sym in symbols.split(","):
        for k in [int(h) for h in horizons.split(",")]:
            fam = MarketFamily(window=100, horizon=k, symbol=sym, layout=layout)
            data = fam.load_data("lobster", seed=seed, quick=True)
            info: dict = {"symbol": sym, "horizon": k, "layout": layout, "alpha": fam.alpha,
                          "windows": [len(data.y_train), len(data.y_val), len(data.y_test)],
                          "test_classes": np.bincount(data.y_test, minlength=3).tolist()}  # fmt: skip
            click.echo(json.dumps(info))
            y = data.y_test
            rows = [
                row(fam, "majority class", y, majority_baseline(data)),
                row(fam, "persistence (label k events ago)", y, persistence_baseline(fam)),
                row(fam, "logistic on mid returns", y, fit_returns_logistic(fam, data)[1]),
            ]
            if teacher:
                t0 = time.perf_counter()
                ck = checkpoints / f"market-{sym}-k{k}-{layout}-s{seed}.pt"
                res = train_early_stopping(
                    fam.teacher(data), data, max_epochs=max_epochs, patience=patience,
                    seed=seed, checkpoint=ck,
                    on_epoch=lambda r: click.echo(json.dumps({"epoch": vars(r)})),
                )  # fmt: skip
                info["teacher_train_s"] = round(time.perf_counter() - t0, 1)
                info["curve"] = [vars(r) for r in res.curve]
                info["best_epoch"] = res.best_epoch
                info["resumed_from"] = res.resumed_from
                logits = fam.logits(res.model, data.x_train)
                pred = fam.logits(res.model, data.x_test).argmax(1)
                rows.append(row(fam, "teacher (DeepLOB-style)", y, pred,
                                params=count_params(res.model)))  # fmt: skip
                for w in [int(v) for v in widths.split(",") if v]:
                    t0 = time.perf_counter()
                    sm = spans_student(data, w, spans) if spans else fam.student(data, w)
                    st = fam.train(sm, data, epochs=student_epochs, seed=seed,
                                   soft=logits, temperature=2.0, alpha=0.7, lr=3e-3)  # fmt: skip
                    info[f"student{w}_train_s"] = round(time.perf_counter() - t0, 1)
                    pred = fam.logits(st, data.x_test).argmax(1)
                    rows.append(row(fam, f"student MLP width {w} (distilled{summary})", y, pred,
                                    params=count_params(st)))  # fmt: skip
                if search:
                    t0 = time.perf_counter()
                    st, step = searched_student(
                        fam, data, res.model, logits, epochs=student_epochs, seed=seed,
                        budget_bytes=budget_bytes, budget_latency_ms=budget_latency_ms,
                        n_random=search_random, n_evolve=search_evolve,
                        search_epochs=search_epochs, finalists=search_finalists,
                    )  # fmt: skip
                    info["search_s"] = round(time.perf_counter() - t0, 1)
                    info["search"] = step.describe()["params"] | {"table": step.table}
                    (chosen,) = [e for e in step.table if e["chosen"]]
                    pred = fam.logits(st, data.x_test).argmax(1)
                    label = step.chosen["label"] if step.chosen else "?"
                    rows.append(row(fam, f"student, budgeted search ({label})", y, pred,
                                    params=count_params(st), bytes=chosen["bytes"],
                                    val_macro_f1=round(chosen["final_val_metric"], 4)))  # fmt: skip
            results.append({**info, "models": rows})
            name = f"market_models_{layout}{'' if teacher else '_baselines'}.json"
            (out / name).write_text(json.dumps(results, indent=2))
    lines = [
        "| symbol | k | model | macro-F1 | acc | trades | hit rate | P&L/trade (ticks) | P&L (ticks) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["models"]:
            lines.append(
                f"| {res['symbol']} | {res['horizon']} | {r['model']} | {r['macro_f1']:.4f} | "
                f"{r['accuracy']:.4f} | {r['trades']:,} | {r['hit_rate']:.3f} | "
                f"{r['pnl_per_trade_ticks']:+.3f} | {r['pnl_ticks']:+,.0f} |"
            )
    click.echo("\n".join(lines))
    (out / name.replace(".json", ".md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

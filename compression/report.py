"""The run report: a Markdown table of every candidate and SVG plots with the Pareto front.

Plots are hand-written SVG (no plotting library): metric vs size and metric vs batch-1
latency, log-scaled x, Pareto-optimal candidates (no other candidate is at least as small/fast
and strictly better, or better and strictly smaller/faster) ringed and joined. A budgeted
architecture search (:class:`~finscore.compression.search.BudgetedSearch`) in the run adds its
candidate table with both Pareto fronts and the same two plots of its candidates
(``search-size.svg``, ``search-latency.svg``; validation metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from finscore.compression.plan import RunResult


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when x is minimised and y maximised."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def svg_plot(cands: Sequence[Any], metric: str, x_of, x_label: str, title: str) -> str:  # noqa: ANN001
    """A metric-vs-x plot of ``cands`` (anything with ``name`` and ``metrics``: candidates, or
    search points), Pareto front ringed."""
    w, h, m = 640, 400, 60
    xs = [max(float(x_of(c)), 1e-9) for c in cands]
    ys = [float(c.metrics.get(metric, float("nan"))) for c in cands]
    lx = [math.log10(x) for x in xs]
    x0, x1 = min(lx) - 0.1, max(lx) + 0.1
    finite = [y for y in ys if not math.isnan(y)] or [0.0, 1.0]
    y0, y1 = min(finite) - 0.02, max(finite) + 0.02

    def px(v: float) -> float:
        return m + (v - x0) / (x1 - x0 or 1) * (w - 2 * m)

    def py(v: float) -> float:
        return h - m - (v - y0) / (y1 - y0 or 1) * (h - 2 * m)

    front = pareto(list(zip(xs, ys, strict=True)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
        f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 20}" text-anchor="middle">{escape(x_label)} (log scale)</text>',
        f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">{escape(metric)}</text>',
    ]
    for k in range(int(math.floor(x0)), int(math.ceil(x1)) + 1):
        if x0 <= k <= x1:
            parts.append(
                f'<text x="{px(k):.1f}" y="{h - m + 15}" text-anchor="middle">1e{k}</text>'
            )
    for t in range(5):
        v = y0 + (y1 - y0) * t / 4
        parts.append(f'<text x="{m - 5}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    if len(front) > 1:
        path = " ".join(f"{px(lx[i]):.1f},{py(ys[i]):.1f}" for i in front)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-dasharray="4 3"/>'
        )
    for i, c in enumerate(cands):
        if math.isnan(ys[i]):
            continue
        color = "#1f77b4" if c.name != "teacher" else "#2ca02c"
        parts.append(f'<circle cx="{px(lx[i]):.1f}" cy="{py(ys[i]):.1f}" r="5" fill="{color}"/>')
        if i in front:
            parts.append(
                f'<circle cx="{px(lx[i]):.1f}" cy="{py(ys[i]):.1f}" r="9" fill="none" stroke="#d62728"/>'
            )
        parts.append(
            f'<text x="{px(lx[i]) + 8:.1f}" y="{py(ys[i]) - 8:.1f}">{escape(c.name)}</text>'
        )
    parts.append(
        f'<text x="{w - m}" y="{m - 10}" text-anchor="end" fill="#d62728">ringed: Pareto front</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def rows(result: RunResult) -> list[dict]:
    teacher = result.teacher
    out = []
    for c in result.candidates:
        out.append({
            "candidate": c.name,
            **{k: round(v, 4) for k, v in c.metrics.items()},
            f"val {result.gate.metric}": round(c.val_metrics.get(result.gate.metric, float("nan")), 4),
            "params": c.params,
            "bytes": c.size_bytes,
            "x smaller": round(teacher.size_bytes / c.size_bytes, 1),
            "p50 ms": round(c.latency.get("p50_ms", float("nan")), 4),
            "p99 ms": round(c.latency.get("p99_ms", float("nan")), 4),
            "rows/s @1024": int(c.latency.get("throughput_per_s", 0)),
            "gate": "teacher" if c is teacher else ("pass" if c.passes_gate else "FAIL"),
            "verdict": c.verdict,
            "deployed": "★" if c is result.deployed else "",
        })  # fmt: skip
    return out


def write_report(result: RunResult, directory: Path, title: str, notes: str = "") -> Path:
    """Write ``report.md`` + two SVG plots into ``directory``; returns the Markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    metric = result.gate.metric
    (directory / "size.svg").write_text(
        svg_plot(
            result.candidates,
            metric,
            lambda c: c.size_bytes,
            "bytes on disk",
            f"{title}: {metric} vs size",
        )
    )
    (directory / "latency.svg").write_text(
        svg_plot(
            result.candidates,
            metric,
            lambda c: c.latency.get("p50_ms", 1e-3),
            "batch-1 p50 latency (ms)",
            f"{title}: {metric} vs latency",
        )  # fmt: skip
    )
    table = rows(result)
    cols = list(table[0])
    lines = [
        f"# {title}",
        "",
        f"Gate: validation {metric} within {result.gate.tolerance} of the reference (the "
        "teacher's); the other metric columns are on the test split, which decides nothing. "
        f"Data fingerprint `{result.data_fingerprint[:16]}`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in table]
    lines += ["", "![metric vs size](size.svg)", "", "![metric vs latency](latency.svg)", ""]
    grid = [e for e in result.search_log if e.get("step") != "budgeted_search"]
    searched = [e for e in result.search_log if e.get("step") == "budgeted_search"]
    if grid:
        lines += ["Architecture search (validation metric):", ""]
        lines += [f"- width {e['width']}: {e['bytes']} bytes, val {e['val_metric']:.4f}, fits budget: {e['fits']}"
                  for e in grid]  # fmt: skip
    if searched:
        lines += search_section(searched, directory, title)
    if notes:
        lines += ["", notes]
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_version_report(
    result: RunResult, family_dir: Path, family: str, version: str, title: str, notes: str = ""
) -> Path:
    """The report kept with registered version ``version`` of ``family``:
    ``family_dir/v<version>/report.md`` + plots (:func:`write_report`), titled
    ``"<family> v<version>: <title>"``. What `finscore compress` and the sidecar both write for
    a version they register, and what the dashboard's compression panel shows for the live one.
    Returns the Markdown path."""
    return write_report(result, family_dir / f"v{version}", f"{family} v{version}: {title}", notes)


@dataclass
class _SearchPoint:
    """A search candidate as :func:`svg_plot` reads it."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)


def search_table(table: list[dict]) -> list[str]:
    """Markdown table of a budgeted search's candidates (``BudgetedSearch.table`` or its
    entries of a run's search log): shape, size, latency, validation metric after the search's
    short training, the budgets they meet, the Pareto fronts (bytes vs metric: ``B``; latency
    vs metric: ``L``) and, for the finalists, the validation metric after full training."""
    metric = table[0].get("metric", "metric") if table else "metric"
    lines = [
        f"| # | phase | shape | params | bytes | p50 ms | val {metric} | fits | Pareto "
        f"| final val {metric} | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        fits = "yes" if e["fits"] else ("no: bytes" if not e["fits_bytes"] else "no: latency")
        if e.get("latency_marginal"):
            fits += " (marginal latency)"
        front = ("B" if e["front_bytes"] else "") + ("L" if e["front_latency"] else "")
        phase = e["phase"] + (f" of #{e['parent']}" if e.get("parent") is not None else "")
        final = f"{e['final_val_metric']:.4f}" if "final_val_metric" in e else ""
        lines.append(
            f"| {e['index']} | {phase} | {e['shape']} | {e['params']} | {e['bytes']} | "
            f"{e['p50_ms']:.4f} | {e['val_metric']:.4f} | {fits} | {front} | {final} | "
            f"{'★' if e['chosen'] else ''} |"
        )
    return lines


def search_fronts(table: list[dict]) -> list[str]:
    """One line per Pareto front of a budgeted search: its shapes by increasing x."""
    out = []
    for x, flag in (("bytes", "front_bytes"), ("p50_ms", "front_latency")):
        front = sorted((e for e in table if e[flag]), key=lambda e: e[x])
        where = [f"{e[x]:,} bytes" if x == "bytes" else f"{e[x]:.4f} ms" for e in front]
        pts = ", ".join(
            f"{e['shape']} ({w}, {e['val_metric']:.4f})" for e, w in zip(front, where, strict=True)
        )
        out.append(f"- Pareto front, {'size' if x == 'bytes' else 'latency'} vs metric: {pts}")
    return out


def search_section(table: list[dict], directory: Path, title: str) -> list[str]:
    """The report's budgeted-search section (table and fronts) and its two plots, written into
    ``directory``."""
    metric = table[0].get("metric", "metric")
    points = [_SearchPoint(f"#{e['index']} {e['shape']}", {metric: e["val_metric"]}) for e in table]
    by_index = {p.name: e for p, e in zip(points, table, strict=True)}
    for name, x, label in (("search-size.svg", "bytes", "bytes on disk"),
                           ("search-latency.svg", "p50_ms", "batch-1 p50 latency (ms)")):  # fmt: skip
        (directory / name).write_text(
            svg_plot(
                points,
                metric,
                lambda p, x=x: by_index[p.name][x],
                label,
                f"{title}: search, validation {metric} vs {label}",
            )  # fmt: skip
        )
    return [
        "",
        "## Budgeted architecture search",
        "",
        "Every trained candidate (short search training; validation metric). Pareto: B = not "
        "dominated on bytes vs metric, L = on batch-1 p50 latency vs metric.",
        "",
        *search_table(table),
        "",
        *search_fronts(table),
        "",
        "![search: metric vs size](search-size.svg)",
        "",
        "![search: metric vs latency](search-latency.svg)",
        "",
    ]

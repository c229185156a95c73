"""`finscore bench`: the side-by-side benchmark of :mod:`finscore.app.bench.run`, as a table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from finscore.app.bench.run import run_bench
from finscore.settings import Settings


@click.command()
@click.option("--events", type=int, default=200_000, show_default=True,
              help="Throughput run size (0: latency comparison only).")  # fmt: skip
@click.option("--faust-events", type=int, default=20_000, show_default=True)
@click.option(
    "--rate", type=float, default=5000.0, show_default=True, help="Offered load (latency)."
)
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Latency run length.")
@click.option("--rounds", type=int, default=4, show_default=True,
              help="Latency: the offered load in this many slices, the contenders taking turns.")  # fmt: skip
@click.option("--together", is_flag=True,
              help="Latency: both contenders read every slice at the same time instead.")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
@click.option(
    "--stream", type=click.Choice(["fraud", "market"]), default="fraud", show_default=True
)
def bench(
    events: int,
    faust_events: int,
    rate: float,
    seconds: float,
    rounds: int,
    together: bool,
    json_out: Path | None,
    stream: str,
) -> None:
    """Throughput and latency: passthrough vs naive Faust vs the finscore fraud worker."""
    from rich.console import Console
    from rich.table import Table

    summary = run_bench(Settings(), events, faust_events, rate, seconds, stream, rounds, together)
    t = Table(
        title=f"finscore bench · {summary['machine']} · {summary['broker']} · {summary['model']}"
    )
    for col in ("pipeline", "events", "seconds", "events/s", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in summary["results"]:
        t.add_row(r["name"], f"{r['events']:,}", f"{r['seconds']:.2f}", f"{r['rate']:,.0f}",
                  f"{r['latency_p50_ms']:.1f}" if r["latency_p50_ms"] is not None else "",
                  f"{r['latency_p99_ms']:.1f}" if r["latency_p99_ms"] is not None else "")  # fmt: skip
    c = Console()
    c.print(t)
    c.print(
        (
            f"finscore / passthrough = {summary['finscore_vs_passthrough']:.2f}, "
            if summary["finscore_vs_passthrough"] is not None
            else ""
        )
        + (
            f"finscore / faust-naive = {summary['finscore_vs_faust']:.1f}x, "
            if summary["finscore_vs_faust"] is not None
            else ""
        )
        + f"added latency p50 {summary['added_p50_ms']:+.1f} ms, p99 {summary['added_p99_ms']:+.1f} ms"
        + f" ({summary['latency_mode']}; p99 per round: "
        + ", ".join(f"{d:+.0f}" for d in summary["added_p99_ms_per_round"])
        + " ms)"
    )
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))

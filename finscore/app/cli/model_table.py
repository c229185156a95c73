"""`finscore models list`'s output: a table that fits 80 columns, every column (``--wide``), or
JSON (``--json``, one array of summaries; what scripts should read)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["model_rows", "print_models"]


def _key_metric(metrics: dict[str, Any]) -> str | None:
    """The family's headline metric: the first numeric one that is not the teacher's."""
    for k, v in metrics.items():
        if not k.startswith("teacher_") and isinstance(v, int | float):
            return k
    return None


def model_rows(registry: Any, names: list[str]) -> list[dict[str, Any]]:
    """One summary per registered version: name, version, champion, size, metrics, steps, the
    data fingerprint it was measured on and when it was created."""
    out = []
    for n in names:
        champ = registry.champion(n)
        cv = champ.manifest.version if champ else None
        for m in registry.list(n):
            out.append({
                "model": n, "version": m.version, "champion": m.version == cv,
                "size_bytes": m.size_bytes,
                "metrics": {k: v for k, v in m.metrics.items() if isinstance(v, int | float)},
                "steps": [s.get("step", "?") for s in m.steps],
                "data_fingerprint": m.data_fingerprint, "created_at": m.created_at,
            })  # fmt: skip
    return out


def print_models(rows: list[dict[str, Any]], title: str, wide: bool = False,
                 as_json: bool = False) -> None:  # fmt: skip
    """Print ``rows`` (see :func:`model_rows`): compact table (model, version ★ champion, bytes,
    headline metric vs the teacher's on the test split, data fingerprint, created), the wide
    one with every metric and step, or JSON."""
    import click

    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    if wide:
        for col in ("model", "version", "champion", "bytes", "metrics", "steps", "data",
                    "created"):  # fmt: skip
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["model"], r["version"], "★" if r["champion"] else "", f"{r['size_bytes']:,}",
                ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items()),
                "→".join(r["steps"]), r["data_fingerprint"][:8], r["created_at"][:19],
            )  # fmt: skip
        Console(width=max(Console().width, 160)).print(table)
        return
    for col, just in (("model", "left"), ("v", "right"), ("bytes", "right"),
                      ("metric (teacher's)", "right"), ("data", "left"),
                      ("created", "left")):  # fmt: skip
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        k = _key_metric(r["metrics"])
        value = r["metrics"].get(k) if k else None
        teacher = r["metrics"].get(f"teacher_{k}") if k else None
        shown = "" if value is None else f"{k} {value:.4f}"
        if teacher is not None:
            shown += f" ({teacher:.4f})"
        table.add_row(
            r["model"], r["version"] + (" ★" if r["champion"] else "  "), f"{r['size_bytes']:,}",
            shown, r["data_fingerprint"][:8], r["created_at"][:10],
        )  # fmt: skip
    Console().print(table)
    click.echo("★ champion; metric on the test split; data: fingerprint of the training data")
    click.echo("(--wide: every metric and step; --json: everything, for scripts)")

"""`finscore dashboard`: serve the live dashboard until Ctrl-C."""

from __future__ import annotations

import threading

import click


@click.command()
@click.option("--port", type=int, default=8050, show_default=True)
@click.option("--worker", "workers", multiple=True, help="Worker metrics URL (repeatable).")
def dashboard(port: int, workers: tuple[str, ...]) -> None:
    """Live dashboard: rates, latency, lag, dead letters, models, flags, signals, reports."""
    from finscore.dashboard.server import start_dashboard
    from finscore.settings import Settings
    from finscore.streams.admin import check_reachable

    s = Settings()
    check_reachable(s.kafka_config())
    d = start_dashboard(s, port, list(workers))
    click.echo(f"dashboard at {d.url} (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()

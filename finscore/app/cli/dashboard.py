"""`finscore dashboard`: serve the live dashboard until Ctrl-C."""

from __future__ import annotations

import threading

import click


@click.command()
@click.option("--port", type=int, default=8050, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 inside a container).",
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    help="Worker base URL, e.g. http://127.0.0.1:9100 (repeatable; a host name resolving to "
    "several addresses is scraped once per address).",
)
@click.option("--sidecar", "sidecar_url", default=None,
              help="The sidecar's status URL (finscore sidecar --metrics-port), e.g. "
              "http://sidecar:9100: its state and last error.")  # fmt: skip
def dashboard(port: int, host: str, workers: tuple[str, ...], sidecar_url: str | None) -> None:
    """Live dashboard: rates, latency, lag, dead letters, models, flags, signals, reports."""
    from finscore.app.dashboard.server import start_dashboard
    from finscore.settings import Settings
    from finscore.streams.admin import check_reachable

    s = Settings()
    check_reachable(s.kafka_config())
    d = start_dashboard(s, port, list(workers), host=host, sidecar_url=sidecar_url)
    click.echo(f"dashboard at {d.url} (Ctrl-C stops it)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()

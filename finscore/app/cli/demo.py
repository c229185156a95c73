"""`finscore demo`: the whole system on one machine (see :mod:`finscore.app.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from finscore.app.cli.context import Ctx, pass_ctx


@click.command()
@click.option(
    "--duration", type=float, default=None, help="Stop after S seconds (default: Ctrl-C)."
)
@click.option("--tx-rate", type=float, default=2000.0, show_default=True, help="Transactions/s.")
@click.option("--tick-rate", type=float, default=500.0, show_default=True, help="Ticks/s.")
@click.option("--fraud-workers", type=int, default=2, show_default=True)
@click.option("--exactly-once", is_flag=True, help="Run the workers with Kafka transactions.")
@click.option(
    "--dashboard-port", type=int, default=8050, show_default=True, help="0 = no dashboard."
)
@click.option("--no-sidecar", is_flag=True, help="Do not start the sidecar.")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("var/demo"), show_default=True
)
@pass_ctx
def demo(
    ctx: Ctx,
    duration: float | None,
    tx_rate: float,
    tick_rate: float,
    fraud_workers: int,
    exactly_once: bool,
    dashboard_port: int,
    no_sidecar: bool,
    workdir: Path,
) -> None:
    """Run the whole system on the embedded broker with a live view (Ctrl-C stops it)."""
    from finscore.app.demo import Demo, DemoOptions
    from finscore.logging import configure_logging

    configure_logging("WARNING", ctx.settings.log_format)  # the live view is the narration
    opts = DemoOptions(
        duration=duration,
        tx_rate=tx_rate,
        tick_rate=tick_rate,
        fraud_workers=fraud_workers,
        exactly_once=exactly_once,
        dashboard_port=dashboard_port or None,
        sidecar=not no_sidecar,
        workdir=workdir,
    )
    Demo(ctx.settings, opts).run()

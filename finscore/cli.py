"""The `finscore` console: broker, topics, produce, tail, workers, models, status, demo, bench.

Settings come from ``FINSCORE_*`` environment variables (see the README). Every command that
talks to Kafka uses ``FINSCORE_BOOTSTRAP_SERVERS`` or, unset, the embedded broker. Errors are
one sentence plus a hint; tracebacks only with ``FINSCORE_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from typing import Any

import click

from finscore import __version__
from finscore.exceptions import FinscoreError
from finscore.logging import configure_logging
from finscore.settings import Settings


class Ctx:
    """Per-invocation state: settings, built once."""

    def __init__(self) -> None:
        self.settings = Settings()

    @property
    def client(self) -> dict[str, str | int]:
        return self.settings.kafka_config()


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


class LazyGroup(click.Group):
    """Mounts heavy command groups (compression needs torch) only when they are invoked."""

    lazy = {
        "compress": ("finscore.compression.cli", "compress"),
        "dashboard": ("finscore.dashboard.cli", "dashboard"),
        "sidecar": ("finscore.sidecar", "sidecar"),
        "bench": ("finscore.bench", "bench"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name]
            try:
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
            except ImportError as exc:
                missing = getattr(exc, "name", "") or ""
                hint = (
                    "install the compress extra: pip install 'finscore[compress]'"
                    if missing in ("torch", "onnx")
                    else f"({exc})"
                )
                raise click.ClickException(
                    f"`finscore {name}` is unavailable here: {hint}"
                ) from exc
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="finscore")
def cli() -> None:
    """finscore: stream card transactions and market ticks through compressed ONNX models."""
    s = Settings()
    configure_logging(s.log_level, s.log_format)


# -- broker --------------------------------------------------------------------------------------
@cli.command()
@click.option("--port", type=int, default=None, help="Port (default FINSCORE_BROKER_PORT, 9092).")
@pass_ctx
def broker(ctx: Ctx, port: int | None) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory only) until Ctrl-C."""
    from finscore.broker import EmbeddedBroker

    port = port or ctx.settings.broker_port
    b = EmbeddedBroker(port=port).start()
    click.echo(f"embedded broker ready at 127.0.0.1:{port} (memory only; Ctrl-C stops it)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and b.running:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
        click.echo("broker stopped")


# -- topics --------------------------------------------------------------------------------------
@cli.command()
@click.option("--create", is_flag=True, help="Create the catalog's missing topics first.")
@pass_ctx
def topics(ctx: Ctx, create: bool) -> None:
    """List finscore topics with partitions and offsets (and create them with --create)."""
    from rich.console import Console
    from rich.table import Table

    from finscore.schemas.topics import catalog
    from finscore.streams.admin import check_reachable, ensure_topics, offsets

    s = ctx.settings
    specs = catalog(s.partitions, s.topic_prefix)
    if create:
        created = ensure_topics(ctx.client, specs, s.replication_factor)
        click.echo(
            f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else "")
        )
    names = [t for t in check_reachable(ctx.client) if not t.startswith("__")]
    declared = {sp.name: sp for sp in specs}
    table = Table(title=f"topics on {s.bootstrap}")
    for col in ("topic", "partitions", "messages", "offsets (low..high per partition)", "about"):
        table.add_column(col)
    by_topic: dict[str, list] = {}
    for po in offsets(ctx.client, names):
        by_topic.setdefault(po.topic, []).append(po)
    for name in sorted(set(names) | set(declared)):
        parts = by_topic.get(name, [])
        spec = declared.get(name)
        offs = " ".join(f"{p.partition}:{p.low}..{p.high}" for p in parts) or "(missing)"
        table.add_row(
            name,
            str(len(parts)) if parts else "-",
            str(sum(p.messages for p in parts)) if parts else "-",
            offs,
            spec.doc if spec else "",
        )
    Console().print(table)


# -- produce -------------------------------------------------------------------------------------
@cli.command()
@click.argument("what", type=click.Choice(["transactions", "ticks"]))
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Events/s (0 = max).")
@click.option("--count", type=int, default=None, help="Stop after N events.")
@click.option("--duration", type=float, default=None, help="Stop after S seconds.")
@click.option("--encoding", type=click.Choice(["avro", "json"]), default="avro", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--source", type=click.Choice(["sim", "lobster"]), default="sim", show_default=True,
              help="ticks only: simulator or a LOBSTER replay from FINSCORE_DATA_DIR.")  # fmt: skip
@click.option(
    "--drift-day", type=int, default=None, help="transactions: new fraud pattern from day N."
)
@pass_ctx
def produce(
    ctx: Ctx,
    what: str,
    rate: float,
    count: int | None,
    duration: float | None,
    encoding: str,
    seed: int,
    source: str,
    drift_day: int | None,
) -> None:
    """Produce simulated transactions (with their delayed labels) or market ticks."""
    from rich.console import Console

    from finscore.producing import produce as run_produce
    from finscore.producing import tick_events, transaction_events
    from finscore.streams.admin import check_reachable

    check_reachable(ctx.client)
    prefix = ctx.settings.topic_prefix
    events = (
        transaction_events(prefix, seed, drift_day)
        if what == "transactions"
        else tick_events(prefix, seed, source)
    )
    console = Console(stderr=True)
    stop = threading.Event()
    with console.status("producing…") as status:

        def progress(st: Any) -> None:
            parts = ", ".join(f"{t}: {n:,}" for t, n in sorted((st.by_topic or {}).items()))
            status.update(f"sent {st.sent:,} events at {st.rate:,.0f}/s ({parts})")

        try:
            stats = run_produce(
                ctx.client, events, rate=rate, count=count, duration=duration,
                encoding=encoding, stop=stop, on_progress=progress,
            )  # fmt: skip
        except KeyboardInterrupt:
            stop.set()
            raise
    parts = ", ".join(f"{t}: {n:,}" for t, n in sorted((stats.by_topic or {}).items()))
    console.print(f"sent {stats.sent:,} events in {stats.seconds:.1f} s ({parts})")


# -- tail ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record.")
@click.option("--count", "-n", type=int, default=None, help="Exit after N records.")
@click.option("--no-follow", is_flag=True, help="Exit at the end of the topic.")
@click.option("--schema", default=None, help="Schema name (default: from the topic catalog).")
@pass_ctx
def tail(
    ctx: Ctx,
    topic: str,
    from_beginning: bool,
    count: int | None,
    no_follow: bool,
    schema: str | None,
) -> None:
    """Print a topic's records as pretty JSON (any of the three encodings), like tail -f."""
    from finscore.tailing import follow

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for line in follow(
            ctx.client,
            topic,
            prefix=ctx.settings.topic_prefix,
            schema=schema,
            from_beginning=from_beginning,
            count=count,
            follow=not no_follow,
            stop=stop,
            registry_url=ctx.settings.schema_registry_url,
        ):
            click.echo(line)
    except KeyboardInterrupt:
        pass


# -- workers -------------------------------------------------------------------------------------
@cli.command()
@click.argument("stream", type=click.Choice(["fraud", "market"]))
@click.option("--exactly-once", is_flag=True, help="Kafka transactions (read_committed outputs).")
@click.option("--metrics-port", type=int, default=None, help="/metrics + /health port (0 = any).")
@click.option("--batch-size", type=int, default=5000, show_default=True)
@click.option("--commit-interval", type=float, default=1.0, show_default=True,
              help="Seconds between commits (state changelog + offsets); EOS commits per batch.")  # fmt: skip
@click.option("--threshold", type=float, default=None, help="Fraud decision threshold override.")
@click.option("--explain", type=int, default=0, show_default=True,
              help="Fraud: add the top-K unusual features to each flag (costs throughput).")  # fmt: skip
@click.option("--group", default=None, help="Consumer group (default finscore-<stream>).")
@click.option("--instance-id", default=None, help="Stable id (transactional.id in EOS mode).")
@pass_ctx
def worker(
    ctx: Ctx,
    stream: str,
    exactly_once: bool,
    metrics_port: int | None,
    batch_size: int,
    commit_interval: float,
    threshold: float | None,
    explain: int,
    group: str | None,
    instance_id: str | None,
) -> None:
    """Run a scoring worker (fraud or market) until Ctrl-C/SIGTERM."""
    from finscore.streams.admin import check_reachable
    from finscore.streams.worker import Worker

    check_reachable(ctx.client)
    cfg = worker_config(
        ctx.settings, stream, exactly_once, metrics_port, batch_size, threshold, group, instance_id
    )
    cfg = dataclasses.replace(cfg, explain=explain, commit_interval=commit_interval)
    w = Worker(cfg)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    w.run()


def worker_config(
    s: Settings,
    stream: str,
    exactly_once: bool = False,
    metrics_port: int | None = None,
    batch_size: int = 5000,
    threshold: float | None = None,
    group: str | None = None,
    instance_id: str | None = None,
) -> Any:
    """A WorkerConfig from settings and CLI options (settings only at the edge)."""
    from finscore.streams.worker import WorkerConfig

    extra: dict[str, Any] = {}
    if instance_id:
        extra["instance_id"] = instance_id
        extra["transactional_id"] = f"finscore-{stream}-{instance_id}"
    return WorkerConfig(
        stream=stream,
        client=s.kafka_config(),
        topic_prefix=s.topic_prefix,
        group_id=group,
        exactly_once=exactly_once,
        batch_size=batch_size,
        session_timeout_ms=s.session_timeout_ms,
        verify_key=s.verify_key,
        registry_dir=s.registry_dir,
        json_topics=s.json_topic_set(),
        threshold=threshold,
        metrics_port=metrics_port if metrics_port is not None else s.metrics_port,
        metrics_host=s.metrics_host,
        **extra,
    )


def main() -> None:
    """Entry point: run the CLI, turning finscore errors into one sentence and a hint."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FinscoreError as exc:
        if os.environ.get("FINSCORE_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def dump(obj: Any) -> str:
    """Pretty JSON for console output."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


# Command modules register themselves on `cli` (kept apart so each reads in one sitting).
from finscore import cli_models, cli_ops  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover - `python -m finscore.cli`
    from finscore.cli import main as _main  # the module the commands registered on

    _main()

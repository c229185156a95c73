"""The `finscore` console: broker, topics, produce, tail, workers, models, status, demo, bench.

Settings come from ``FINSCORE_*`` environment variables (see the README). Every command that
talks to Kafka uses ``FINSCORE_BOOTSTRAP_SERVERS`` or, unset, the embedded broker. Errors are
one sentence plus a hint; tracebacks only with ``FINSCORE_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from finscore import __version__
from finscore.exceptions import FinscoreError

if TYPE_CHECKING:  # imported where used: `finscore --help` stays light (no pydantic, rich...)
    from finscore.settings import Settings


class Ctx:
    """Per-invocation state: settings, built once (``-b`` overrides the bootstrap servers).

    ``bootstrap_source`` says what chose the broker address (the option, the setting, or None
    for the embedded broker's default): what an unreachable broker's error names."""

    current: Ctx | None = None  # this invocation's, for main()'s error messages

    def __init__(self, bootstrap_servers: str | None = None) -> None:
        from finscore.settings import Settings

        overrides: dict[str, Any] = (
            {"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}
        )
        self.settings = Settings(**overrides)
        self.bootstrap_source: str | None = (
            "-b/--bootstrap-servers"
            if bootstrap_servers
            else "FINSCORE_BOOTSTRAP_SERVERS"
            if self.settings.bootstrap_servers
            else None
        )
        Ctx.current = self

    @property
    def client(self) -> dict[str, Any]:
        """The Kafka client config, with librdkafka's own log lines (``%3|...|FAIL|...``)
        routed to structlog and shown only at ``FINSCORE_LOG_LEVEL=DEBUG``: the console's
        errors are one sentence and a hint."""
        return {**self.settings.kafka_config(), "logger": librdkafka_logger(self.settings)}


class _StructlogHandler(logging.Handler):
    """Forwards stdlib records (librdkafka's, via confluent-kafka's ``logger``) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        from finscore.logging import get_logger

        get_logger("librdkafka").log(record.levelno, "librdkafka", message=record.getMessage())


def librdkafka_logger(s: Settings) -> logging.Logger:
    """The logger confluent-kafka clients of the console log to: structlog at DEBUG level,
    silent otherwise."""
    log = logging.getLogger("finscore.librdkafka")
    if not log.handlers:
        log.addHandler(_StructlogHandler())
        log.propagate = False
    log.setLevel(logging.DEBUG if s.log_level.upper() == "DEBUG" else logging.CRITICAL + 1)
    return log


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


class LazyGroup(click.Group):
    """Mounts command modules only when they are invoked (compression needs torch, the others
    confluent-kafka, rich, numpy...): ``finscore --help`` lists them from :attr:`lazy`'s short
    help without importing any."""

    lazy = {  # name: (module, attribute, short help for `finscore --help`)
        "compress": ("finscore.compression.cli", "compress",
                     "Train, compress, gate, report and register a model."),
        "dashboard": ("finscore.dashboard.cli", "dashboard",
                      "Live dashboard: rates, lag, dead letters, models."),
        "sidecar": ("finscore.sidecar", "sidecar",
                    "Recompress from fresh labels, gate, hot-swap."),
        "bench": ("finscore.bench", "bench", "Throughput and latency benchmarks."),
        "models": ("finscore.cli_models", "models",
                   "List, promote, roll back, shadow and canary model versions."),
        "status": ("finscore.cli_ops", "status",
                   "One screen: broker, lag per group, workers, models."),
        "demo": ("finscore.cli_ops", "demo",
                 "Run the whole system on the embedded broker with a live view."),
    }  # fmt: skip

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``: eager commands' own short help, lazy ones' from
        :attr:`lazy` (nothing imported)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][2]))
                continue
            cmd = super().get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr, _help = self.lazy[name]
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
@click.option("-b", "--bootstrap-servers", metavar="HOST:PORT[,...]", default=None,
              help="Kafka bootstrap servers (overrides FINSCORE_BOOTSTRAP_SERVERS; "
                   "default: the embedded broker).")  # fmt: skip
@click.pass_context
def cli(click_ctx: click.Context, bootstrap_servers: str | None) -> None:
    """finscore: stream card transactions and market ticks through compressed ONNX models."""
    from finscore.logging import configure_logging

    obj = Ctx(bootstrap_servers)
    click_ctx.obj = obj
    configure_logging(obj.settings.log_level, obj.settings.log_format)
    from finscore.providers import configure as configure_providers

    # the default for sessions not given a list (compress, the sidecar, registry smoke tests)
    configure_providers(obj.settings.provider_list())


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
    from finscore.streams.admin import (
        check_reachable,
        ensure_topics,
        offsets,
        partition_mismatches,
    )

    s = ctx.settings
    specs = catalog(s.partitions, s.topic_prefix)
    if create:
        created = ensure_topics(ctx.client, specs, s.replication_factor)
        click.echo(
            f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else "")
        )
    mismatched = partition_mismatches(ctx.client, specs)
    names = [t for t in check_reachable(ctx.client) if not t.startswith("__")]
    declared = {sp.name: sp for sp in specs}
    table = Table(title=f"topics on {s.bootstrap}")
    widest = max((len(n) for n in set(names) | set(declared)), default=5)
    table.add_column("topic", no_wrap=True, min_width=widest)  # whole names, piped or not
    for col in ("partitions", "messages", "offsets (low..high per partition)", "about"):
        table.add_column(col, overflow="fold")
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
    if mismatched:  # exists with the wrong count: reported, never accepted silently
        for mm in mismatched:
            click.secho(f"warning: {mm}", fg="yellow", err=True)
        if create:
            raise click.ClickException(
                f"{len(mismatched)} catalog topic(s) exist with the wrong partition count "
                "(see the warnings): delete and recreate them (their records are lost), or set "
                "FINSCORE_PARTITIONS to match"
            )


# -- produce -------------------------------------------------------------------------------------
SIMULATORS = {"transactions": "transactions", "ticks": "ticks", "market-ticks": "ticks"}


@cli.command()
@click.argument("topic", metavar="TOPIC")
@click.argument("file", type=click.File("r", encoding="utf-8"), required=False, metavar="[FILE|-]")
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Events/s, 0 = max (default: 1000 simulated, max from a file).",
)
@click.option(
    "--count",
    type=int,
    default=None,
    help="Stop after N records (simulated transactions: N transactions, labels aside).",
)
@click.option("--duration", type=float, default=None, help="Stop after S seconds.")
@click.option(
    "--encoding",
    type=click.Choice(["avro", "json", "confluent"]),
    default="avro",
    show_default=True,
    help="avro (single-object), json, or confluent (needs FINSCORE_SCHEMA_REGISTRY_URL).",
)
@click.option("-k", "--key", default=None, help="FILE: the key of every record.")
@click.option(
    "--key-field",
    default=None,
    help="FILE: the field whose value is the key (default: the topic's key field).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv"]),
    default="auto",
    show_default=True,
    help="FILE: JSON lines or CSV with a header line.",
)
@click.option("--schema", default=None, help="FILE: schema name (default: from the catalog).")
@click.option("--seed", type=int, default=0, show_default=True, help="Simulators: seed.")
@click.option(
    "--source",
    type=click.Choice(["sim", "lobster"]),
    default="sim",
    show_default=True,
    help="ticks only: simulator or a LOBSTER replay from FINSCORE_DATA_DIR.",
)
@click.option(
    "--drift-day", type=int, default=None, help="transactions: new fraud pattern from day N."
)
@pass_ctx
def produce(
    ctx: Ctx,
    topic: str,
    file: Any,
    rate: float | None,
    count: int | None,
    duration: float | None,
    encoding: str,
    key: str | None,
    key_field: str | None,
    fmt: str,
    schema: str | None,
    seed: int,
    source: str,
    drift_day: int | None,
) -> None:
    """Produce records to TOPIC: your own from FILE (or - for stdin), else simulated ones.

    \b
    With FILE: JSON lines (or CSV with a header line) validated against the topic's schema;
    rejected lines are reported on stderr (line number and reason) and skipped, the exit
    code is then 3. Keys come from -k, else the record's --key-field (default: the catalog's
    key field, e.g. customer_id for transactions).
      printf '%s\\n' '{"transaction_id":"t-1","event_time":"2026-11-22T10:15:00Z",...}' \\
        | finscore produce transactions -
    Without FILE: TOPIC is `transactions` (simulated payments and, 7 sim-days later, their
    labels) or `ticks` (order-book ticks), paced by --rate.
    Ctrl-C stops, flushes what was queued and prints the summary (exit 130).
    """
    from rich.console import Console

    from finscore.producing import (
        ProduceStats,
        encode_check,
        file_events,
        tick_events,
        transaction_events,
    )
    from finscore.producing import produce as run_produce
    from finscore.schemas import topics as T
    from finscore.streams.admin import check_reachable

    s = ctx.settings
    prefix = s.topic_prefix
    console = Console(stderr=True, highlight=False)
    stats = ProduceStats(by_topic={})
    registry = None
    if s.schema_registry_url:
        from finscore.tailing import registry_client

        registry = registry_client(s.schema_registry_url)
    count_topic = None
    if file is None:
        if topic.removeprefix(prefix) not in SIMULATORS:
            raise click.UsageError(
                f"without FILE, TOPIC is a simulator: {', '.join(SIMULATORS)} "
                f"(to send your own records: finscore produce {topic} FILE|-)"
            )
        if key or key_field:
            raise click.UsageError("-k/--key-field apply to records from FILE")
        encode_check("", encoding, registry)
        check_reachable(ctx.client)
        if SIMULATORS[topic.removeprefix(prefix)] == "transactions":
            events = transaction_events(prefix, seed, drift_day)
            count_topic = prefix + T.TRANSACTIONS
        else:
            events = tick_events(prefix, seed, source)
        rate = 1000.0 if rate is None else rate
    else:
        from finscore.tailing import spec_of

        name = topic if topic.startswith(prefix) else prefix + topic
        spec = spec_of(name, prefix)
        schema = schema or (spec.schema if spec else None)
        if schema is None or schema == "json":
            raise click.UsageError(
                f"no schema known for topic {name!r}: name one with --schema (e.g. transaction)"
            )
        if key is None and key_field is None and spec is not None and " " not in spec.key:
            key_field = spec.key
        encode_check(schema, encoding, registry)
        check_reachable(ctx.client)

        def rejected(line: int, reason: str) -> None:
            stats.rejected += 1
            console.print(f"line {line}: rejected: {reason}", markup=False)

        events = file_events(file, name, schema, fmt=fmt, key=key, key_field=key_field,
                             on_reject=rejected)  # fmt: skip
        rate = 0.0 if rate is None else rate
    stop = threading.Event()
    with console.status("producing…") as status:

        def progress(st: Any) -> None:
            parts = ", ".join(f"{t}: {n:,}" for t, n in sorted((st.by_topic or {}).items()))
            status.update(f"sent {st.sent:,} events at {st.rate:,.0f}/s ({parts})")

        stats = run_produce(
            ctx.client, events, rate=rate, count=count, duration=duration, encoding=encoding,
            stop=stop, on_progress=progress, count_topic=count_topic, registry=registry,
            stats=stats,
        )  # fmt: skip
    parts = ", ".join(f"{t}: {n:,}" for t, n in sorted((stats.by_topic or {}).items()))
    summary = f"sent {stats.sent:,} events in {stats.seconds:.1f} s ({parts or 'none'})"
    if file is not None:
        summary += f"; rejected {stats.rejected:,} line(s)"
    if stats.interrupted:
        summary += "; interrupted (everything queued was flushed)"
    console.print(summary, markup=False)
    if stats.interrupted:
        sys.exit(130)
    if stats.rejected:
        sys.exit(3)


# -- tail ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("topic")
@click.option(
    "-o",
    "--offset",
    "start",
    default=None,
    metavar="POS",
    help="Start at beginning, end (default), OFFSET, -N (the last N per partition) "
    "or @TIMESTAMP_MS.",
)
@click.option("--from-beginning", is_flag=True, help="Same as -o beginning.")
@click.option("-p", "--partition", type=int, default=None, help="Only this partition.")
@click.option("--count", "-n", type=int, default=None, help="Exit after N records.")
@click.option(
    "-e",
    "--exit-at-end",
    "--no-follow",
    "exit_at_end",
    is_flag=True,
    help="Exit at the end of the partitions instead of following.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pretty", "json", "avro-json"]),
    default=None,
    help="pretty (default on a terminal) or one compact JSON per line (default when "
    "piped): json = the record as JSON, avro-json = Avro's JSON encoding.",
)
@click.option(
    "--envelope",
    is_flag=True,
    help="json/avro-json: wrap each record with topic, partition, offset, timestamp, "
    'key and headers ({..., "value": record}).',
)
@click.option("--schema", default=None, help="Schema name (default: from the topic catalog).")
@pass_ctx
def tail(
    ctx: Ctx,
    topic: str,
    start: str | None,
    from_beginning: bool,
    partition: int | None,
    count: int | None,
    exit_at_end: bool,
    fmt: str | None,
    envelope: bool,
    schema: str | None,
) -> None:
    """Print a topic's records (any of the three encodings) as JSON, like kcat -C / tail -f.

    \b
    On a terminal each record is pretty JSON under a line naming its partition, offset,
    timestamp, key and headers; piped, each record is one line of compact JSON (the record
    itself, so `jq -c .transaction_id`, `grep` and `wc -l` work; --envelope adds the
    metadata). Without -o it starts at the end and follows; -e exits at the end.
      finscore tail fraud-flags -o beginning -e | jq -c .transaction_id
    """
    from finscore.streams.admin import check_reachable
    from finscore.tailing import Start, follow, parse_start

    prefix = ctx.settings.topic_prefix
    name = topic if topic.startswith(prefix) else prefix + topic
    try:
        begin = parse_start(start) if start else (Start("beginning") if from_beginning else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o") from None
    fmt = fmt or ("pretty" if sys.stdout.isatty() else "json")
    check_reachable(ctx.client)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for line in follow(
            ctx.client, name, prefix=prefix, schema=schema, start=begin, partition=partition,
            count=count, follow=not exit_at_end, stop=stop,
            registry_url=ctx.settings.schema_registry_url, fmt=fmt, envelope=envelope,
        ):  # fmt: skip
            click.echo(line)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    from finscore.providers import batch_size_for, resolve
    from finscore.streams.worker import WorkerConfig

    extra: dict[str, Any] = {}
    providers = s.provider_list()
    # GPUs want large batches: at least FINSCORE_GPU_MIN_BATCH on a GPU provider
    batch_size = batch_size_for(resolve(providers).primary, batch_size, s.gpu_min_batch)
    if instance_id:
        extra["instance_id"] = instance_id
        extra["transactional_id"] = f"finscore-{stream}-{instance_id}"
    if s.schema_registry_url:  # inputs in the Confluent wire format are read with it
        registry = {"url": s.schema_registry_url}
        if s.schema_registry_user_info is not None:
            registry["basic.auth.user.info"] = s.schema_registry_user_info.get_secret_value()
        extra["schema_registry"] = registry
    return WorkerConfig(
        stream=stream,
        client=s.kafka_config(),
        topic_prefix=s.topic_prefix,
        group_id=group,
        exactly_once=exactly_once,
        batch_size=batch_size,
        session_timeout_ms=s.session_timeout_ms,
        verify_key=s.model_keys(create=False).verify_key,  # explicit, else the local pair
        allow_unsigned=s.allow_unsigned_models,
        registry_dir=s.registry_dir,
        json_topics=s.json_topic_set(),
        threshold=threshold,
        metrics_port=metrics_port if metrics_port is not None else s.metrics_port,
        metrics_host=s.metrics_host,
        health_grace_s=s.health_grace_s,
        expected_partitions=s.partitions,
        bounds=s.input_bounds(),
        execution_providers=providers,
        label_contract=s.label_contract,
        **extra,
    )


def main() -> None:
    """Entry point: run the CLI, turning finscore errors into one sentence and a hint."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()  # usage line, then the error
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # same shape as finscore errors: `error:` (+ `hint:`)
        click.secho(f"error: {exc.format_message()}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except FinscoreError as exc:
        if os.environ.get("FINSCORE_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        exc = _named_source(exc)
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        sys.exit(130)


def _named_source(exc: FinscoreError) -> FinscoreError:
    """An unreachable broker's error, naming where its address came from (this invocation's
    ``-b``, ``FINSCORE_BOOTSTRAP_SERVERS``, or the embedded default): its hint then says to
    check that setting, or to start ``finscore broker``."""
    from finscore.streams.exceptions import BrokerUnreachable

    if isinstance(exc, BrokerUnreachable) and exc.source is None and Ctx.current is not None:
        return exc.with_source(Ctx.current.bootstrap_source)
    return exc


def dump(obj: Any) -> str:
    """Pretty JSON for console output."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


# `models`, `status` and `demo` live in finscore.cli_models / finscore.cli_ops (each reads in
# one sitting); LazyGroup mounts them when invoked.

if __name__ == "__main__":  # pragma: no cover - `python -m finscore.cli`
    from finscore.cli import main as _main  # the module the commands registered on

    _main()

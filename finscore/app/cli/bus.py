"""`finscore broker|topics|produce|tail`: the commands that talk to the bus like kcat does."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass

from finscore.app.cli.context import Ctx, family_files, pass_ctx


# -- broker --------------------------------------------------------------------------------------
@click.command()
@click.option("--port", type=int, default=None, help="Port (default FINSCORE_BROKER_PORT, 9092).")
@pass_ctx
def broker(ctx: Ctx, port: int | None) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory only) until Ctrl-C."""
    from finscore.app.broker import EmbeddedBroker

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
@click.command()
@click.option("--create", is_flag=True, help="Create the catalog's missing topics first.")
@click.option("--family", "families", multiple=True, callback=family_files,
              help="A declared family (a TOML file, or a built-in name such as credit) whose "
                   "topics are listed and created too.")  # fmt: skip
@pass_ctx
def topics(ctx: Ctx, create: bool, families: tuple[str, ...]) -> None:
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
    if families:
        from finscore.families import load_family
        from finscore.streams.declared import family_topics

        known = {sp.name for sp in specs}
        for path in families:
            specs += [t for t in family_topics(load_family(path), s.partitions, s.topic_prefix)
                      if t.name not in known]  # fmt: skip
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


@click.command()
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
@click.option("--family", "family_path", default=None, callback=family_files,
              help="FILE: TOPIC is this declared family's input or label topic (a TOML file or "
                   "a built-in name such as credit): its schema and key field.")  # fmt: skip
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
    family_path: Any,
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
    A declared family's events: --family F (its input or label topic, schema and key).
      finscore produce credit-applications applications.csv --family credit
    Without FILE: TOPIC is `transactions` (simulated payments and, 7 sim-days later, their
    labels) or `ticks` (order-book ticks), paced by --rate.
    Ctrl-C stops, flushes what was queued and prints the summary (exit 130).
    """
    from rich.console import Console

    from finscore.app.console.produce import (
        ProduceStats,
        encode_check,
        file_events,
        tick_events,
        transaction_events,
    )
    from finscore.app.console.produce import produce as run_produce
    from finscore.schemas import topics as T
    from finscore.streams.admin import check_reachable

    s = ctx.settings
    prefix = s.topic_prefix
    console = Console(stderr=True, highlight=False)
    stats = ProduceStats(by_topic={})
    registry = None
    if s.schema_registry_url:
        from finscore.app.console.tail import registry_client

        registry = registry_client(s.schema_registry_url)
    count_topic = None
    if family_path is not None and file is None:
        raise click.UsageError("--family applies to records from FILE")
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
        from finscore.app.console.tail import spec_of

        name = topic if topic.startswith(prefix) else prefix + topic
        spec = spec_of(name, prefix)
        doc: str | dict | None = schema or (spec.schema if spec else None)
        if family_path is not None and schema is None:
            doc, family_key = _family_topic(family_path, name.removeprefix(prefix))
            if key is None and key_field is None:
                key_field = family_key
        if doc is None or doc == "json":
            raise click.UsageError(
                f"no schema known for topic {name!r}: name one with --schema (e.g. transaction)"
                " or --family"
            )
        if key is None and key_field is None and spec is not None and " " not in spec.key:
            key_field = spec.key
        encode_check("", encoding, registry)
        check_reachable(ctx.client)

        def rejected(line: int, reason: str) -> None:
            stats.rejected += 1
            console.print(f"line {line}: rejected: {reason}", markup=False)

        events = file_events(file, name, doc, fmt=fmt, key=key, key_field=key_field,
                             on_reject=rejected, registry=registry)  # fmt: skip
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


def _family_topic(family_path: Any, topic: str) -> tuple[str | dict, str]:
    """(the schema: a bundled name or the parsed .avsc, the key field) of ``topic``, the input
    or label topic of the family declared at ``family_path``; a usage error for any other."""
    from finscore.families.spec import load_family
    from finscore.schemas import SCHEMA_NAMES
    from finscore.streams.declared.columns import schema_of

    fam = load_family(family_path)
    if topic == fam.input.topic:
        ref, key = fam.input.schema, fam.input.key
    elif fam.has_label and topic == fam.label.topic:
        ref, key = fam.label.schema, fam.label.id
    else:
        label = f" or label ({fam.label.topic})" if fam.has_label else ""
        raise click.UsageError(
            f"{topic!r} is not family {fam.name}'s input ({fam.input.topic}){label} topic"
        )
    if ref.ref in SCHEMA_NAMES:
        return ref.ref, key
    return schema_of(ref, family_path.parent)[1], key


# -- tail ----------------------------------------------------------------------------------------
@click.command()
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
    from finscore.app.console.tail import Start, follow, parse_start
    from finscore.streams.admin import check_reachable

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

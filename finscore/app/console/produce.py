"""Rate-controlled producing of simulated, replayed or typed events (CLI, demo and bench).

Sources yield ``(topic_name, key, schema_name, record)``; :func:`produce` encodes them with the
shared codec (records given as ``bytes`` are sent as they are) and sends them with one
idempotent confluent-kafka producer, pacing to ``rate`` events per second (0 = as fast as
possible) and stopping after ``count`` events (of ``count_topic`` only, when given) or
``duration`` seconds, or when ``stop`` is set or Ctrl-C arrives; it always flushes what it
queued before returning.

:func:`file_events` turns JSON lines or CSV (a file or stdin) into such events, validated
against the topic's schema; each line that does not fit is reported to ``on_reject`` with its
line number and reason and skipped.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from confluent_kafka import KafkaException, Producer

from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, load_schema
from finscore.schemas.exceptions import DecodeError, EncodeError
from finscore.streams.exceptions import TransportError
from finscore.streams.kafka import producer_config

# (topic, key or None, schema name or the Codec of a schema outside the bundle, record or bytes)
Event = tuple[str, str | None, "str | Codec", dict | bytes]


@dataclass
class ProduceStats:
    """What a produce run did."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] | None = None
    rejected: int = 0  # input lines that did not fit the schema (file mode), never sent
    interrupted: bool = False  # Ctrl-C: stopped early, queued records flushed

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def transaction_events(
    prefix: str = "", seed: int = 0, drift_day: int | None = None, days: int = 60
) -> Iterator[Event]:
    """Simulated transactions and, after the label delay, their settled outcomes."""
    from finscore.sim.transactions import TransactionSimulator, TxSimConfig

    sim = TransactionSimulator(TxSimConfig(seed=seed, drift_day=drift_day, days=days))
    for kind, rec in sim.events():
        if kind == "transaction":
            yield prefix + T.TRANSACTIONS, rec["customer_id"], "transaction", rec
        else:
            yield prefix + T.FRAUD_LABELS, rec["customer_id"], "fraud_label", rec


def tick_events(prefix: str = "", seed: int = 0, source: str = "sim") -> Iterator[Event]:
    """Simulated order-book ticks (``source="sim"``) or a LOBSTER replay (``"lobster"``)."""
    if source == "lobster":
        from finscore.sim.lobster import lobster_ticks

        ticks = lobster_ticks()
    else:
        from finscore.sim.market import MarketSimConfig, MarketSimulator

        ticks = MarketSimulator(MarketSimConfig(seed=seed)).ticks()
    for rec in ticks:
        yield prefix + T.MARKET_TICKS, rec["instrument"], "market_tick", rec


def produce(
    client: Mapping[str, str | int],
    events: Iterator[Event],
    *,
    rate: float = 0.0,
    count: int | None = None,
    duration: float | None = None,
    encoding: str = "avro",
    stop: threading.Event | None = None,
    on_progress: Callable[[ProduceStats], None] | None = None,
    count_topic: str | None = None,
    registry: Any | None = None,
    stats: ProduceStats | None = None,
) -> ProduceStats:
    """Send events until ``count``/``duration``/``stop``/exhaustion/Ctrl-C; flushes before
    returning (after Ctrl-C too: ``stats.interrupted`` is set, nothing queued is lost).

    ``count`` counts events of ``count_topic`` only when given (e.g. transactions, not their
    labels). ``registry`` (a URL or client) is needed for ``encoding="confluent"``. ``stats``
    lets a caller share the counters (e.g. file mode's rejected lines).
    """
    codecs: dict[str, Codec] = {}
    stats = stats or ProduceStats()
    stats.by_topic = stats.by_topic or {}
    counted = 0
    failures: list[str] = []

    acked = [0]  # delivery reports, the truth once flushed (see the end)

    def delivered(err: object, _msg: object) -> None:
        acked[0] += 1
        if err is not None:
            stats.failed += 1
            if len(failures) < 5:
                failures.append(str(err))

    try:
        p = Producer(producer_config(client))
    except KafkaException as exc:
        raise TransportError(f"cannot create a producer: {exc}") from exc
    t0 = time.monotonic()
    step = 0.01  # pace in 10 ms slices
    next_report = t0 + 0.5
    try:
        for topic, key, schema, record in events:
            if count is not None and counted >= count:
                break
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                break
            if stop is not None and stop.is_set():
                break
            if rate > 0:
                ahead = stats.sent / rate - (now - t0)
                if ahead > step:
                    time.sleep(ahead)
            if isinstance(record, bytes):  # encoded beforehand (a benchmark's load stays low)
                value = record
            elif isinstance(schema, Codec):  # a declared family's schema
                value = schema.encode(record, encoding)
            else:
                codec = codecs.get(schema) or codecs.setdefault(
                    schema, Codec(schema, registry=registry)
                )
                value = codec.encode(record, encoding)
            while True:
                try:
                    p.produce(
                        topic, value, key.encode() if key is not None else None,
                        on_delivery=delivered,
                    )  # fmt: skip
                    break
                except BufferError:
                    p.poll(0.05)
            stats.sent += 1
            if count_topic is None or topic == count_topic:
                counted += 1
            stats.by_topic[topic] = stats.by_topic.get(topic, 0) + 1
            if stats.sent % 1000 == 0 or rate and rate < 1000:
                p.poll(0)
                if on_progress and time.monotonic() >= next_report:
                    stats.seconds = time.monotonic() - t0
                    on_progress(stats)
                    next_report = time.monotonic() + 0.5
    except KeyboardInterrupt:
        stats.interrupted = True  # fall through to the flush: what was queued is delivered
    remaining = p.flush(30)
    stats.seconds = time.monotonic() - t0
    if remaining:
        stats.failed += remaining
    elif stats.interrupted:
        # Ctrl-C can land between a produce and its count: once everything is flushed, the
        # delivery reports say how many were sent (one report per record queued)
        stats.sent = acked[0]
    if on_progress:
        on_progress(stats)
    if stats.failed:
        raise TransportError(
            f"{stats.failed} of {stats.sent} events were not delivered: {failures[:1]}",
            hint="check that the broker is up and the topics exist (`finscore topics --create`)",
        )
    return stats


def _csv_value(text: str, schema: Any) -> Any:
    """A CSV cell as the JSON value the schema's field expects (numbers, booleans, null)."""
    branches = schema if isinstance(schema, list) else [schema]
    if text == "" and "null" in branches:
        return None
    for b in branches:
        kind = b.get("type") if isinstance(b, dict) else b
        logical = b.get("logicalType") if isinstance(b, dict) else None
        if kind in ("int", "long") and (logical is None or text.lstrip("-").isdigit()):
            try:
                return int(text)
            except ValueError:
                return text  # the schema check names the field
        if kind in ("float", "double") and logical is None:
            try:
                return float(text)
            except ValueError:
                return text
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    return text


def read_lines(stream: TextIO, fmt: str, schema: dict) -> Iterator[tuple[int, dict | None, str]]:
    """``(line number, JSON object or None, raw text or reason)`` per non-empty input line.

    ``fmt``: ``jsonl`` (one JSON object per line), ``csv`` (a header line naming the fields;
    cells become the field's JSON type) or ``auto`` (CSV unless the first non-empty line starts
    with ``{``). A line that is not an object yields ``None`` and the reason.
    """
    lines = iter(enumerate(stream, 1))
    first: tuple[int, str] | None = None
    for n, line in lines:
        if line.strip():
            first = (n, line)
            break
    if first is None:
        return
    if fmt == "auto":
        fmt = "jsonl" if first[1].lstrip().startswith("{") else "csv"
    if fmt == "jsonl":
        for n, line in _chain(first, lines):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                yield n, None, f"invalid JSON ({exc})"
                continue
            if not isinstance(doc, dict):
                yield n, None, "not a JSON object"
                continue
            yield n, doc, line
        return
    fields = {f["name"]: f["type"] for f in schema.get("fields", [])}
    header = next(csv.reader([first[1]]))
    for n, line in lines:
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            yield n, None, f"{len(cells)} cells for {len(header)} columns"
            continue
        doc = {
            h: _csv_value(c, fields[h]) if h in fields else c
            for h, c in zip(header, cells, strict=True)
            if not (c == "" and h in fields and _has_default(schema, h))
        }
        yield n, doc, line


def _has_default(schema: dict, name: str) -> bool:
    return any(f["name"] == name and "default" in f for f in schema.get("fields", []))


def _chain(first: tuple[int, str], rest: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def file_events(
    stream: TextIO,
    topic: str,
    schema: str | dict,
    *,
    fmt: str = "auto",
    key: str | None = None,
    key_field: str | None = None,
    on_reject: Callable[[int, str], None] | None = None,
    registry: Any | None = None,
) -> Iterator[Event]:
    """Events for :func:`produce` from JSON lines or CSV (see :func:`read_lines`).

    Each object is validated against ``schema`` (the JSON encoding's rules: ISO-8601 or epoch
    timestamps, decimal strings...); the key is ``key`` when given, else the record's
    ``key_field`` (None: no key). A line that does not fit is reported to ``on_reject(line
    number, reason)`` and skipped.
    """
    doc_schema = schema if isinstance(schema, dict) else load_schema(schema)
    codec = (
        Codec(schema)
        if isinstance(schema, str)
        else Codec(str(schema.get("name", "record")), reader_schema=schema, registry=registry)
    )
    reject = on_reject or (lambda _n, _r: None)
    for n, doc, raw in read_lines(stream, fmt, doc_schema):
        if doc is None:
            reject(n, raw)
            continue
        try:
            record = codec.decode(json.dumps(doc).encode())
        except DecodeError as exc:
            reject(n, exc.reason)
            continue
        k = key
        if k is None and key_field is not None:
            value = record.get(key_field)
            if value is None:
                reject(n, f"no key: the record has no {key_field!r} (use -k or --key-field)")
                continue
            k = str(value)
        yield topic, k, schema if isinstance(schema, str) else codec, record  # type: ignore[misc]


def encode_check(schema: str, encoding: str, registry: Any | None) -> None:
    """Fail early (before reading any input) when ``encoding`` cannot be produced: the
    Confluent wire format needs a registry."""
    if encoding == "confluent" and registry is None:
        raise EncodeError(
            "the Confluent wire format needs a schema registry",
            hint="set FINSCORE_SCHEMA_REGISTRY_URL (or use --encoding avro|json)",
        )

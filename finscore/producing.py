"""Rate-controlled producing of simulated or replayed events (used by the CLI, demo and bench).

Sources yield ``(topic_name, key, schema_name, record)``; :func:`produce` encodes them with the
shared codec (records given as ``bytes`` are sent as they are) and sends them with one
idempotent confluent-kafka producer, pacing to ``rate`` events per second (0 = as fast as
possible) and stopping after ``count`` events or ``duration`` seconds, or when ``stop`` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer

from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.exceptions import TransportError
from finscore.streams.kafka import producer_config

Event = tuple[str, str, str, dict | bytes]  # (topic, key, schema, record or its encoded bytes)


@dataclass
class ProduceStats:
    """What a produce run did."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] | None = None

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
            yield prefix + T.FRAUD_LABELS, rec["terminal_id"], "fraud_label", rec


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
) -> ProduceStats:
    """Send events until ``count``/``duration``/``stop``/exhaustion; flushes before returning."""
    codecs: dict[str, Codec] = {}
    stats = ProduceStats(by_topic={})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
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
    assert stats.by_topic is not None
    for topic, key, schema, record in events:
        if count is not None and stats.sent >= count:
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
        if isinstance(record, bytes):  # encoded beforehand (e.g. to keep a benchmark's load low)
            value = record
        else:
            codec = codecs.get(schema) or codecs.setdefault(schema, Codec(schema))
            value = codec.encode(record, encoding)
        while True:
            try:
                p.produce(topic, value, key.encode(), on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        stats.sent += 1
        stats.by_topic[topic] = stats.by_topic.get(topic, 0) + 1
        if stats.sent % 1000 == 0:
            p.poll(0)
            if on_progress and time.monotonic() >= next_report:
                stats.seconds = time.monotonic() - t0
                on_progress(stats)
                next_report = time.monotonic() + 0.5
    remaining = p.flush(30)
    stats.seconds = time.monotonic() - t0
    if remaining:
        stats.failed += remaining
    if on_progress:
        on_progress(stats)
    if stats.failed:
        raise TransportError(
            f"{stats.failed} of {stats.sent} events were not delivered: {failures[:1]}",
            hint="check that the broker is up and the topics exist (`finscore topics --create`)",
        )
    return stats

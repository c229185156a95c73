"""Kafka transport on confluent-kafka (librdkafka): batch consume, bulk produce, safe commits.

At-least-once (default): records of a batch are produced asynchronously; the batch's offsets
are committed once librdkafka has acknowledged every one of its records. Batches pipeline:
a new batch is polled while earlier ones are still in flight, so the ~50 ms broker round trip
of the embedded broker is paid once, not per batch.

Exactly-once (``exactly_once=True``): each batch is one Kafka transaction holding its outputs,
dead letters, state-changelog records and its input offsets
(``send_offsets_to_transaction``); readers use ``isolation.level=read_committed``.

Acknowledgements are tracked in :attr:`KafkaTransport.delivery` (:class:`DeliveryStats`):
records acknowledged per topic (a batch's records count once all of them are acknowledged; in
exactly-once mode once their transaction commits), failed deliveries, records still
unacknowledged and how long acknowledgements have not progressed while some are pending. The
worker's metrics and ``/health`` are built on it, never on what was merely queued.

Clients never create topics (``allow.auto.create.topics=false``; librdkafka's producer default
is true, and brokers that allow it create them with their own partition count): a missing topic
is reported, and created from the catalog by ``finscore topics --create``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from finscore.logging import get_logger, with_kafka_logger
from finscore.schemas.topics import TopicSpec
from finscore.streams.admin import (
    ensure_topics,
    partition_watermarks,
    partitions_of,
    replication_of,
    true_ends,
)
from finscore.streams.exceptions import BrokerUnreachable, TransportError
from finscore.streams.transport import (
    AssignCallback,
    DeliveryStats,
    Message,
    OutRecord,
    SkippedCallback,
    TransportSpec,
)
from finscore.streams.transport import TopicPartition as TP

log = get_logger(__name__)

__all__ = [
    "DeliveryStats",
    "KafkaOptions",
    "KafkaTopicReader",
    "KafkaTransport",
    "KafkaTransportFactory",
    "consume_available",
    "producer_config",
]


@dataclass(frozen=True)
class KafkaOptions:
    """Value object with everything a transport needs; built from Settings at the edge."""

    client: Mapping[str, str | int]  # connection + security (Settings.kafka_config())
    group_id: str
    topics: tuple[str, ...]
    exactly_once: bool = False
    session_timeout_ms: int = 6000
    transactional_id: str | None = None
    auto_offset_reset: str = "earliest"
    producer_overrides: Mapping[str, str | int] = field(default_factory=dict)
    # Exactly-once recovery guard: (output topic, its schema) whose committed records name their
    # source offsets; on assignment the consumer starts after the last input already scored.
    resume_from: tuple[str, str] | None = None
    # Schema-registry client config ({"url": ...}): how the recovery guard reads outputs written
    # in the Confluent wire format (None: no registry, outputs are Avro single-object or JSON).
    schema_registry: Mapping[str, str] | None = None
    consumer_overrides: Mapping[str, str | int] = field(default_factory=dict)


def producer_config(client: Mapping[str, str | int], **extra: str | int) -> dict[str, str | int]:
    """A high-throughput idempotent producer config on top of the client settings."""
    conf: dict[str, str | int] = {
        **with_kafka_logger(client),
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "allow.auto.create.topics": False,  # never create a topic with the broker's defaults
    }
    conf.update(extra)
    return conf


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list:
    """Up to ``max_messages`` raw messages: those already fetched, else the first to arrive
    within ``timeout`` seconds with any fetched alongside it. (``Consumer.consume(n, t)``
    returns only when it has ``n`` messages or ``t`` has passed, so at light load it holds
    every message up to ``t``.)"""
    raw = consumer.consume(max_messages, 0)
    if not raw:
        raw = consumer.consume(1, timeout)
        if raw and max_messages > 1:
            raw += consumer.consume(max_messages - 1, 0)
    return raw


class _InFlight:
    """Offsets of one polled batch and how many of its produced records await an ack."""

    __slots__ = ("offsets", "pending", "failed", "topics", "stats")

    def __init__(self, offsets: dict[TP, int], stats: DeliveryStats | None = None) -> None:
        self.offsets = offsets
        self.pending = 0
        self.failed: KafkaError | None = None
        self.topics: Counter[str] = Counter()  # records produced, per topic
        self.stats = stats or DeliveryStats()

    def ack(self, err: KafkaError | None, _msg: object) -> None:
        self.pending -= 1
        st = self.stats
        st.unacked -= 1
        if err is None:
            st.acks += 1
            return
        st.failed += 1
        st.last_error = str(err)
        if self.failed is None:
            self.failed = err


def _next_offsets(batch: Sequence[Message]) -> dict[TP, int]:
    offsets: dict[TP, int] = {}
    for m in batch:
        tp = (m.topic, m.partition)
        if m.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = m.offset + 1
    return offsets


class KafkaTransport:
    """A consumer in a group plus a producer; see the module docstring for the guarantees."""

    def __init__(
        self,
        options: KafkaOptions,
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
    ) -> None:
        self.options = options
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._lock = threading.Lock()
        consumer_conf: dict[str, str | int] = {
            **with_kafka_logger(options.client),
            "group.id": options.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": options.auto_offset_reset,
            "session.timeout.ms": options.session_timeout_ms,
            "heartbeat.interval.ms": max(500, options.session_timeout_ms // 6),
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 262144,
            "allow.auto.create.topics": False,
        }
        if options.exactly_once:
            consumer_conf["isolation.level"] = "read_committed"
        consumer_conf.update(options.consumer_overrides)
        extra: dict[str, str | int] = dict(options.producer_overrides)
        if options.exactly_once:
            extra["transactional.id"] = options.transactional_id or (
                f"{options.group_id}-{uuid.uuid4().hex[:12]}"
            )
        self.producer = Producer(producer_config(options.client, **extra))
        self.consumer = Consumer(consumer_conf)
        self._inflight: deque[_InFlight] = deque()
        self._current: _InFlight | None = None
        self.delivery = DeliveryStats()
        # Records refused at produce time, by error name (see _refused); and who to tell.
        self.refused: Counter[str] = Counter()
        self.on_refused: Callable[[OutRecord, str], None] | None = None
        self.on_skipped: SkippedCallback | None = None
        self._acks_seen = 0
        self._txn_topics: Counter[str] = Counter()  # exactly-once: records of the open txn
        self._assigned: set[TP] = set()
        if options.exactly_once:
            try:
                self.producer.init_transactions(30)
            except KafkaException as exc:
                raise TransportError(f"could not initialise transactions: {exc}") from exc
        self.consumer.subscribe(
            list(options.topics), on_assign=self._assigned_cb, on_revoke=self._revoked_cb
        )
        log.info(
            "transport.subscribed",
            group=options.group_id,
            topics=list(options.topics),
            exactly_once=options.exactly_once,
        )

    # -- rebalancing --------------------------------------------------------------------------
    def _assigned_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        log.info("transport.assigned", partitions=tps)
        if self._on_assign and tps:
            self._on_assign(tps)
        if self.options.exactly_once and self.options.resume_from and partitions:
            self._guard_resume(consumer, partitions)

    def _guard_resume(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        from finscore.schemas.codec import registry_client
        from finscore.streams.changelog import resume_offsets

        out_topic, schema = self.options.resume_from  # type: ignore[misc]
        registry = registry_client(self.options.schema_registry)
        by_topic: dict[str, list[int]] = {}
        for p in partitions:
            by_topic.setdefault(p.topic, []).append(p.partition)
        skipped: dict[str, dict[int, tuple[int | None, int]]] = {}
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, 10)
        }
        for topic, parts in by_topic.items():
            seen = resume_offsets(
                self.options.client, out_topic, schema, topic, parts, registry=registry
            )
            for p in partitions:
                nxt = seen.get(p.partition) if p.topic == topic else None
                was = committed.get((p.topic, p.partition), -1)
                if nxt is not None and nxt > was:
                    log.warning("transport.resume_after_committed_outputs", topic=topic,
                                partition=p.partition, committed=was, resume=nxt)  # fmt: skip
                    p.offset = nxt
                    skipped.setdefault(topic, {})[p.partition] = (was if was >= 0 else None, nxt)
        if skipped:
            consumer.assign(partitions)
            for topic, ranges in skipped.items():
                if self.on_skipped is not None:
                    self.on_skipped(topic, ranges)

    def _revoked_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("transport.revoked", partitions=tps)
        if not self.options.exactly_once:
            self.drain(timeout=10)
        self._assigned.difference_update(tps)
        if self._on_revoke and tps:
            self._on_revoke(tps)

    def assignment(self) -> list[TP]:
        """Partitions this worker owns right now."""
        return sorted(self._assigned)

    # -- the batch cycle ----------------------------------------------------------------------
    def poll_batch(self, max_messages: int = 5000, timeout: float = 0.05) -> list[Message]:
        """Up to ``max_messages`` records: those already fetched, else the first to arrive
        within ``timeout`` seconds together with any fetched alongside it (the wait ends
        with the first record, not at the timeout: a record never idles in the client).

        Broker-side errors (e.g. partition EOF) are logged and skipped, never returned.
        """
        self._settle()
        raw = consume_available(self.consumer, max_messages, timeout)
        out: list[Message] = []
        for m in raw:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("transport.consume_error", error=str(err))
                continue
            ts = m.timestamp()[1]
            out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts))
        if out and self.options.exactly_once:
            self.producer.begin_transaction()
        return out

    def produce_batch(self, records: Sequence[OutRecord]) -> None:
        """Queue records for delivery (asynchronous in at-least-once mode).

        Acknowledgement bookkeeping (:attr:`delivery`) counts every record as pending here; a
        record that is not queued after all must be given back with :meth:`_not_queued`.
        """
        st = self.delivery
        if not records:
            return
        if st.unacked <= 0:  # the stall clock starts with the first pending record
            st.last_progress = time.monotonic()
        st.unacked += len(records)
        if self.options.exactly_once:
            cb = None
            self._txn_topics.update([r.topic for r in records])
        else:
            if self._current is None:
                self._current = _InFlight({}, st)
            cb = self._current.ack
            self._current.pending += len(records)
            self._current.topics.update([r.topic for r in records])
        produce = self.producer.produce
        for r in records:
            # Positional arguments (topic, value, key, partition, on_delivery, timestamp): a
            # third cheaper than keywords on the hot path; -1 / 0 are "partitioner" / "now".
            args = (r.topic, r.value, r.key, -1 if r.partition is None else r.partition, cb,
                    r.timestamp_ms or 0)  # fmt: skip
            while True:
                try:
                    produce(*args)
                    break
                except BufferError:
                    self.producer.poll(0.05)
                except KafkaException as exc:  # refused at produce time: data, not a crash
                    self._refused(r, exc.args[0])
                    break
        self.producer.poll(0)

    def _refused(self, record: OutRecord, err: KafkaError) -> None:
        """A record the client refused to queue (too large, invalid, unknown topic or
        partition): counted in :attr:`refused` (by error name), logged, handed to
        :attr:`on_refused`, and never raised out of the loop (the batch goes on)."""
        self._not_queued(record)
        name = err.name() if hasattr(err, "name") else str(err)
        self.refused[name] += 1
        log.warning("transport.produce_refused", topic=record.topic, error=str(err),
                    size=len(record.value or b"") + len(record.key or b""))  # fmt: skip
        if self.on_refused is not None:
            self.on_refused(record, name)

    def _not_queued(self, record: OutRecord) -> None:
        """Undo :meth:`produce_batch`'s bookkeeping for a record that was never queued (a
        produce-time refusal handled as data): it is neither pending nor acknowledged."""
        self.delivery.unacked -= 1
        tally = self._txn_topics if self.options.exactly_once else None
        if not self.options.exactly_once and self._current is not None:
            self._current.pending -= 1
            tally = self._current.topics
        if tally is not None and tally[record.topic] > 0:
            tally[record.topic] -= 1

    def produce_alone(self, records: Sequence[OutRecord]) -> None:
        """Produce records that belong to no polled batch; in exactly-once mode in a
        transaction of their own (committed with no offsets)."""
        if not self.options.exactly_once:
            self.produce_batch(records)
            return
        self.producer.begin_transaction()
        self.produce_batch(records)
        self.commit([])

    def lag(self) -> dict[TP, int]:
        """Records behind the (cached) high watermark per assigned partition with a known
        position; best effort (empty when the client cannot tell yet)."""
        c = self.consumer
        out: dict[TP, int] = {}
        try:
            tps = [TopicPartition(t, p) for t, p in self.assignment()]
            for tp in c.position(tps):
                _, high = c.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        except Exception as exc:  # noqa: BLE001 - lag is best effort
            log.debug("transport.lag_unavailable", error=str(exc))
        return out

    def commit(self, batch: Sequence[Message]) -> None:
        """Mark ``batch`` done: commit its offsets when its outputs are safely on the bus."""
        offsets = _next_offsets(batch)
        if self.options.exactly_once:
            self._commit_transaction(offsets)
            return
        current = self._current or _InFlight({}, self.delivery)
        self._current = None
        current.offsets = offsets
        self._inflight.append(current)
        self._settle()

    def _commit_transaction(self, offsets: dict[TP, int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if tps:
                self.producer.send_offsets_to_transaction(
                    tps, self.consumer.consumer_group_metadata(), 30
                )
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            self._txn_done(acknowledged=False, error=str(err))
            if err.txn_requires_abort():
                self.producer.abort_transaction(30)
                self._rewind(offsets)
                log.warning("transport.transaction_aborted", error=str(err))
                return
            raise TransportError(f"transaction commit failed: {err}") from exc
        self._txn_done(acknowledged=True)

    def _txn_done(self, acknowledged: bool, error: str = "") -> None:
        """Exactly-once bookkeeping: the open transaction's records are acknowledged
        (committed) or failed (aborted) together."""
        st, n = self.delivery, self.delivery.unacked
        if acknowledged:
            st.acked.update(self._txn_topics)
            st.acks += n
        else:
            st.failed += n
            st.last_error = error
        st.unacked = 0
        st.last_progress = time.monotonic()
        self._txn_topics = Counter()

    def _rewind(self, offsets: dict[TP, int]) -> None:
        """After an aborted transaction, seek back to the last committed positions."""
        committed = self.consumer.committed([TopicPartition(t, p) for (t, p) in offsets], 10)
        for tp in committed:
            off = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, off))

    def _settle(self, sync: bool = False) -> None:
        """Serve delivery reports; commit the prefix of batches whose records are all acked."""
        if self.options.exactly_once:
            return
        self.producer.poll(0)
        st = self.delivery
        if st.acks != self._acks_seen or st.unacked <= 0:
            self._acks_seen = st.acks
            st.last_progress = time.monotonic()
        ready: dict[TP, int] = {}
        while self._inflight and self._inflight[0].pending <= 0:
            done = self._inflight.popleft()
            if done.failed is None:
                st.acked.update(done.topics)
            if done.failed is not None:
                raise TransportError(
                    f"produce failed, offsets not committed: {done.failed}",
                    hint="the batch will be re-read after restart (at-least-once)",
                )
            ready.update(done.offsets)
        ready = {tp: o for tp, o in ready.items() if tp in self._assigned}
        if ready:
            tps = [TopicPartition(t, p, o) for (t, p), o in ready.items()]
            try:
                self.consumer.commit(offsets=tps, asynchronous=not sync)
            except KafkaException as exc:  # e.g. rebalance in progress: re-read is safe
                log.warning("transport.commit_failed", error=str(exc))

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every produced record is acknowledged and its batch committed."""
        if self.options.exactly_once:
            return
        self.producer.flush(timeout)
        self._settle(sync=True)

    def close(self) -> None:
        """Drain, commit, leave the group."""
        try:
            self.drain()
        finally:
            self.consumer.close()
            log.info("transport.closed", group=self.options.group_id)


def to_message(m: Any) -> Message:
    """A confluent-kafka message as a :class:`Message`."""
    return Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])


class KafkaTopicReader:
    """A :class:`~finscore.streams.transport.TopicReader` on a consumer that is assigned
    partitions (it joins no group and commits nothing); broker-side errors (partition EOF, ...)
    are skipped, never returned."""

    def __init__(
        self,
        client: Mapping[str, str | int],
        topic: str,
        *,
        group: str,
        read_committed: bool = False,
        max_message_bytes: int | None = None,
        fetch_wait_ms: int = 10,
    ) -> None:
        self.topic = topic
        self.client = client
        conf: dict[str, str | int] = {**with_kafka_logger(client), "group.id": group,
                                      "enable.auto.commit": False,
                                      "fetch.wait.max.ms": fetch_wait_ms}  # fmt: skip
        if max_message_bytes is not None:
            conf["fetch.message.max.bytes"] = max_message_bytes
        if read_committed:
            conf["isolation.level"] = "read_committed"
        self.consumer = Consumer(conf)
        self._assigned: list[int] = []

    def assign(self, starts: Mapping[int, int | None]) -> None:
        """Read ``starts``' partitions from their offsets (None: the beginning)."""
        self._assigned = sorted(starts)
        self.consumer.assign(
            [
                TopicPartition(self.topic, p, OFFSET_BEGINNING if o is None else o)
                for p, o in starts.items()
            ]
        )

    def assigned(self) -> list[int]:
        return list(self._assigned)

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` records, waiting at most ``timeout`` seconds."""
        return [to_message(m) for m in self.consumer.consume(max_messages, timeout)
                if m.error() is None]  # fmt: skip

    def watermarks(self, partition: int, timeout: float = 10.0) -> tuple[int, int]:
        return partition_watermarks(self.consumer, TopicPartition(self.topic, partition), timeout)

    def true_ends(self, partitions: Sequence[int], timeout: float = 10.0) -> dict[int, tuple[int, int]]:  # fmt: skip
        return true_ends(self.client, self.topic, list(partitions), timeout)

    def positions(self) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in self._assigned]
        return {tp.partition: tp.offset for tp in self.consumer.position(tps)}

    def close(self) -> None:
        self.consumer.close()


class KafkaTransportFactory:
    """The :class:`~finscore.streams.transport.TransportFactory` of a Kafka cluster (``client``:
    connection + security settings); what a worker uses unless a test injects another."""

    def __init__(self, client: Mapping[str, str | int]) -> None:
        self.client = client
        self._admin: Any = None

    def transport(
        self,
        spec: TransportSpec,
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
    ) -> KafkaTransport:
        options = KafkaOptions(
            client=self.client,
            group_id=spec.group_id,
            topics=spec.topics,
            exactly_once=spec.exactly_once,
            session_timeout_ms=spec.session_timeout_ms,
            transactional_id=spec.transactional_id,
            resume_from=spec.resume_from,
            schema_registry=spec.schema_registry,
        )
        return KafkaTransport(options, on_assign=on_assign, on_revoke=on_revoke)

    def reader(
        self,
        topic: str,
        *,
        group: str,
        read_committed: bool = False,
        max_message_bytes: int | None = None,
        fetch_wait_ms: int = 10,
    ) -> KafkaTopicReader:
        return KafkaTopicReader(self.client, topic, group=group, read_committed=read_committed,
                                max_message_bytes=max_message_bytes,
                                fetch_wait_ms=fetch_wait_ms)  # fmt: skip

    def partitions(self, topic: str) -> list[int]:
        return partitions_of(self.client, topic)

    def topic_partitions(self, timeout: float = 5.0) -> dict[str, int]:
        """Every topic with its partition count, on one long-lived admin client (the health
        monitor asks every few seconds)."""
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient(with_kafka_logger(self.client))
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(str(self.client.get("bootstrap.servers"))) from exc
        return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}

    def ensure_topic_like(self, name: str, like: str, config: Mapping[str, str]) -> None:
        """Create ``name`` with ``like``'s partition count and replication factor (a worker's
        changelogs are co-partitioned with its input and survive what it survives)."""
        parts = len(partitions_of(self.client, like))
        rf = replication_of(self.client, like)
        ensure_topics(self.client, [TopicSpec(name, parts, "state", "key", dict(config))], rf)

"""Cluster administration: reachability, idempotent topic creation, offsets and lag.

Topics are only ever created here, from the catalog (:mod:`finscore.schemas.topics`): clients
are configured never to create them (``allow.auto.create.topics=false``), and lookups use a
full metadata listing (a per-topic request would make brokers with auto-creation create it).
A catalog topic that exists with another partition count is reported
(:func:`partition_mismatches`), never silently accepted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from finscore.logging import get_logger, with_kafka_logger
from finscore.schemas.topics import TopicSpec
from finscore.streams.exceptions import BrokerUnreachable, TopicMissing, TransportError

log = get_logger(__name__)

ClientConf = Mapping[str, str | int]


def admin(client: ClientConf) -> AdminClient:
    """An AdminClient for the cluster (librdkafka's logs through structlog)."""
    return AdminClient(with_kafka_logger(client))


def check_reachable(client: ClientConf, timeout: float = 5.0) -> list[str]:
    """Topic names on the cluster; raises TransportError with a hint when nobody answers."""
    try:
        md = admin(client).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(str(client.get("bootstrap.servers"))) from exc
    return sorted(md.topics)


def ensure_topics(
    client: ClientConf, specs: Iterable[TopicSpec], replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    existing = set(check_reachable(client))
    new = [
        NewTopic(s.name, s.partitions, replication_factor, config=dict(s.config))
        for s in specs
        if s.name not in existing
    ]
    if not new:
        return []
    adm = admin(client)  # must outlive the futures
    futures = adm.create_topics(new, operation_timeout=30)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a racing creator won
                raise TransportError(f"could not create topic {name}: {exc}") from exc
    log.info("topics.created", topics=created)
    return created


@dataclass(frozen=True)
class PartitionMismatch:
    """A catalog topic that exists with a partition count other than the catalog's."""

    topic: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return f"{self.topic} has {self.actual} partition(s), the catalog says {self.expected}"


def topic_partitions(client: ClientConf, timeout: float = 5.0) -> dict[str, int]:
    """Every topic on the cluster with its partition count (a full listing: creates nothing).
    Raises TransportError with a hint when no broker answers."""
    try:
        md = admin(client).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(str(client.get("bootstrap.servers"))) from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def partition_mismatches(
    client: ClientConf, specs: Iterable[TopicSpec], timeout: float = 5.0
) -> list[PartitionMismatch]:
    """The catalog topics that exist with another partition count than ``specs`` declare."""
    existing = topic_partitions(client, timeout)
    return [
        PartitionMismatch(s.name, s.partitions, existing[s.name])
        for s in specs
        if s.name in existing and existing[s.name] != s.partitions
    ]


def missing_topics_error(existing: Iterable[str], names: Iterable[str]) -> TopicMissing | None:
    """The :class:`TopicMissing` (one sentence, hint: ``finscore topics --create``) naming every
    topic of ``names`` not in ``existing``; None when all exist."""
    have = set(existing)
    missing = [n for n in names if n not in have]
    if not missing:
        return None
    return TopicMissing(
        f"required topic(s) do not exist: {', '.join(missing)}",
        hint="create the catalog with `finscore topics --create` (same FINSCORE_TOPIC_PREFIX)",
    )


def require_topics(client: ClientConf, names: Iterable[str], timeout: float = 5.0) -> None:
    """Raise :class:`TopicMissing` (one sentence, hint: ``finscore topics --create``) naming
    every topic of ``names`` that does not exist."""
    err = missing_topics_error(topic_partitions(client, timeout), names)
    if err is not None:
        raise err


def partitions_of(client: ClientConf, topic: str, timeout: float = 5.0) -> list[int]:
    """Partition ids of ``topic``; raises TopicMissing when it does not exist."""
    # Full listing, never a per-topic metadata request: brokers with auto-creation enabled
    # (Tansu, many Kafka setups) would create the topic just because we asked about it.
    md = admin(client).list_topics(timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise TopicMissing(
            f"topic {topic!r} does not exist",
            hint="create the catalog with `finscore topics --create`",
        )
    return sorted(t.partitions)


def replication_of(client: ClientConf, topic: str, timeout: float = 5.0) -> int:
    """Replication factor of ``topic`` (the most replicas any partition has); raises
    TopicMissing when it does not exist. Topics a worker creates for itself (state changelogs)
    copy it from their input, so they survive what the input survives."""
    md = admin(client).list_topics(timeout=timeout)  # full listing: see partitions_of
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise TopicMissing(
            f"topic {topic!r} does not exist",
            hint="create the catalog with `finscore topics --create`",
        )
    return max(1, *(len(p.replicas) for p in t.partitions.values()))


@dataclass(frozen=True)
class PartitionOffsets:
    """Low and high watermark of one partition, and a group's committed offset if asked."""

    topic: str
    partition: int
    low: int
    high: int
    committed: int | None = None

    @property
    def messages(self) -> int:
        return self.high - self.low

    @property
    def lag(self) -> int | None:
        if self.committed is None:
            return None
        return self.high - max(self.committed, self.low)


def partition_watermarks(c: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """(low, high) of one partition, waiting out a just-created partition's leader election
    (Apache Kafka answers NOT_LEADER_FOR_PARTITION for a moment after creation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"no offsets for {tp.topic}[{tp.partition}]: {exc.args[0]}",
                    hint="the partition may have no leader yet; try again in a few seconds",
                ) from exc
            time.sleep(0.2)


def offsets(
    client: ClientConf, topics: Iterable[str], group: str | None = None, timeout: float = 5.0
) -> list[PartitionOffsets]:
    """Watermarks of every partition of ``topics`` (and ``group``'s committed offsets)."""
    conf = {**client, "group.id": group or "finscore-inspect", "enable.auto.commit": False}
    c = Consumer(conf)
    try:
        existing = c.list_topics(timeout=timeout).topics
        out: list[PartitionOffsets] = []
        for topic in topics:
            if topic not in existing:
                continue
            parts = sorted(existing[topic].partitions)
            committed: dict[int, int] = {}
            if group:
                for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout):
                    if tp.offset >= 0:
                        committed[tp.partition] = tp.offset
            for p in parts:
                low, high = partition_watermarks(c, TopicPartition(topic, p), timeout)
                out.append(PartitionOffsets(topic, p, low, high, committed.get(p)))
        return out
    finally:
        c.close()


def true_ends(client: ClientConf, topic: str, parts: list[int],
              timeout: float = 10.0) -> dict[int, tuple[int, int]]:  # fmt: skip
    """``{partition: (low, end)}`` where ``end`` is one past the last record, committed or not:
    the broker's high watermark, or past the last record read from just before it (a stale
    watermark on the embedded broker points into the last batch). A ``read_committed`` reader
    reaches ``end`` once the transactions open on the partition have ended. Not the last stable
    offset: the embedded broker reports 0 for it while any transaction is open on the
    partition, which made a restore or a catch-up see an empty partition
    (``tests/streams/test_aborted_records.py``)."""
    c = Consumer(
        {
            **client,
            "group.id": "finscore-inspect",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        ends: dict[int, tuple[int, int]] = {}
        probe = []
        for p in parts:
            low, high = partition_watermarks(c, TopicPartition(topic, p), timeout)
            ends[p] = (int(low), int(high))
            if high > low:
                probe.append(TopicPartition(topic, p, max(int(low), int(high) - 1)))
        if not probe:
            return ends
        c.assign(probe)
        pending = {tp.partition for tp in probe}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                    continue
                low, end = ends[m.partition()]
                ends[m.partition()] = (low, max(end, m.offset() + 1))
        return ends
    finally:
        c.close()


@dataclass(frozen=True)
class GroupMember:
    """One member of a consumer group and the partitions it owns."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class GroupView:
    """A consumer group as ``kafka-consumer-groups --describe`` shows it: its state, members
    (None when the broker does not describe groups) and every committed partition's offsets."""

    group: str
    state: str
    members: list[GroupMember] | None
    partitions: list[PartitionOffsets]

    def owner(self, topic: str, partition: int) -> GroupMember | None:
        """The member that owns ``topic[partition]``, if any."""
        for m in self.members or []:
            if (topic, partition) in m.partitions:
                return m
        return None


def describe_group(client: ClientConf, group: str, timeout: float = 5.0) -> GroupView:
    """Members, state and per-partition offsets of ``group`` (committed offsets from the
    broker, end offsets from the partitions). A broker that cannot describe groups still
    gives the offsets (``members`` is then None)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    a = admin(client)
    state, members = "unknown", None
    try:
        desc = a.describe_consumer_groups([group], request_timeout=timeout)[group].result()
        state = str(getattr(desc.state, "name", desc.state)).lower()
        members = [
            GroupMember(
                m.member_id,
                m.client_id,
                m.host,
                tuple(
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                ),
            )
            for m in desc.members
        ]
    except KafkaException as exc:
        log.debug("admin.describe_group_unavailable", group=group, error=str(exc))
    try:
        fut = a.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
        )[group]
        committed = [tp for tp in fut.result().topic_partitions if tp.offset >= 0]
    except KafkaException as exc:
        raise TransportError(
            f"no committed offsets for group {group!r}: {exc.args[0]}",
            hint="check the group name (`finscore status` lists the workers' groups)",
        ) from exc
    topics = sorted(
        {tp.topic for tp in committed} | {t for m in members or [] for t, _ in m.partitions}
    )
    by_tp = {(p.topic, p.partition): p for p in offsets(client, topics, group, timeout)}
    for topic in topics:  # a stale high watermark (embedded broker) must not hide lag
        parts = [p for t, p in by_tp if t == topic]
        for p, (_, end) in true_ends(client, topic, parts, timeout).items():
            old = by_tp[(topic, p)]
            by_tp[(topic, p)] = PartitionOffsets(
                topic, p, old.low, max(old.high, end), old.committed
            )
    return GroupView(group, state, members, [by_tp[k] for k in sorted(by_tp)])

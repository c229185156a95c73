"""The transport seam: what the workers need from a message bus, and nothing more.

The pure core (:mod:`finscore.streams.pipeline`) works on lists of :class:`Message` and returns
lists of :class:`OutRecord`; a :class:`Transport` moves them to and from the bus for one
worker's consumer group, and a :class:`TopicReader` follows or reads some partitions of one
topic outside any group (side inputs, state changelogs, model announcements). A
:class:`TransportFactory` opens both and answers the few metadata questions a worker asks.

Implementations: :mod:`finscore.streams.kafka` (confluent-kafka) and
:mod:`finscore.streams.testing` (an in-memory bus for tests, like ``bytewax.testing``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from finscore.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "AssignCallback",
    "SkippedCallback",
    "DeliveryStats",
    "Message",
    "OutRecord",
    "TopicPartition",
    "TopicReader",
    "Transport",
    "TransportFactory",
    "TransportSpec",
    "catch_up",
    "read_partitions",
]


@dataclass(slots=True)
class Message:
    """One consumed record: where it came from, its raw key and value, its broker timestamp."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass(slots=True)
class OutRecord:
    """One record to produce. ``partition=None`` lets the partitioner hash the key.

    ``timestamp_ms`` (0 = broker/producer time) is set to the input record's timestamp for
    outputs, as Kafka Streams does, so event-time and end-to-end latency survive each hop.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    timestamp_ms: int = 0


TopicPartition = tuple[str, int]
AssignCallback = Callable[[list[TopicPartition]], None]
# (topic, {partition: (committed offset or None, first offset read)})
SkippedCallback = Callable[[str, dict[int, tuple[int | None, int]]], None]


class DeliveryStats:
    """Acknowledgement bookkeeping of one transport.

    Written by the transport's thread (in Kafka, delivery callbacks run inside its ``poll``);
    plain attributes, so a health thread may read them at any time.
    """

    __slots__ = ("acked", "acks", "failed", "last_error", "last_progress", "unacked")

    def __init__(self) -> None:
        self.acked: Counter[str] = Counter()  # records acknowledged, per topic
        self.acks = 0  # acknowledgements received (successes), all topics
        self.failed = 0  # records whose delivery failed (or whose transaction aborted)
        self.last_error = ""
        self.unacked = 0  # records produced and not yet acknowledged
        self.last_progress = time.monotonic()  # last ack, or last time nothing was pending

    def stalled_s(self, now: float | None = None) -> float:
        """Seconds since acknowledgements last progressed while records are pending (0 when
        nothing is pending)."""
        if self.unacked <= 0:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.last_progress)


@dataclass(frozen=True)
class TransportSpec:
    """What a worker asks of its group transport: the group, the topics it subscribes to, the
    delivery mode, and (exactly-once) the output whose committed records name their source
    offsets, so a restarted worker resumes after the last input already scored."""

    group_id: str
    topics: tuple[str, ...]
    exactly_once: bool = False
    session_timeout_ms: int = 6000
    transactional_id: str | None = None
    resume_from: tuple[str, str] | None = None  # (output topic, its schema)
    schema_registry: Mapping[str, str] | None = None  # how resume_from's records are read


class Transport(Protocol):
    """Batch-oriented access to the bus for one worker.

    Delivery contract: :meth:`commit` marks a polled batch done. In at-least-once mode its
    offsets are committed only after every record produced for it has been acknowledged.
    In exactly-once mode ``produce_batch`` + ``commit`` form one transaction.
    :attr:`delivery` counts acknowledgements; :attr:`on_refused` is told of every record
    refused at produce time (counted, never raised); :attr:`on_skipped` of the inputs the
    exactly-once recovery guard starts after (``topic``, ``{partition: (committed offset or
    None, first offset read)}``), told before any of the partition's records is polled.
    """

    delivery: DeliveryStats
    on_refused: Callable[[OutRecord, str], None] | None
    on_skipped: SkippedCallback | None

    def poll_batch(self, max_messages: int, timeout: float) -> list[Message]: ...

    def produce_batch(self, records: Sequence[OutRecord]) -> None: ...

    def produce_alone(self, records: Sequence[OutRecord]) -> None:
        """Produce records that belong to no polled batch (side-input dead letters); in
        exactly-once mode in a transaction of their own."""
        ...

    def commit(self, batch: Sequence[Message]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end, per assigned partition whose position is known (best
        effort: an empty dict when the bus cannot tell)."""
        ...

    def close(self) -> None: ...


class TopicReader(Protocol):
    """Some partitions of one topic, read outside any consumer group (nothing is committed).

    :meth:`assign` positions it (``None``: the partition's beginning); :meth:`read` returns
    what is available (waiting up to ``timeout`` for the first record); :meth:`watermarks` is
    the broker's (low, high) of a partition and :meth:`true_ends` its (low, one past the last
    record): the embedded broker's high watermark can stop short of its last batch.
    :meth:`positions` is the next offset per assigned partition (-1 when unknown).
    """

    topic: str

    def assign(self, starts: Mapping[int, int | None]) -> None: ...

    def assigned(self) -> list[int]: ...

    def read(self, max_messages: int, timeout: float) -> list[Message]: ...

    def watermarks(self, partition: int, timeout: float = 10.0) -> tuple[int, int]: ...

    def true_ends(
        self, partitions: Sequence[int], timeout: float = 10.0
    ) -> dict[int, tuple[int, int]]: ...

    def positions(self) -> dict[int, int]: ...

    def close(self) -> None: ...


class TransportFactory(Protocol):
    """Opens what a worker uses on one bus (its group :class:`Transport`, :class:`TopicReader`
    s) and answers its metadata questions. Missing topics raise
    :class:`~finscore.streams.exceptions.TopicMissing`, an unreachable bus
    :class:`~finscore.streams.exceptions.BrokerUnreachable`."""

    def transport(
        self,
        spec: TransportSpec,
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
    ) -> Transport: ...

    def reader(
        self,
        topic: str,
        *,
        group: str,
        read_committed: bool = False,
        max_message_bytes: int | None = None,
        fetch_wait_ms: int = 10,
    ) -> TopicReader: ...

    def partitions(self, topic: str) -> list[int]: ...

    def topic_partitions(self, timeout: float = 5.0) -> dict[str, int]: ...

    def ensure_topic_like(self, name: str, like: str, config: Mapping[str, str]) -> None:
        """Create ``name`` (when missing) with ``like``'s partition count and replication."""
        ...


def catch_up(
    reader: TopicReader,
    handle: Callable[[list[Message]], int],
    max_messages: int = 20000,
    timeout: float = 120.0,
) -> int:
    """Read the assigned partitions to their true ends (the ends when called), each batch
    given to ``handle``; returns the sum of what ``handle`` returned. A label missed here would
    change the first scores after a restart, so the end is the true one, not the watermark
    (a ``read_committed`` reader waits for the transactions open at the end to end). After
    ``timeout`` seconds it stops with a warning (``catch_up.incomplete``)."""
    total = 0
    ends = {p: end for p, (_, end) in reader.true_ends(reader.assigned(), 10).items()}
    pos = dict.fromkeys(ends, 0)
    deadline = time.monotonic() + timeout
    while any(pos[p] < ends[p] for p in ends):
        if time.monotonic() > deadline:
            behind = sorted(p for p in ends if pos[p] < ends[p])
            log.warning("catch_up.incomplete", topic=reader.topic, partitions=behind)
            break
        msgs = reader.read(max_messages, 0.5)
        if not msgs:
            known = reader.positions()
            pos = {p: max(known.get(p, 0), 0) for p in ends}
            if all(pos[p] >= ends[p] for p in ends):
                break
            continue
        total += handle(msgs)
        for m in msgs:
            pos[m.partition] = m.offset + 1
    return total


def read_partitions(
    reader: TopicReader,
    starts: Mapping[int, int | None],
    handle: Callable[[Message], None],
    *,
    ends: Mapping[int, int] | None = None,
    settle_committed: bool = False,
    timeout: float = 30.0,
) -> list[int]:
    """Read partitions from their start offsets (None = the beginning) to their true ends
    when called (:meth:`TopicReader.true_ends`: past the last record even where the broker's
    high watermark is stale, which would cut a restore short of the newest state), handing every
    record to ``handle``; or, given ``ends``, to those offsets, handing on only the records
    before them. With ``settle_committed`` (a ``read_committed`` reader) also wait until no
    transaction is pending on them (the position reaches the high watermark). Returns the
    partitions that held records; logs a warning (``state.read_incomplete``,
    ``state.transactions_pending``) when the deadline cut it short."""
    bounded = ends is not None
    assign: dict[int, int | None] = {}
    if ends is not None:
        ends = dict(ends)
        assign = {p: starts[p] for p in ends}
    else:
        ends = {}
        true_ends = reader.true_ends(list(starts), 10)
        for p, start in starts.items():
            low, high = true_ends[p]
            if high > low:
                ends[p] = high
                assign[p] = None if start is None else max(low, start)
    if not assign:
        return []
    reader.assign(assign)
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(ends) and time.monotonic() < deadline:
        msgs = reader.read(10000, 0.2)
        for m in msgs:
            if m.offset >= ends[m.partition] - 1:
                done.add(m.partition)
            if not bounded or m.offset < ends[m.partition]:
                handle(m)
        if not msgs:  # at the end of a partition (or before a transaction marker)?
            done.update(p for p, o in reader.positions().items() if p in ends and o >= ends[p])
    if settle_committed:  # a just-committed transaction must be fully visible
        settle_until = deadline + 10
        while time.monotonic() < settle_until:
            positions = reader.positions()
            behind = [p for p in ends if positions.get(p, -1) < reader.watermarks(p, 5)[1]]
            if not behind:
                break
            for m in reader.read(10000, 0.1):
                handle(m)
        else:
            log.warning("state.transactions_pending", topic=reader.topic, partitions=sorted(ends))
    if len(done) < len(ends):
        log.warning("state.read_incomplete", topic=reader.topic, partitions=sorted(ends))
    return sorted(ends)

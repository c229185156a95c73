"""An in-memory bus for tests, shipped with the package like ``bytewax.testing``.

:class:`InMemoryBus` holds topics of partitions of records (offsets from 0, timestamps), the
committed offsets of each consumer group, and implements
:class:`~finscore.streams.transport.TransportFactory`, so a worker runs on it unchanged::

    bus = InMemoryBus()
    bus.create_catalog(partitions=2)
    bus.produce("transactions", value, key=b"c1")
    worker = Worker(cfg, transports=bus)

:class:`InMemoryTransport` keeps the delivery contract of the Kafka one: in at-least-once mode
records produced for a batch are acknowledged (appended to the bus) when the transport next
settles, and a batch's offsets are committed only once every record produced before its
commit is acknowledged; a delivery that fails (see :meth:`InMemoryBus.fail_deliveries`) raises
:class:`~finscore.streams.exceptions.TransportError` and leaves the offsets uncommitted, so a
restarted worker re-reads the batch. In exactly-once mode a batch's records and offsets are
appended and committed together at :meth:`InMemoryTransport.commit`. The members of one group
share the partitions (round robin; an eager rebalance at each member's next poll when one
joins or leaves). Every delivery and commit is written to :attr:`InMemoryBus.journal`, in
order, for tests of the ordering.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from finscore.logging import get_logger
from finscore.streams.exceptions import TopicMissing, TransportError
from finscore.streams.transport import (
    AssignCallback,
    DeliveryStats,
    Message,
    OutRecord,
    SkippedCallback,
    TopicPartition,
    TransportSpec,
)

__all__ = ["Commit", "Delivery", "InMemoryBus", "InMemoryTopicReader", "InMemoryTransport"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    """A journal entry: ``record`` was appended to the bus (``seq``: its place in the journal)."""

    seq: int
    record: Message


@dataclass(frozen=True)
class Commit:
    """A journal entry: ``group`` committed ``offsets`` (next offset per partition)."""

    seq: int
    group: str
    offsets: dict[TopicPartition, int]


@dataclass
class _Group:
    members: list[InMemoryTransport] = field(default_factory=list)
    generation: int = 0


class InMemoryBus:
    """Topics, partitions, records, committed offsets; see the module docstring.

    Thread safe: a worker may run in a thread while the test produces and reads.
    """

    def __init__(self) -> None:
        self._topics: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._groups: dict[str, _Group] = {}
        self._fail: Counter[str] = Counter()
        self._rr: Counter[str] = Counter()
        self.journal: list[Delivery | Commit] = []
        self.cond = threading.Condition()

    # -- topics and records -------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` empty partitions (nothing when it exists)."""
        with self.cond:
            self._topics.setdefault(name, [[] for _ in range(partitions)])

    def create_catalog(self, partitions: int = 3, prefix: str = "") -> None:
        """Every topic of the catalog (:func:`finscore.schemas.topics.catalog`)."""
        from finscore.schemas.topics import catalog

        for spec in catalog(partitions, prefix):
            self.create_topic(spec.name, spec.partitions)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int = 0,
    ) -> Message:
        """Append one record (as an acknowledged produce would) and return it: keyed records
        go to ``crc32(key) % partitions`` unless ``partition`` is given, keyless ones round
        robin; ``timestamp_ms`` 0 is the append time."""
        return self._append([OutRecord(topic, key, value, partition, timestamp_ms)])[0]

    def _append(self, records: Sequence[OutRecord]) -> list[Message]:
        out = []
        with self.cond:
            for r in records:
                parts = self._partitions_of(r.topic)
                if r.partition is not None:
                    p = r.partition
                elif r.key is not None:
                    p = zlib.crc32(r.key) % len(parts)
                else:
                    p = self._rr[r.topic] % len(parts)
                    self._rr[r.topic] += 1
                if not 0 <= p < len(parts):
                    raise TransportError(f"{r.topic} has no partition {p}")
                ts = r.timestamp_ms or int(time.time() * 1000)
                m = Message(r.topic, p, len(parts[p]), r.key, r.value, ts)
                parts[p].append(m)
                self.journal.append(Delivery(len(self.journal), m))
                out.append(m)
            self.cond.notify_all()
        return out

    def _partitions_of(self, topic: str) -> list[list[Message]]:
        parts = self._topics.get(topic)
        if parts is None:
            raise TopicMissing(
                f"topic {topic!r} does not exist",
                hint="create it on the in-memory bus (create_topic / create_catalog)",
            )
        return parts

    def messages(self, topic: str) -> list[Message]:
        """Every record of ``topic``, partition by partition, in offset order."""
        with self.cond:
            return [m for part in self._partitions_of(topic) for m in part]

    def end_offsets(self, topic: str) -> dict[int, int]:
        """One past the last offset, per partition."""
        with self.cond:
            return {p: len(part) for p, part in enumerate(self._partitions_of(topic))}

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """``group``'s committed offsets (next offset to read), per partition."""
        with self.cond:
            return {tp: o for (g, tp), o in self._committed.items() if g == group}

    def fail_deliveries(self, topic: str, count: int = 1) -> None:
        """Make the next ``count`` deliveries to ``topic`` fail (as a broker refusing them
        would): the batch they belong to is not committed."""
        with self.cond:
            self._fail[topic] += count

    def _take_failure(self, topic: str) -> bool:
        with self.cond:
            if self._fail[topic] > 0:
                self._fail[topic] -= 1
                return True
            return False

    def _commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        with self.cond:
            for tp, o in offsets.items():
                self._committed[(group, tp)] = o
            self.journal.append(Commit(len(self.journal), group, dict(offsets)))

    def _read(self, topic: str, positions: dict[int, int], max_messages: int) -> list[Message]:
        """Records from ``positions`` (advanced), partition by partition; caller holds the lock."""
        parts = self._partitions_of(topic)
        out: list[Message] = []
        for p in sorted(positions):
            if len(out) >= max_messages:
                break
            pos = positions[p]
            chunk = parts[p][pos : pos + max_messages - len(out)]
            out += chunk
            positions[p] = pos + len(chunk)
        return out

    # -- groups -------------------------------------------------------------------------------
    def _join(self, group: str, member: InMemoryTransport) -> None:
        with self.cond:
            g = self._groups.setdefault(group, _Group())
            g.members.append(member)
            g.generation += 1

    def _leave(self, group: str, member: InMemoryTransport) -> None:
        with self.cond:
            g = self._groups[group]
            if member in g.members:
                g.members.remove(member)
                g.generation += 1

    def _share(self, group: str, member: InMemoryTransport) -> tuple[int, list[TopicPartition]]:
        """(generation, the partitions of ``member``): round robin over the group's members."""
        with self.cond:
            g = self._groups[group]
            tps = sorted(
                (t, p) for t in member.spec.topics for p in range(len(self._partitions_of(t)))
            )
            i, n = g.members.index(member), len(g.members)
            return g.generation, [tp for k, tp in enumerate(tps) if k % n == i]

    # -- TransportFactory ---------------------------------------------------------------------
    def transport(
        self,
        spec: TransportSpec,
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
    ) -> InMemoryTransport:
        return InMemoryTransport(self, spec, on_assign, on_revoke)

    def reader(
        self,
        topic: str,
        *,
        group: str = "",
        read_committed: bool = False,
        max_message_bytes: int | None = None,
        fetch_wait_ms: int = 10,
    ) -> InMemoryTopicReader:
        return InMemoryTopicReader(self, topic)

    def partitions(self, topic: str) -> list[int]:
        with self.cond:
            return list(range(len(self._partitions_of(topic))))

    def topic_partitions(self, timeout: float = 5.0) -> dict[str, int]:
        with self.cond:
            return {name: len(parts) for name, parts in self._topics.items()}

    def ensure_topic_like(self, name: str, like: str, config: Mapping[str, str]) -> None:
        self.create_topic(name, len(self.partitions(like)))


class InMemoryTopicReader:
    """A :class:`~finscore.streams.transport.TopicReader` on an :class:`InMemoryBus` (every
    record on the bus is committed, so ``read_committed`` changes nothing)."""

    def __init__(self, bus: InMemoryBus, topic: str) -> None:
        self.bus = bus
        self.topic = topic
        self._positions: dict[int, int] = {}

    def assign(self, starts: Mapping[int, int | None]) -> None:
        self._positions = {p: 0 if o is None else max(0, o) for p, o in starts.items()}

    def assigned(self) -> list[int]:
        return sorted(self._positions)

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self.bus.cond:
            while True:
                out = self.bus._read(self.topic, self._positions, max_messages)
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                self.bus.cond.wait(left)

    def watermarks(self, partition: int, timeout: float = 10.0) -> tuple[int, int]:
        return 0, self.bus.end_offsets(self.topic)[partition]

    def true_ends(
        self, partitions: Sequence[int], timeout: float = 10.0
    ) -> dict[int, tuple[int, int]]:
        ends = self.bus.end_offsets(self.topic)
        return {p: (0, ends[p]) for p in partitions}

    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    def close(self) -> None:
        self._positions = {}


class InMemoryTransport:
    """A :class:`~finscore.streams.transport.Transport` on an :class:`InMemoryBus`; see the
    module docstring for its delivery contract."""

    def __init__(
        self,
        bus: InMemoryBus,
        spec: TransportSpec,
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self.delivery = DeliveryStats()
        self.on_refused: Callable[[OutRecord, str], None] | None = None
        self.on_skipped: SkippedCallback | None = None  # no recovery guard here
        self._generation = -1
        self._positions: dict[TopicPartition, int] = {}
        self._pending: list[OutRecord] = []  # produced, not yet delivered
        self._failure = ""  # a delivery failed since the last commit
        self.closed = False
        bus._join(spec.group_id, self)

    # -- assignment ---------------------------------------------------------------------------
    def _rebalance(self) -> None:
        generation, share = self.bus._share(self.spec.group_id, self)
        if generation == self._generation:
            return
        old = sorted(self._positions)
        if old:
            self._settle()
            if self._on_revoke:
                self._on_revoke(old)
        committed = self.bus.committed(self.spec.group_id)
        self._positions = {tp: committed.get(tp, 0) for tp in share}
        self._generation = generation
        log.info("transport.assigned", partitions=share)
        if self._on_assign and share:
            self._on_assign(list(share))

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._positions)

    # -- the batch cycle ----------------------------------------------------------------------
    def poll_batch(self, max_messages: int = 5000, timeout: float = 0.05) -> list[Message]:
        """Up to ``max_messages`` records from the assigned partitions' positions, waiting up
        to ``timeout`` seconds for the first."""
        self._settle()
        self._rebalance()
        deadline = time.monotonic() + timeout
        out: list[Message] = []
        with self.bus.cond:
            while True:
                for topic in self.spec.topics:
                    positions = {p: o for (t, p), o in self._positions.items() if t == topic}
                    out += self.bus._read(topic, positions, max_messages - len(out))
                    self._positions.update({(topic, p): o for p, o in positions.items()})
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                self.bus.cond.wait(left)

    def produce_batch(self, records: Sequence[OutRecord]) -> None:
        """Queue records; they are delivered when the transport next settles (at-least-once:
        every poll and commit) or with the batch's commit (exactly-once)."""
        if not records:
            return
        if self.delivery.unacked <= 0:
            self.delivery.last_progress = time.monotonic()
        self.delivery.unacked += len(records)
        self._pending += records

    def produce_alone(self, records: Sequence[OutRecord]) -> None:
        """Produce records of no batch (exactly-once: committed at once, with no offsets)."""
        self.produce_batch(records)
        if self.spec.exactly_once:
            self.commit([])

    def commit(self, batch: Sequence[Message]) -> None:
        """Mark ``batch`` done: deliver everything produced so far, then commit the batch's
        offsets, unless a delivery failed since the last commit (then raise
        :class:`TransportError`: the offsets stay uncommitted)."""
        offsets: dict[TopicPartition, int] = {}
        for m in batch:
            tp = (m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
        self._deliver()
        failure, self._failure = self._failure, ""
        if failure:
            raise TransportError(
                f"produce failed, offsets not committed: {failure}",
                hint="the batch will be re-read after restart (at-least-once)",
            )
        owned = {tp: o for tp, o in offsets.items() if tp in self._positions}
        if owned:
            self.bus._commit(self.spec.group_id, owned)

    def _settle(self) -> None:
        """At-least-once: deliver what is queued (exactly-once waits for the commit)."""
        if not self.spec.exactly_once:
            self._deliver()

    def _deliver(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        good = []
        for r in pending:
            if self.bus._take_failure(r.topic):
                self._failure = self._failure or f"delivery to {r.topic} failed"
            else:
                good.append(r)
        delivered = self.bus._append(good)
        st = self.delivery
        st.acks += len(delivered)
        st.acked.update(m.topic for m in delivered)
        st.unacked -= len(pending)
        st.failed += len(pending) - len(good)
        if len(good) < len(pending):
            st.last_error = self._failure
        st.last_progress = time.monotonic()

    def lag(self) -> dict[TopicPartition, int]:
        out = {}
        for (t, p), pos in self._positions.items():
            out[(t, p)] = max(0, self.bus.end_offsets(t)[p] - pos)
        return out

    def drain(self, timeout: float = 30.0) -> None:
        """Deliver and commit everything committed so far."""
        self._settle()

    def close(self) -> None:
        """Drain, give the partitions back (``on_revoke``), leave the group."""
        if self.closed:
            return
        self.closed = True
        try:
            self._settle()
        finally:
            old = sorted(self._positions)
            if old and self._on_revoke:
                self._on_revoke(old)
            self._positions = {}
            self.bus._leave(self.spec.group_id, self)

    @property
    def members(self) -> Iterable[InMemoryTransport]:
        """The transports of this transport's group (for tests)."""
        return list(self.bus._groups[self.spec.group_id].members)

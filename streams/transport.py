"""The transport seam: what the workers need from a message bus, and nothing more.

The pure core (:mod:`finscore.streams.pipeline`) works on lists of :class:`Message` and returns
lists of :class:`OutRecord`; a :class:`Transport` moves them to and from the bus. The Kafka
implementation is :class:`finscore.streams.kafka.KafkaTransport`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


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


class Transport(Protocol):
    """Batch-oriented access to the bus for one worker.

    Delivery contract: :meth:`commit` marks a polled batch done. In at-least-once mode its
    offsets are committed only after every record produced for it has been acknowledged.
    In exactly-once mode ``produce_batch`` + ``commit`` form one Kafka transaction.
    """

    def poll_batch(self, max_messages: int, timeout: float) -> list[Message]: ...

    def produce_batch(self, records: Sequence[OutRecord]) -> None: ...

    def commit(self, batch: Sequence[Message]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def close(self) -> None: ...

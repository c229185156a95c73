"""The pure core shared by every worker: batches in, outputs and dead letters out.

Nothing here talks to a broker. A pipeline's ``process(messages)`` decodes, validates,
featurises, scores and encodes one batch and returns a :class:`BatchResult`; failures are data
(:class:`DeadLetter` records for ``<input>-dlq``), never exceptions out of the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.schemas.topics import dlq
from finscore.streams.transport import Message, OutRecord

Clock = Callable[[], float]  # seconds since the epoch, like time.time

# A record whose event time is further than this in the future is impossible.
MAX_FUTURE_SKEW_MS = 60 * 60 * 1000


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be processed, with where it came from and why."""

    message: Message
    error_type: str
    reason: str


@dataclass
class BatchResult:
    """What one batch produced: records to publish, dead letters, and bookkeeping."""

    outputs: list[OutRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    state: list[OutRecord] = field(default_factory=list)  # changelog records
    scored: int = 0
    model_version: str | None = None
    inference_seconds: float = 0.0
    duplicates: int = 0


class Pipeline(Protocol):
    """What a worker runs per batch."""

    def process(self, messages: list[Message]) -> BatchResult: ...


class DeadLetterEncoder:
    """Turns :class:`DeadLetter` values into records for the input's dead-letter topic."""

    def __init__(self, worker: str, codec: Codec | None = None, encoding: str = "avro") -> None:
        self.worker = worker
        self.codec = codec or Codec("dead_letter")
        self.encoding = encoding

    def encode(self, dead: DeadLetter, now_ms: int) -> OutRecord:
        m = dead.message
        record = {
            "source_topic": m.topic,
            "source_partition": m.partition,
            "source_offset": m.offset,
            "key": m.key,
            "value": m.value,
            "error_type": dead.error_type,
            "reason": dead.reason[:2000],
            "worker": self.worker,
            "failed_at": now_ms,
        }
        value = self.codec.encode(record, self.encoding)
        return OutRecord(dlq(m.topic), m.key, value, timestamp_ms=m.timestamp_ms)


def decode_batch(
    codec: Codec, messages: list[Message]
) -> tuple[list[tuple[Message, dict]], list[DeadLetter]]:
    """Decode every message; undecodable ones become dead letters naming their location."""
    good: list[tuple[Message, dict]] = []
    bad: list[DeadLetter] = []
    for m in messages:
        if m.value is None:
            bad.append(DeadLetter(m, "EmptyValue", "record has no value (tombstone)"))
            continue
        try:
            good.append(
                (m, codec.decode(m.value, topic=m.topic, partition=m.partition, offset=m.offset))
            )
        except DecodeError as exc:
            bad.append(DeadLetter(m, "DecodeError", str(exc)))
    return good, bad


def split_valid(
    decoded: list[tuple[Message, dict]], check: Callable[[dict], str | None]
) -> tuple[list[tuple[Message, dict]], list[DeadLetter]]:
    """Records ``check`` accepts (it returns None), and dead letters for the impossible ones."""
    valid: list[tuple[Message, dict]] = []
    dead: list[DeadLetter] = []
    for m, rec in decoded:
        reason = check(rec)
        if reason is None:
            valid.append((m, rec))
        else:
            dead.append(DeadLetter(m, "ImpossibleValue", reason))
    return valid, dead


def now_ms(clock: Clock = time.time) -> int:
    """The clock's current time in epoch milliseconds."""
    return int(clock() * 1000)

"""The pure core shared by every worker: batches in, outputs and dead letters out.

Nothing here talks to a broker. A pipeline's ``process(messages)`` decodes, validates,
featurises, scores and encodes one batch and returns a :class:`BatchResult`; failures are data
(:class:`DeadLetter` records for ``<input>-dlq``), never exceptions out of the hot path.
"""

from __future__ import annotations

import hashlib
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


# What of an original a dead letter keeps: a dead letter must always fit in a message (the
# producer's default message.max.bytes is 1,000,000), with room for its metadata.
MAX_DEAD_VALUE_BYTES = 512 * 1024
MAX_DEAD_KEY_BYTES = 4 * 1024


def _cut(data: bytes | None, limit: int) -> tuple[bytes | None, int | None, str | None]:
    """(the first ``limit`` bytes, original size, sha256 hex) when longer, else (data, None,
    None)."""
    if data is None or len(data) <= limit:
        return data, None, None
    return data[:limit], len(data), hashlib.sha256(data).hexdigest()


class DeadLetterEncoder:
    """Turns :class:`DeadLetter` values into records for the input's dead-letter topic.

    A dead letter always fits in a message: an original value longer than ``max_value_bytes``
    (key: ``max_key_bytes``) is cut to that many bytes, and its size and SHA-256 are recorded
    (``value_size``/``value_sha256``, ``key_size``/``key_sha256``); the reason is cut to 2,000
    characters and the worker id to 200. The record's own key is the (cut) original key.
    A dead-letter topic named in ``json_topics`` (with or without ``topic_prefix``) gets JSON,
    so `kcat` and Kafka UIs can read what was rejected and why; others get ``encoding``.
    """

    def __init__(
        self,
        worker: str,
        codec: Codec | None = None,
        encoding: str = "avro",
        *,
        max_value_bytes: int = MAX_DEAD_VALUE_BYTES,
        max_key_bytes: int = MAX_DEAD_KEY_BYTES,
        json_topics: frozenset[str] = frozenset(),
        topic_prefix: str = "",
    ) -> None:
        self.worker = worker[:200]
        self.json_topics = json_topics
        self.topic_prefix = topic_prefix
        self.codec = codec or Codec("dead_letter")
        self.encoding = encoding
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes

    def encode(self, dead: DeadLetter, now_ms: int) -> OutRecord:
        m = dead.message
        value, value_size, value_sha = _cut(m.value, self.max_value_bytes)
        key, key_size, key_sha = _cut(m.key, self.max_key_bytes)
        record = {
            "source_topic": m.topic,
            "source_partition": m.partition,
            "source_offset": m.offset,
            "key": key,
            "value": value,
            "error_type": dead.error_type[:200],
            "reason": dead.reason[:2000],
            "worker": self.worker,
            "failed_at": now_ms,
            "value_size": value_size,
            "value_sha256": value_sha,
            "key_size": key_size,
            "key_sha256": key_sha,
        }
        topic = dlq(m.topic)
        as_json = topic in self.json_topics or (
            bool(self.topic_prefix)
            and topic.startswith(self.topic_prefix)
            and topic[len(self.topic_prefix) :] in self.json_topics
        )
        encoded = self.codec.encode(record, "json" if as_json else self.encoding)
        return OutRecord(topic, key, encoded, timestamp_ms=m.timestamp_ms)


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

"""What a stream is to the worker loop, and the helpers every stream shares.

A :class:`Stream` adapts a pure pipeline to the worker loop: which topic it reads and writes,
how its per-key state is restored when partitions are assigned, and what it reads besides its
input (the fraud stream reads the delayed labels of *all* partitions, so terminal risk is
global whatever partitions a worker owns). The streams themselves live in their own folders:
:mod:`finscore.streams.fraud.stream` and :mod:`finscore.streams.market.stream`. Everything a
stream opens on the bus comes from the worker's
:class:`~finscore.streams.transport.TransportFactory`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.codec import registry_client as shared_registry_client
from finscore.streams.pipeline import BatchResult, DeadLetter, Pipeline
from finscore.streams.transport import Message, TopicReader, TransportFactory, catch_up
from finscore.streams.transport import TopicPartition as TP

if TYPE_CHECKING:
    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.worker import WorkerConfig

__all__ = [
    "MAX_PENDING_DEAD",
    "LabelSide",
    "SideDeadLetters",
    "Stream",
    "StreamBase",
    "default_transports",
    "ensure_changelog",
    "follow",
    "output_codec",
    "output_encoding",
    "registry_client",
]


log = get_logger(__name__)

MAX_PENDING_DEAD = 10_000  # side-input dead letters kept while a worker has no partitions yet


class SideDeadLetters:
    """Dead letters of a side input that every worker reads in full (delayed labels): each is
    reported by the worker owning the input partition of the same number, so exactly one
    worker reports it. Before this worker's first assignment (its start-up catch-up) they
    wait, at most ``limit`` of them (the oldest are dropped, with a warning)."""

    def __init__(self, limit: int = MAX_PENDING_DEAD) -> None:
        self.limit = limit
        self.owned: set[int] = set()
        self._assigned_once = False
        self._dead: list[DeadLetter] = []

    def keep(self, dead: list[DeadLetter]) -> None:
        """Hold the dead letters of one read (those this worker will report)."""
        if self._assigned_once:
            self._dead += [d for d in dead if d.message.partition in self.owned]
            return
        self._dead += dead
        if len(self._dead) > self.limit:
            log.warning("labels.dead_letters_dropped", count=len(self._dead) - self.limit)
            self._dead = self._dead[-self.limit :]

    def take(self) -> list[DeadLetter]:
        """The dead letters held since the last call that this worker reports (none before
        its first assignment)."""
        if not self._assigned_once:
            return []
        dead, self._dead = self._dead, []
        return [d for d in dead if d.message.partition in self.owned]

    def assigned(self, partitions: Iterable[int]) -> None:
        self.owned.update(partitions)
        self._assigned_once = True

    def revoked(self, partitions: Iterable[int]) -> None:
        self.owned.difference_update(partitions)


def follow(cfg: WorkerConfig, transports: TransportFactory, topic: str, name: str) -> TopicReader:
    """A reader of every partition of ``topic`` from the beginning, in the group
    ``<cfg.group>-<name>`` (``read_committed`` in exactly-once mode): how a stream reads a side
    input in full."""
    reader = transports.reader(topic, group=f"{cfg.group}-{name}", read_committed=cfg.exactly_once)
    reader.assign(dict.fromkeys(transports.partitions(topic)))
    return reader


class Stream(Protocol):
    input_topic: str
    output_topic: str
    output_schema: str
    pipeline: Pipeline

    def start(self) -> None: ...
    def before_batch(self) -> None: ...
    def take_dead_letters(self) -> list[DeadLetter]: ...
    def on_assign(self, tps: list[TP]) -> None: ...
    def on_revoke(self, tps: list[TP]) -> None: ...
    def close(self) -> None: ...


class LabelProcessor(Protocol):
    """A stream's labels pipeline: applies a batch of label messages to the state."""

    def process(self, messages: list[Message]) -> BatchResult: ...


class LabelSide:
    """A stream's delayed labels, a side input every worker reads in full (so label-risk
    state is global whatever input partitions it owns): :meth:`follow` reads them to their
    end before the first batch, :meth:`read` what came since before each batch, both through
    ``labels`` (the stream's labels pipeline); their dead letters are reported by the worker
    owning the input partition of the same number (:class:`SideDeadLetters`: call
    :meth:`assigned` / :meth:`revoked` with the input partitions)."""

    def __init__(self, labels: LabelProcessor, max_messages: int = 20000) -> None:
        self.labels = labels
        self.max_messages = max_messages
        self.reader: TopicReader | None = None
        self.dead = SideDeadLetters()

    def follow(self, reader: TopicReader) -> int:
        """Read ``reader``'s labels to their end (:func:`~finscore.streams.transport.
        catch_up`) and keep it for :meth:`read`; returns how many were applied."""
        self.reader = reader
        return catch_up(reader, self.apply, self.max_messages)

    def apply(self, messages: list[Message]) -> int:
        """Apply ``messages`` through the labels pipeline, keep their dead letters; returns how
        many were applied."""
        result = self.labels.process(messages)
        self.dead.keep(result.dead_letters)
        return result.scored

    def read(self) -> None:
        """Apply the labels that came since the last read (none when not following)."""
        if self.reader is not None:
            messages = self.reader.read(self.max_messages, 0)
            if messages:
                self.apply(messages)

    def take_dead_letters(self) -> list[DeadLetter]:
        """Dead letters of labels read since the last call that this worker reports (those
        of the label partitions numbered like its input partitions)."""
        return self.dead.take()

    def assigned(self, partitions: Iterable[int]) -> None:
        self.dead.assigned(partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        self.dead.revoked(partitions)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class StreamBase:
    """What every stream starts from: the worker's config, model slot and transports (default:
    Kafka at ``cfg.client``), the topics it reads and writes (catalog names, prefixed with
    ``cfg.topic_prefix``), the schema of its outputs, and the hooks a stream without side
    inputs leaves empty (``before_batch``, ``take_dead_letters``, ``on_revoke``, ``close``).
    A stream's class sets ``pipeline`` in ``start()`` and restores its state in
    ``on_assign``."""

    pipeline: Pipeline

    def __init__(
        self,
        cfg: WorkerConfig,
        slot: ModelSlot,
        transports: TransportFactory | None,
        *,
        input_topic: str,
        output_topic: str,
        output_schema: str,
    ) -> None:
        self.cfg = cfg
        self.slot = slot
        self.transports = transports or default_transports(cfg)
        self.input_topic = cfg.topic(input_topic)
        self.output_topic = cfg.topic(output_topic)
        self.output_schema = output_schema
        self.changelog_topic = ""  # set in start() by a stream that keeps state

    def before_batch(self) -> None:
        return None

    def take_dead_letters(self) -> list[DeadLetter]:
        return []

    def on_revoke(self, tps: list[TP]) -> None:
        return None

    def close(self) -> None:
        return None


def ensure_changelog(
    cfg: WorkerConfig,
    transports: TransportFactory,
    input_topic: str,
    store: str,
    config: dict[str, str] | None = None,
) -> str:
    """The store's changelog topic, co-partitioned with the input and replicated like it
    (compacted by default): on a replicated cluster the state survives what the input does."""
    name = T.changelog(cfg.group, store)
    transports.ensure_topic_like(name, input_topic, dict(T.COMPACT) if config is None else config)
    return name


def default_transports(cfg: WorkerConfig) -> TransportFactory:
    """The Kafka transport factory of ``cfg.client`` (what runs unless a test injects one)."""
    from finscore.streams.kafka import KafkaTransportFactory

    return KafkaTransportFactory(cfg.client)


def registry_client(cfg: WorkerConfig) -> object | None:
    """A schema-registry client from ``cfg.schema_registry`` (None when unset): what the
    input codecs use to read the Confluent wire format."""
    return shared_registry_client(dict(cfg.schema_registry) if cfg.schema_registry else None)


def output_encoding(cfg: WorkerConfig, topic: str, registry: object | None) -> str:
    """How a worker writes ``topic``: JSON when listed in ``cfg.json_topics``; else the
    Confluent wire format when a schema registry is configured (what Kafka UIs and Confluent
    deserializers read); else Avro single-object. Dead letters keep their own encoding."""
    if topic in cfg.json_topics:
        return "json"
    return "confluent" if registry is not None else "avro"


def output_codec(schema: str, topic: str, registry: object | None, encoding: str) -> Codec:
    """The output codec of ``topic``; for the Confluent wire format its schema is registered now
    under
    ``<topic>-value`` (TopicNameStrategy; the registry's compatibility rules apply), so a
    refused or unreachable registry stops the start-up with that reason, not the first batch."""
    codec = Codec(schema, registry=registry, subject=f"{topic}-value")
    if encoding == "confluent":
        codec.schema_id()
    return codec

"""The two streams a worker can run: their topics, state stores, side inputs and pipelines.

A :class:`Stream` adapts a pure pipeline to the worker loop: which topic it reads and writes,
how its per-key state is restored when partitions are assigned, and what it reads besides its
input (the fraud stream reads the delayed labels of *all* partitions, so terminal risk is
global whatever partitions a worker owns).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from finscore.features.exceptions import FeatureStateError
from finscore.features.fraud import FraudFeatureConfig, FraudFeatures
from finscore.features.market import BOOK_LAYOUT
from finscore.features.market_windows import MarketWindows
from finscore.features.timestore import KEY_ROWS_MAGIC, ROWS_MAGIC, SNAPSHOT_MAGIC
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.codec import registry_client as shared_registry_client
from finscore.schemas.topics import TopicSpec
from finscore.streams.admin import ensure_topics, partitions_of, replication_of, true_ends
from finscore.streams.changelog import read_changelog, read_changelog_records
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.market.pipeline import MarketPipeline
from finscore.streams.pipeline import DeadLetter, Pipeline
from finscore.streams.scoring import ModelSlot
from finscore.streams.transport import Message
from finscore.streams.transport import TopicPartition as TP

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

log = get_logger(__name__)

MAX_PENDING_DEAD = 10_000  # label dead letters kept while this worker has no partitions yet


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


def _ensure_changelog(
    cfg: WorkerConfig, input_topic: str, store: str, config: dict[str, str] | None = None
) -> str:
    """The store's changelog topic, co-partitioned with the input and replicated like it
    (compacted by default): on a replicated cluster the state survives what the input does."""
    name = T.changelog(cfg.group, store)
    parts = len(partitions_of(cfg.client, input_topic))
    conf = dict(T.COMPACT) if config is None else config
    rf = replication_of(cfg.client, input_topic)
    ensure_topics(cfg.client, [TopicSpec(name, parts, "state", "key", conf)], rf)
    return name


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


class FraudStream:
    """transactions → fraud-flags, customer state in a changelog, labels read globally."""

    def __init__(self, cfg: WorkerConfig, slot: ModelSlot) -> None:
        self.cfg = cfg
        self.slot = slot
        self.input_topic = cfg.topic(T.TRANSACTIONS)
        self.output_topic = cfg.topic(T.FRAUD_FLAGS)
        self.output_schema = "fraud_flag"
        self.labels_topic = cfg.topic(T.FRAUD_LABELS)
        # The stores' time range starts at the earliest accepted event time: fixed, so no
        # record (valid or not) moves it.
        features_cfg = FraudFeatureConfig(
            time_origin_ms=cfg.bounds.min_event_time_ms, label_contract=cfg.label_contract
        )
        # fraud_reports: the workers exchange their transactions' terminal entries (see
        # finscore.features.terminal_entries) on <group>-terminal-entries-changelog.
        self.features = FraudFeatures(features_cfg, share_entries=features_cfg.reports_only)
        self.entries_topic = ""
        self._entries_consumer: Consumer | None = None
        self._entries_key = cfg.instance_id.encode()
        self._registry = registry_client(cfg)
        self.labels = LabelsPipeline(
            self.features, bounds=cfg.bounds, codec=Codec("fraud_label", registry=self._registry)
        )
        self._labels_consumer: Consumer | None = None
        self._dead: list[DeadLetter] = []
        self._owned: set[int] = set()
        self._assigned_once = False  # until then label dead letters wait for their owner
        self.changelog_topic = ""
        self.pipeline: FraudPipeline  # set in start()

    def start(self) -> None:
        # Append-only (each record holds a customer's new window entries), so it is pruned by
        # time, not compacted: kept longer than any feature looks back.
        self.changelog_topic = _ensure_changelog(
            self.cfg, self.input_topic, "customer-entries", T.APPEND_ONLY_STATE
        )
        out_encoding = output_encoding(self.cfg, self.output_topic, self._registry)
        self.pipeline = FraudPipeline(
            self.features,
            self.slot,
            self.output_topic,
            threshold=self.cfg.threshold,
            output_encoding=out_encoding,
            changelog_topic=self.changelog_topic,
            explain=self.cfg.explain,
            bounds=self.cfg.bounds,
            in_codec=Codec("transaction", registry=self._registry),
            out_codec=output_codec(
                self.output_schema, self.output_topic, self._registry, out_encoding
            ),
        )
        if self.features.cfg.reports_only:  # before the labels: a report finds its entry
            self._start_entries()
        conf = {
            **self.cfg.client,
            "group.id": f"{self.cfg.group}-labels",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
        if self.cfg.exactly_once:
            conf["isolation.level"] = "read_committed"
        self._labels_consumer = Consumer(conf)
        parts = partitions_of(self.cfg.client, self.labels_topic)
        self._labels_consumer.assign(
            [TopicPartition(self.labels_topic, p, OFFSET_BEGINNING) for p in parts]
        )
        n = self._catch_up_labels()
        log.info("labels.caught_up", labels=n)

    def _start_entries(self) -> None:
        """Create the terminal-entries topic (append-only, partitioned like the input), have
        the pipeline write this worker's entries to it at each flush, read every partition of
        it (``read_committed`` in exactly-once mode) and catch up to its end."""
        self.entries_topic = _ensure_changelog(
            self.cfg, self.input_topic, "terminal-entries", T.APPEND_ONLY_STATE
        )
        parts = partitions_of(self.cfg.client, self.entries_topic)
        self.pipeline.entries_topic = self.entries_topic
        self.pipeline.entries_partitions = len(parts)
        self.pipeline.entries_key = self._entries_key
        conf = {**self.cfg.client, "group.id": f"{self.cfg.group}-entries",
                "enable.auto.commit": False, "fetch.wait.max.ms": 10}  # fmt: skip
        if self.cfg.exactly_once:
            conf["isolation.level"] = "read_committed"
        self._entries_consumer = Consumer(conf)
        self._entries_consumer.assign(
            [TopicPartition(self.entries_topic, p, OFFSET_BEGINNING) for p in parts]
        )
        # Own records too: a worker restarted under the same instance id starts empty.
        n = self._catch_up_labels(
            self._entries_consumer, self.entries_topic, lambda m: self._apply_entries(m, True)
        )
        log.info("terminal_entries.caught_up", records=n)

    def _apply_entries(self, raw: list, own: bool = False) -> int:
        """Add other workers' terminal entries (and this worker's own when ``own``: once
        running, they are in its state already); a record that is not a valid entries record
        is skipped with a warning."""
        key = None if own else self._entries_key
        values = [m.value() for m in raw if m.error() is None and (key is None or m.key() != key)]
        values = [v for v in values if v]
        try:
            self.features.add_terminal_entries(values)
        except FeatureStateError:  # a corrupt record: keep every other one
            for v in values:
                try:
                    self.features.add_terminal_entries([v])
                except FeatureStateError as exc:
                    log.warning("terminal_entries.record_skipped", reason=str(exc))
        return len(values)

    def _catch_up_labels(
        self, consumer: Consumer | None = None, topic: str = "", apply: Callable | None = None
    ) -> int:
        """Read the labels topic (or ``topic`` with ``consumer``, each batch given to
        ``apply``) to its current end (start-up), so terminal risk is warm."""
        c = consumer or self._labels_consumer
        assert c is not None
        topic = topic or self.labels_topic
        apply = apply or self._apply_labels
        total = 0
        # The true ends, not the high watermarks: the embedded broker's can stop short of its
        # last batch, and a label missed here would change the first scores after a restart.
        parts = [tp.partition for tp in c.assignment()]
        ends = {p: end for p, (_, end) in true_ends(self.cfg.client, topic, parts, 10).items()}
        pos = {p: 0 for p in ends}
        while any(pos[p] < ends[p] for p in ends):
            msgs = c.consume(20000, 0.5)
            if not msgs:
                positions = c.position([TopicPartition(topic, p) for p in ends])
                pos = {tp.partition: max(tp.offset, 0) for tp in positions}
                if all(pos[p] >= ends[p] for p in ends):
                    break
                continue
            total += apply(msgs)
            for m in msgs:
                if m.error() is None:
                    pos[m.partition()] = m.offset() + 1
        return total

    def _apply_labels(self, raw: list) -> int:
        msgs = [
            Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
            for m in raw
            if m.error() is None
        ]
        result = self.labels.process(msgs)
        # Each bad label is reported once: by the worker owning that partition number.
        # Each bad label is reported by the worker owning that partition number; before this
        # worker's first assignment (the start-up catch-up) they wait, at most MAX_PENDING.
        if self._assigned_once:
            self._dead += [d for d in result.dead_letters if d.message.partition in self._owned]
        else:
            self._dead += result.dead_letters
            if len(self._dead) > MAX_PENDING_DEAD:
                log.warning("labels.dead_letters_dropped", count=len(self._dead) - MAX_PENDING_DEAD)
                self._dead = self._dead[-MAX_PENDING_DEAD:]
        return result.scored

    def before_batch(self) -> None:
        if self._entries_consumer is not None:
            entries = self._entries_consumer.consume(1000, 0)
            if entries:
                self._apply_entries(entries)
        if self._labels_consumer is not None:
            msgs = self._labels_consumer.consume(20000, 0)
            if msgs:
                self._apply_labels(msgs)

    def take_dead_letters(self) -> list[DeadLetter]:
        """Dead letters of labels read since the last call that this worker reports (those
        of the label partitions numbered like its input partitions)."""
        if not self._assigned_once:
            return []
        dead, self._dead = self._dead, []
        return [d for d in dead if d.message.partition in self._owned]

    def on_assign(self, tps: list[TP]) -> None:
        parts = [p for t, p in tps if t == self.input_topic]
        self._owned.update(parts)
        self._assigned_once = True
        records = read_changelog_records(
            self.cfg.client, self.changelog_topic, parts, read_committed=self.cfg.exactly_once
        )
        good = []
        for key, value in records:
            if value[:4] in (ROWS_MAGIC, KEY_ROWS_MAGIC, SNAPSHOT_MAGIC):
                good.append((key.decode(errors="replace"), value))
            else:  # not ours: rebuilt from the stream instead
                log.warning("state.record_skipped", key=key.decode(errors="replace"))
        b = self.cfg.bounds
        latest = b.latest_ms(int(time.time() * 1000))

        def keep(rows: np.ndarray) -> np.ndarray:  # rows: time, tag, cents, sq
            t, cents = rows[:, 0], rows[:, 2]
            return ((t >= b.min_event_time_ms) & (t <= latest)
                    & (cents >= b.min_amount_cents) & (cents <= b.max_amount_cents))  # fmt: skip

        dropped = 0
        try:
            dropped = self.features.add_changes(good, keep)
        except FeatureStateError:  # a corrupt record: keep every other one
            for record in good:
                try:
                    dropped += self.features.add_changes([record], keep)
                except FeatureStateError as exc:
                    log.warning("state.record_skipped", key=record[0], reason=str(exc))
        if dropped:
            log.warning("state.rows_out_of_bounds_dropped", topic=self.changelog_topic,
                        rows=dropped)  # fmt: skip

    def on_revoke(self, tps: list[TP]) -> None:
        parts = {p for t, p in tps if t == self.input_topic}
        self._owned.difference_update(parts)
        if hasattr(self, "pipeline"):  # their new owner replays what was not committed
            self.pipeline.forget_partitions(parts)

    def close(self) -> None:
        if self._labels_consumer is not None:
            self._labels_consumer.close()
            self._labels_consumer = None
        if self._entries_consumer is not None:
            self._entries_consumer.close()
            self._entries_consumer = None


class MarketStream:
    """market-ticks → price-signals, per-instrument windows in a changelog."""

    def __init__(self, cfg: WorkerConfig, slot: ModelSlot) -> None:
        self.cfg = cfg
        self.slot = slot
        self.input_topic = cfg.topic(T.MARKET_TICKS)
        self.output_topic = cfg.topic(T.PRICE_SIGNALS)
        self.output_schema = "price_signal"
        self.changelog_topic = ""
        self.windows: MarketWindows
        self.pipeline: MarketPipeline

    def start(self) -> None:
        live = self.slot.live
        params = (live.manifest.params or {}) if live else {}
        window = int(params.get("window", 100))
        self.windows = MarketWindows(window=window, layout=str(params.get("layout", BOOK_LAYOUT)))
        registry = registry_client(self.cfg)
        out_encoding = output_encoding(self.cfg, self.output_topic, registry)
        self.changelog_topic = _ensure_changelog(self.cfg, self.input_topic, "windows")
        self.pipeline = MarketPipeline(
            self.windows,
            self.slot,
            self.output_topic,
            output_encoding=out_encoding,
            changelog_topic=self.changelog_topic,
            bounds=self.cfg.bounds,
            in_codec=Codec("market_tick", registry=registry),
            out_codec=output_codec(self.output_schema, self.output_topic, registry, out_encoding),
        )

    def before_batch(self) -> None:
        return None

    def take_dead_letters(self) -> list[DeadLetter]:
        return []

    def on_assign(self, tps: list[TP]) -> None:
        parts = [p for t, p in tps if t == self.input_topic]
        state = read_changelog(
            self.cfg.client, self.changelog_topic, parts, read_committed=self.cfg.exactly_once
        )
        for key, value in state.items():
            name = key.decode(errors="replace")
            try:
                self.windows.restore(name, value)
            except FeatureStateError as exc:  # rebuilt from the stream instead
                log.warning("state.record_skipped", key=name, reason=str(exc))

    def on_revoke(self, tps: list[TP]) -> None:
        return None

    def close(self) -> None:
        return None

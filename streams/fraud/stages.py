"""The fraud stream in two stages, for a fleet whose per-worker cost falls as workers are added.

A single fraud worker reads every label (terminal risk is global, input is keyed by card), so
its label-side work does not shrink with the fleet. Split in two, under the ``fraud_reports``
label contract (terminal counts come from the transactions themselves):

- the **cards** stage consumes ``transactions`` (keyed by card) with the customer state and its
  changelog, checks them as the single worker does (bounds, reused ids: dead letters), computes
  the card columns and each transaction's habit flag
  (:meth:`~finscore.features.fraud.FraudFeatures.card_columns`) and hands the rows to the
  terminals stage over ``<group>-transactions-by-terminal-repartition``, each row in the
  partition of its terminal, many rows a record (:mod:`finscore.streams.fraud.repartition`);
- the **terminals** stage consumes that topic, holds only its terminals' entries (rebuilt at
  assignment from the topic itself: it is that stage's changelog), adds the terminal columns
  (:meth:`~finscore.features.fraud.FraudFeatures.terminal_columns`), scores, and writes the
  fraud flags, each naming the original transaction (topic, partition, offset), keyed and
  timestamped like it.

Both stages read the fraud reports (0.6 % of transactions in the simulator) in full: cards for
the card outcome columns, terminals for the terminal ones. Each worker's work is then
X/N transactions + f·X reports. The features are those of a single worker (the same code, in
two halves). In exactly-once mode each stage commits its outputs and offsets in one Kafka
transaction and reads ``read_committed``. Label dead letters are reported by the cards stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from finscore.features.fraud import N_FEATURES, FraudFeatureConfig, FraudFeatures
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.changelog import read_changelog_records
from finscore.streams.fraud.columns import FlagEncoder, TxColumns
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.fraud.repartition import (
    RepartitionRecordError,
    TerminalRows,
    decode_rows,
    encode_rows,
    split_by_partition,
)
from finscore.streams.fraud.stream import FraudStream
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import BatchResult, Clock, DeadLetter, Stage, StreamPipeline, now_ms
from finscore.streams.stream import (
    StreamBase,
    follow,
    output_codec,
    output_encoding,
    registry_client,
)
from finscore.streams.transport import Message, OutRecord, TransportFactory, catch_up
from finscore.streams.transport import TopicPartition as TP

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = [
    "MAX_ROWS_PER_RECORD",
    "STAGES",
    "CardsPipeline",
    "CardsStream",
    "TerminalsPipeline",
    "TerminalsStream",
    "repartition_topic",
]

log = get_logger(__name__)

STAGES = ("all", "cards", "terminals")
# Rows per repartition record: ~200 bytes a row, so a record stays far below the 1 MB that
# brokers accept by default (message.max.bytes).
MAX_ROWS_PER_RECORD = 2000
ROWS_KEY = b"rows"  # the records are placed by partition; a key keeps them in changelog reads


def repartition_topic(cfg: WorkerConfig) -> str:
    """The topic between the stages: ``<fleet group>-transactions-by-terminal-repartition``."""
    return f"{cfg.fleet_group}-transactions-by-terminal-repartition"


def _check_contract(cfg: WorkerConfig) -> None:
    if cfg.label_contract != "fraud_reports":
        raise ValueError(
            "the two-stage fraud fleet needs FINSCORE_LABEL_CONTRACT=fraud_reports: under "
            "all_outcomes the terminal counts come from every label, so each terminals worker "
            "would read every label again"
        )


# -- cards ------------------------------------------------------------------------------------
class CardsPipeline(FraudPipeline):
    """The single worker's pipeline up to the card columns (decode, bounds, reused ids, the
    customer state and its changelog), then rows to the terminals stage instead of flags."""

    def __init__(
        self,
        features: FraudFeatures,
        slot: ModelSlot,
        output_topic: str,
        *,
        partitions: int,
        max_rows: int = MAX_ROWS_PER_RECORD,
        **kwargs: object,
    ) -> None:
        """``output_topic``: the repartition topic, with ``partitions`` partitions."""
        super().__init__(features, slot, output_topic, **kwargs)  # type: ignore[arg-type]
        self.partitions = partitions
        self.max_rows = max_rows

    def score(self, cols: TxColumns, messages: list[Message], result: BatchResult) -> None:
        """Card columns and habit flags (the state remembers the customers for the next flush);
        one record per destination partition (and per ``max_rows`` rows)."""
        x, below = self.features.card_columns(
            cols.transaction_id, cols.event_time, cols.customer_id, cols.cents
        )
        msgs = cols.messages
        self._dirty.update(zip(cols.customer_id, [m.partition for m in msgs], strict=True))
        n = len(msgs)
        rows = TerminalRows(
            source_topic=[m.topic for m in msgs],
            source_partition=np.fromiter((m.partition for m in msgs), np.int32, n),
            source_offset=np.fromiter((m.offset for m in msgs), np.int64, n),
            timestamp_ms=np.fromiter((m.timestamp_ms for m in msgs), np.int64, n),
            key=[m.key for m in msgs],
            transaction_id=cols.transaction_id,
            customer_id=cols.customer_id,
            terminal_id=cols.terminal_id,
            event_time=cols.event_time,
            cents=cols.cents,
            below=np.asarray(below, dtype=np.int64),
            features=x,
        )
        for p, part in split_by_partition(rows, self.partitions):
            for a in range(0, len(part), self.max_rows):
                chunk = part.take(np.arange(a, min(a + self.max_rows, len(part))))
                result.outputs.append(OutRecord(self.output_topic, ROWS_KEY, encode_rows(chunk), p))
        result.scored = n


class CardsStream(FraudStream):
    """transactions → rows by terminal; customer state in its changelog, reports read in full
    (for the card outcome columns), no model."""

    scores = False  # the worker loads no model for this stage

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        _check_contract(cfg)
        super().__init__(cfg, slot, transports, part="cards")
        self.output_topic = repartition_topic(cfg)
        self.output_schema = ""  # FTR1 records: no Avro schema, no resume guard
        self.internal_topics = (self.output_topic,)

    def start(self) -> None:
        ensure_repartition(self.cfg, self.transports, self.input_topic)
        super().start()

    def make_pipeline(self) -> FraudPipeline:
        return CardsPipeline(
            self.features,
            self.slot,
            self.output_topic,
            partitions=len(self.transports.partitions(self.output_topic)),
            bounds=self.cfg.bounds,
            changelog_topic=self.changelog_topic,
            in_codec=Codec("transaction", registry=self._registry),
        )


def ensure_repartition(cfg: WorkerConfig, transports: TransportFactory, input_topic: str) -> str:
    """Create the repartition topic and its dead-letter topic (partitioned and replicated like
    the input; kept 45 days, longer than any feature looks back: it is the terminals stage's
    changelog). Both stages call it; the first one creates."""
    name = repartition_topic(cfg)
    transports.ensure_topic_like(name, input_topic, dict(T.APPEND_ONLY_STATE))
    transports.ensure_topic_like(T.dlq(name), input_topic, {})
    return name


# -- terminals --------------------------------------------------------------------------------
@dataclass
class RowsBatch:
    """Decoded repartition records: the rows, and per row the record that carried it."""

    rows: TerminalRows
    carriers: list[Message]

    def __len__(self) -> int:
        return len(self.carriers)

    def take(self, idx: np.ndarray) -> RowsBatch:
        return RowsBatch(self.rows.take(idx), [self.carriers[i] for i in idx.tolist()])


def decode_records(messages: list[Message]) -> tuple[RowsBatch, list[DeadLetter]]:
    """Every valid rows record of the batch, in order; a record that is not one is a dead
    letter (``RepartitionRecordError`` with the reason)."""
    parts: list[TerminalRows] = []
    carriers: list[Message] = []
    dead: list[DeadLetter] = []
    for m in messages:
        try:
            if m.value is None:
                raise RepartitionRecordError("record has no value (tombstone)")
            rows = decode_rows(m.value)
        except RepartitionRecordError as exc:
            dead.append(DeadLetter(m, "RepartitionRecordError", str(exc)))
            continue
        parts.append(rows)
        carriers += [m] * len(rows)
    return RowsBatch(concat_rows(parts), carriers), dead


def concat_rows(parts: list[TerminalRows]) -> TerminalRows:
    """The rows of ``parts`` one after the other (no copy for one part)."""
    if len(parts) == 1:
        return parts[0]
    lists = ("source_topic", "key", "transaction_id", "customer_id", "terminal_id")
    arrays = {"source_partition": np.int32, "source_offset": np.int64, "timestamp_ms": np.int64,
              "event_time": np.int64, "cents": np.int64, "below": np.int64}  # fmt: skip
    values: dict[str, object] = {k: [v for p in parts for v in getattr(p, k)] for k in lists}
    for k, dtype in arrays.items():
        values[k] = np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0, dtype)
    values["features"] = (
        np.concatenate([p.features for p in parts])
        if parts
        else np.zeros((0, N_FEATURES), np.float32)
    )
    return TerminalRows(**values)  # type: ignore[arg-type]


def original_messages(rows: TerminalRows) -> list[Message]:
    """Per row, the transaction record it came from (no value): what a flag names and how it
    is keyed and timestamped."""
    return [
        Message(t, p, o, k, None, ts)
        for t, p, o, k, ts in zip(
            rows.source_topic,
            rows.source_partition.tolist(),
            rows.source_offset.tolist(),
            rows.key,
            rows.timestamp_ms.tolist(),
            strict=True,
        )  # fmt: skip
    ]


class TerminalsPipeline(StreamPipeline[RowsBatch]):
    """Rows by terminal → terminal columns → the live model (and a challenger) → fraud flags.
    No changelog of its own: the repartition topic is one (``flush = "at_commit"`` only evicts
    what no feature can see any more)."""

    flush = "at_commit"

    def __init__(
        self,
        features: FraudFeatures,
        slot: ModelSlot,
        output_topic: str,
        *,
        threshold: float | None = None,
        out_codec: Codec | None = None,
        output_encoding: str = "avro",
        clock: Clock = time.time,
        evict_interval: float = 30.0,
    ) -> None:
        super().__init__(slot, output_topic, changelog_topic=None, clock=clock)
        self.features = features
        self.threshold_override = threshold
        self.flags = FlagEncoder(out_codec or Codec("fraud_flag"), output_encoding)
        self.evict_interval = evict_interval
        self._last_evict = time.monotonic()

    def decode(self, messages: list[Message]) -> tuple[RowsBatch, list[DeadLetter]]:
        return decode_records(messages)

    def checks(self) -> list[tuple[str, Stage[RowsBatch]]]:
        return [("ImpossibleValue", self._out_of_range)]

    def _out_of_range(self, batch: RowsBatch, now: int) -> tuple[np.ndarray, list[str]]:
        bad = np.flatnonzero(~self.features.accepts_times(batch.rows.event_time))
        t = batch.rows.event_time
        return bad, [f"event_time {int(t[i])} is out of the feature state's range" for i in bad]

    def message_at(self, cols: RowsBatch, messages: list[Message]) -> Callable[[int], Message]:
        return cols.carriers.__getitem__

    def score(self, cols: RowsBatch, messages: list[Message], result: BatchResult) -> None:
        rows = cols.rows
        originals = original_messages(rows)
        live = self.slot.live
        if live is None:  # dead letters naming the transactions; the state is not touched
            result.dead_letters += [DeadLetter(m, "NoModel", "no model loaded") for m in originals]
            return
        x = np.array(rows.features, dtype=np.float32, copy=True)
        self.features.terminal_columns(
            x, rows.transaction_id, rows.event_time, rows.terminal_id, rows.below
        )
        run = self.run_models(live, x, result)
        processing = now_ms(self.clock)
        tx = TxColumns(originals, rows.transaction_id, rows.event_time, rows.customer_id,
                       rows.terminal_id, rows.cents)  # fmt: skip

        self.emit_scores(result, originals, tx, run, self.flags, processing)

    def flush_state(self) -> list[OutRecord]:
        if time.monotonic() - self._last_evict >= self.evict_interval:
            self.features.evict()
            self._last_evict = time.monotonic()
        return []


class TerminalsStream(StreamBase):
    """repartitioned rows → fraud-flags; its terminals' entries rebuilt from the repartition
    topic at assignment, the reports read in full (card-side dead letters are the cards
    stage's to report)."""

    scores = True

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        _check_contract(cfg)
        super().__init__(cfg, slot, transports, input_topic=T.TRANSACTIONS,
                         output_topic=T.FRAUD_FLAGS, output_schema="fraud_flag")  # fmt: skip
        self.transactions_topic: str = cfg.topic(T.TRANSACTIONS)
        self.input_topic = repartition_topic(cfg)
        self.internal_topics = (self.input_topic,)
        self.labels_topic = cfg.topic(T.FRAUD_LABELS)
        features_cfg = FraudFeatureConfig(
            time_origin_ms=cfg.bounds.min_event_time_ms, label_contract=cfg.label_contract
        )
        self.features = FraudFeatures(features_cfg, part="terminals")
        self._registry = registry_client(cfg)
        self.labels = LabelsPipeline(
            self.features, bounds=cfg.bounds, codec=Codec("fraud_label", registry=self._registry)
        )
        self._labels_reader = None
        self.pipeline: TerminalsPipeline

    def start(self) -> None:
        ensure_repartition(self.cfg, self.transports, self.transactions_topic)
        encoding = output_encoding(self.cfg, self.output_topic, self._registry)
        self.pipeline = TerminalsPipeline(
            self.features,
            self.slot,
            self.output_topic,
            threshold=self.cfg.threshold,
            output_encoding=encoding,
            out_codec=output_codec(self.output_schema, self.output_topic, self._registry, encoding),
        )
        reader = self._labels_reader = follow(
            self.cfg, self.transports, self.labels_topic, "labels"
        )
        n = catch_up(reader, lambda msgs: self.labels.process(msgs).scored)
        log.info("labels.caught_up", labels=n)

    def before_batch(self) -> None:
        if self._labels_reader is not None:
            msgs = self._labels_reader.read(20000, 0)
            if msgs:
                self.labels.process(msgs)

    def on_assign(self, tps: list[TP]) -> None:
        """Rebuild the assigned partitions' terminal entries from the repartition topic (to its
        end: an entry read again when its row is scored is not added twice)."""
        parts = [p for t, p in tps if t == self.input_topic]
        t0, n = time.monotonic(), 0
        records = read_changelog_records(self.transports, self.input_topic, parts,
                                         read_committed=self.cfg.exactly_once)  # fmt: skip
        for _, value in records:
            try:
                rows = decode_rows(value)
            except RepartitionRecordError:
                continue  # a dead letter when it is consumed
            self.features.add_terminal_rows(
                rows.transaction_id, rows.event_time, rows.terminal_id, rows.below
            )
            n += len(rows)
        log.info("state.restored", topic=self.input_topic, partitions=parts, rows=n,
                 seconds=round(time.monotonic() - t0, 3))  # fmt: skip

    def close(self) -> None:
        if self._labels_reader is not None:
            self._labels_reader.close()
            self._labels_reader = None

"""The fraud stream: transactions → fraud-flags, customer state in an append-only changelog,
the delayed labels of *all* partitions read as a side input (terminal risk is global whatever
partitions a worker owns), and in ``fraud_reports`` fleets the workers' terminal entries
exchanged on their own topic.

The features: under the ``all_outcomes`` label contract, in the single-stage topology
(``part="all"``), they come from the fraud family's declaration (``fraud_declared.toml``, run by
the declared engine behind FraudFeatures' interface:
:class:`~finscore.families.fraud.DeclaredFraudFeatures`; the same rows and
changelog records, bit for bit). The ``fraud_reports`` contract and the two-stage topology's
halves keep the hand-coded :class:`~finscore.features.fraud.FraudFeatures`: the declaration's
vocabulary does not express them (counts from the transactions themselves, each scored
transaction's habit flag, reports pending their terminal entry, the halves' exchange)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from finscore.families.fraud import DeclaredFraudFeatures, declared_covers
from finscore.features.exceptions import FeatureStateError
from finscore.features.fraud import FraudFeatureConfig, FraudFeatures
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.changelog import restore_append_only
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import DeadLetter
from finscore.streams.stream import (
    MAX_PENDING_DEAD,
    LabelSide,
    StreamBase,
    ensure_changelog,
    follow,
    output_codec,
    output_encoding,
    registry_client,
)
from finscore.streams.transport import Message, TopicReader, TransportFactory, catch_up
from finscore.streams.transport import TopicPartition as TP

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = ["MAX_PENDING_DEAD", "FraudStream"]

log = get_logger(__name__)


class FraudStream(StreamBase):
    """transactions → fraud-flags, customer state in a changelog, labels read globally."""

    scores = True  # the worker loads a model for it (the two-stage fleet's cards stage: no)

    def __init__(
        self,
        cfg: WorkerConfig,
        slot: ModelSlot,
        transports: TransportFactory | None = None,
        *,
        part: str = "all",
    ) -> None:
        """``part``: which features this stream computes (``"all"``; ``"cards"`` for the
        two-stage fleet's cards stage, :mod:`finscore.streams.fraud.stages`)."""
        super().__init__(cfg, slot, transports, input_topic=T.TRANSACTIONS,
                         output_topic=T.FRAUD_FLAGS, output_schema="fraud_flag")  # fmt: skip
        self.labels_topic = cfg.topic(T.FRAUD_LABELS)
        # The stores' time range starts at the earliest accepted event time: fixed, so no
        # record (valid or not) moves it.
        features_cfg = FraudFeatureConfig(
            time_origin_ms=cfg.bounds.min_event_time_ms, label_contract=cfg.label_contract
        )
        # fraud_reports: the workers exchange their transactions' terminal entries (see
        # finscore.features.terminal_entries) on <group>-terminal-entries-changelog.
        # all_outcomes, single stage: the declaration (see the module docstring).
        self.features: FraudFeatures | DeclaredFraudFeatures
        if declared_covers(features_cfg, part):
            self.features = DeclaredFraudFeatures(features_cfg)
        else:
            self.features = FraudFeatures(
                features_cfg, share_entries=features_cfg.reports_only and part == "all", part=part
            )
        self.entries_topic = ""
        self._entries_reader: TopicReader | None = None
        self._entries_key = cfg.instance_id.encode()
        self._registry = registry_client(cfg)
        self.labels = LabelsPipeline(
            self.features, bounds=cfg.bounds, codec=Codec("fraud_label", registry=self._registry)
        )
        self.label_side = LabelSide(self.labels)
        self.pipeline: FraudPipeline  # set in start()

    def start(self) -> None:
        # Append-only (each record holds a customer's new window entries), so it is pruned by
        # time, not compacted: kept longer than any feature looks back.
        self.changelog_topic = ensure_changelog(
            self.cfg, self.transports, self.input_topic, "customer-entries", T.APPEND_ONLY_STATE
        )
        self.pipeline = self.make_pipeline()
        if self.features.cfg.reports_only and self.features.part == "all":
            self._start_entries()  # before the labels: a report finds its entry
        n = self.label_side.follow(self._follow(self.labels_topic, "labels"))
        log.info("labels.caught_up", labels=n)

    def make_pipeline(self) -> FraudPipeline:
        """The stream's pipeline (called by :meth:`start`, once the changelog exists)."""
        out_encoding = output_encoding(self.cfg, self.output_topic, self._registry)
        return FraudPipeline(
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

    def _follow(self, topic: str, name: str) -> TopicReader:
        """A reader of every partition of ``topic`` (:func:`~finscore.streams.stream.follow`)."""
        return follow(self.cfg, self.transports, topic, name)

    def _start_entries(self) -> None:
        """Create the terminal-entries topic (append-only, partitioned like the input), have
        the pipeline write this worker's entries to it at each flush, read every partition of
        it (``read_committed`` in exactly-once mode) and catch up to its end."""
        self.entries_topic = ensure_changelog(
            self.cfg, self.transports, self.input_topic, "terminal-entries", T.APPEND_ONLY_STATE
        )
        self._entries_reader = self._follow(self.entries_topic, "entries")
        self.pipeline.entries_topic = self.entries_topic
        self.pipeline.entries_partitions = len(self._entries_reader.assigned())
        self.pipeline.entries_key = self._entries_key
        # Own records too: a worker restarted under the same instance id starts empty.
        n = catch_up(self._entries_reader, lambda m: self._apply_entries(m, True))
        log.info("terminal_entries.caught_up", records=n)

    def _apply_entries(self, msgs: list[Message], own: bool = False) -> int:
        """Add other workers' terminal entries (and this worker's own when ``own``: once
        running, they are in its state already); a record that is not a valid entries record
        is skipped with a warning."""
        key = None if own else self._entries_key
        values = [m.value for m in msgs if m.value and (key is None or m.key != key)]
        try:
            self.features.add_terminal_entries(values)
        except FeatureStateError:  # a corrupt record: keep every other one
            for v in values:
                try:
                    self.features.add_terminal_entries([v])
                except FeatureStateError as exc:
                    log.warning("terminal_entries.record_skipped", reason=str(exc))
        return len(values)

    def before_batch(self) -> None:
        if self._entries_reader is not None:
            entries = self._entries_reader.read(1000, 0)
            if entries:
                self._apply_entries(entries)
        self.label_side.read()

    def take_dead_letters(self) -> list[DeadLetter]:
        return self.label_side.take_dead_letters()

    def on_assign(self, tps: list[TP]) -> None:
        """Remember the partitions owned (for label dead letters) and rebuild their customer
        windows from the changelog (:func:`~finscore.streams.changelog.restore_append_only`):
        rows out of the time or amount bounds are dropped."""
        parts = [p for t, p in tps if t == self.input_topic]
        self.label_side.assigned(parts)
        b = self.cfg.bounds

        def keep(rows: np.ndarray) -> np.ndarray:  # rows: time, tag, cents, sq
            t, cents = rows[:, 0], rows[:, 2]
            latest = b.latest_ms(int(time.time() * 1000))
            return ((t >= b.min_event_time_ms) & (t <= latest)
                    & (cents >= b.min_amount_cents) & (cents <= b.max_amount_cents))  # fmt: skip

        restore_append_only(self.transports, self.changelog_topic, parts, self.features, keep,
                            read_committed=self.cfg.exactly_once)  # fmt: skip

    def on_revoke(self, tps: list[TP]) -> None:
        parts = {p for t, p in tps if t == self.input_topic}
        self.label_side.revoked(parts)
        if hasattr(self, "pipeline"):  # their new owner replays what was not committed
            self.pipeline.forget_partitions(parts)

    def close(self) -> None:
        self.label_side.close()
        if self._entries_reader is not None:
            self._entries_reader.close()
            self._entries_reader = None

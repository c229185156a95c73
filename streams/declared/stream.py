"""The stream of a declared family (:mod:`finscore.families`): its input topic → its output
topic, ``family_score`` records, the family's delayed labels of *all* partitions read as a side
input (label-risk windows over a second key are global whatever partitions a worker owns).

Everything comes from the declaration (``WorkerConfig.family_path``): the topics (prefixed with
``cfg.topic_prefix``), the schemas, the features, and the model's name (the family's name: the
worker loads the models announced under it, and admits only those whose manifest names that
family and features the family declares, see :func:`~finscore.streams.scoring.admit`).

State: the windows over the topic's key (``[input] key``) are kept in an append-only changelog,
``<group>-window-entries-<digest>-changelog`` (co-partitioned with the input, pruned by time:
kept the longest such window plus 15 days, at least 45 days), as the fraud stream keeps its
customer windows: the pipeline writes the entries added since the last commit with the commit
(in exactly-once mode within the batch's transaction), a worker reads the changelog partitions
of the input partitions it is assigned and rebuilds their windows, and forgets the unwritten
changes of the partitions it loses. So a worker restarted, or taking over partitions, scores as
an uninterrupted one does. Windows over another key are not in it: they are rebuilt only from
the events read from then on (see :mod:`finscore.families.engine`). Labels are read again from
the beginning at each start (see :mod:`finscore.streams.declared.pipeline`).

The changelog is tied to its rows' layout: ``<digest>`` is :meth:`DeclaredFeatures.
layout_digest <finscore.families.engine.DeclaredFeatures.layout_digest>` (8 hex digits of the
windows' key, columns with their integer units, and spans). Its records hold unnamed int64
columns, so rows written under another declaration would be read into the wrong columns (an
edit keeping the column count) or be refused as corrupt (another count). The digest is in the
topic's name rather than in each record's key because then a worker never reads another
layout's records at all (not at each assignment, to skip them until they expire), the records
stay those of :meth:`~finscore.families.engine.DeclaredFeatures.take_changes` (the fraud
stream's format), and the new topic gets the retention the new spans need. So an edited
declaration starts with empty windows over its topic's key (rebuilt from the events read from
then on, as windows over another key are), and the worker warns once at start
(``state.changelog_not_read``) naming the changelogs of its group it does not read (the one
before digests were named, ``<group>-window-entries-changelog``, included): delete them once no
worker of their layout runs.

On assignment, rows the declaration could not have written (:meth:`DeclaredFeatures.valid_rows
<finscore.families.engine.DeclaredFeatures.valid_rows>`: a summed value beyond the bound the
pipeline holds events to, a square that is not its field's, ...) and rows out of the time
bounds are dropped with a warning; a record that is not a window record, or a corrupt one, is
skipped with a warning, and the others restored.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import numpy as np

from finscore.families.engine import DeclaredFeatures
from finscore.families.exceptions import FamilySpecError
from finscore.families.spec import DAY_MS, FamilySpec, LabelRiskFeature, WindowFeature
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.topics import TopicSpec
from finscore.streams.changelog import restore_append_only
from finscore.streams.declared.columns import schema_of
from finscore.streams.declared.pipeline import DeclaredPipeline, LabelsPipeline
from finscore.streams.exceptions import StreamsError
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import DeadLetter
from finscore.streams.scoring import InputSpec
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
from finscore.streams.transport import TopicPartition as TP
from finscore.streams.transport import TransportFactory

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = [
    "CHANGELOG_STORE",
    "MAX_PENDING_DEAD",
    "OUTPUT_SCHEMA",
    "RESERVED_NAMES",
    "DeclaredStream",
    "changelog_config",
    "changelog_store",
    "family_topics",
]

log = get_logger(__name__)

OUTPUT_SCHEMA = "family_score"  # what a "probability" family writes
RESERVED_NAMES = ("fraud", "market")  # the built-in streams' model names
CHANGELOG_STORE = "window-entries"  # <group>-window-entries-<layout digest>-changelog


def changelog_store(features: DeclaredFeatures) -> str:
    """The window changelog's store name: ``window-entries-<layout digest>`` (see the module
    docstring); the topic is ``<group>-<store>-changelog``."""
    return f"{CHANGELOG_STORE}-{features.layout_digest()}"


def changelog_config(spec: FamilySpec) -> dict[str, str]:
    """The window changelog's topic config: append-only, deleted by age, kept the longest
    window over the topic's key plus 15 days (at least what the fraud stream keeps)."""
    spans = [f.span_ms for f in spec.features
             if isinstance(f, WindowFeature) and f.key == spec.input.key]  # fmt: skip
    keep = max([int(T.APPEND_ONLY_STATE["retention.ms"]), *(s + 15 * DAY_MS for s in spans)])
    return {**T.APPEND_ONLY_STATE, "retention.ms": str(keep)}


def reads_labels(spec: FamilySpec) -> bool:
    """Whether any feature of ``spec`` reads the labels (a ``label_risk`` feature)."""
    return any(isinstance(f, LabelRiskFeature) for f in spec.features)


def family_topics(spec: FamilySpec, partitions: int = 6, prefix: str = "") -> list[TopicSpec]:
    """The topics a worker of ``spec`` reads and writes besides ``model-updates`` (which the
    catalog has): its input, output and the output's shadow, its labels (when a feature reads
    them) and the dead-letter topics of its inputs; for :func:`~finscore.streams.admin.
    ensure_topics`."""
    inp, lab, out, p = spec.input, spec.label_spec, spec.output, prefix
    # a probability family writes family_score records; a series or sequence family its own
    # output schema (cashflow_forecast, price_signal)
    schema = OUTPUT_SCHEMA if out.kind == "probability" or out.schema is None else out.schema
    specs = [
        TopicSpec(p + inp.topic, partitions, inp.schema.ref, inp.key,
                  doc=f"Events of the {spec.name} family in."),
        TopicSpec(p + out.topic, partitions, schema, inp.key,
                  doc=f"Scores of the {spec.name} family out."),
        TopicSpec(p + T.shadow(out.topic), partitions, schema, inp.key,
                  doc=f"Challenger scores of the {spec.name} family (not acted on)."),
        TopicSpec(p + T.dlq(inp.topic), partitions, "dead_letter", "source key",
                  doc=f"Records of {inp.topic} that could not be processed."),
    ]  # fmt: skip
    if lab is not None and reads_labels(spec):
        specs += [
            TopicSpec(p + lab.topic, partitions, lab.schema.ref, lab.id,
                      doc=f"Delayed labels of the {spec.name} family."),
            TopicSpec(p + T.dlq(lab.topic), partitions, "dead_letter", "source key",
                      doc=f"Records of {lab.topic} that could not be processed."),
        ]  # fmt: skip
    return specs


class DeclaredStream(StreamBase):
    """A declared family's events → ``family_score`` records, the windows over the topic's
    key in a changelog, labels read globally (see the module docstring)."""

    scores = True

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        """Raises :class:`~finscore.families.FamilySpecError` when ``cfg`` names no family,
        or one this worker cannot serve (an output other than ``probability`` written as
        ``family_score``, or a built-in stream's name)."""
        spec = cfg.family_spec()
        _check_servable(spec)
        super().__init__(cfg, slot, transports, input_topic=spec.input.topic,
                         output_topic=spec.output.topic, output_schema=OUTPUT_SCHEMA)  # fmt: skip
        self.spec = spec
        self.model_name = spec.name
        assert cfg.family_path is not None  # family_spec() read it
        self._base_dir = cfg.family_path.parent
        self._registry = registry_client(cfg)
        self.features = DeclaredFeatures(spec, time_origin_ms=cfg.bounds.min_event_time_ms)
        self.labels_topic = cfg.topic(spec.label.topic) if reads_labels(spec) else ""
        label_name, label_schema = schema_of(spec.label.schema, self._base_dir)
        self.labels = LabelsPipeline(
            self.features,
            Codec(label_name, registry=self._registry, reader_schema=label_schema),
            bounds=cfg.bounds,
        )
        self.label_side = LabelSide(self.labels)
        self.pipeline: DeclaredPipeline  # set in start()

    @property
    def side_topics(self) -> list[str]:
        """Topics read besides the input (the labels, when a feature reads them) and their
        dead-letter topics: the worker requires them at start."""
        return [self.labels_topic, T.dlq(self.labels_topic)] if self.labels_topic else []

    def input_spec(self) -> InputSpec:
        """What this stream feeds a model: rows of the family's features, by name."""
        return InputSpec.declared(self.spec.name, self.spec.feature_names)

    def start(self) -> None:
        if self.features.has_changelog_state:
            self.changelog_topic = ensure_changelog(self.cfg, self.transports, self.input_topic,
                                                    changelog_store(self.features),
                                                    changelog_config(self.spec))  # fmt: skip
            self._warn_unread_changelogs()
        self.pipeline = self.make_pipeline()
        if self.labels_topic:
            reader = follow(self.cfg, self.transports, self.labels_topic, "labels")
            n = self.label_side.follow(reader)
            log.info("labels.caught_up", family=self.spec.name, labels=n)

    def _warn_unread_changelogs(self) -> None:
        """Warn once if this group has window changelogs of other layouts (written under
        another declaration, or before changelogs were named by layout): they are not read."""
        group = re.escape(self.cfg.group)
        pattern = re.compile(f"{group}-{CHANGELOG_STORE}(-[0-9a-f]{{8}})?-changelog")
        try:
            topics = self.transports.topic_partitions()
        except StreamsError as exc:  # only a warning is lost
            log.info("state.changelogs_not_listed", reason=str(exc))
            return
        others = sorted(t for t in topics if pattern.fullmatch(t) and t != self.changelog_topic)
        if others:
            log.warning("state.changelog_not_read", family=self.spec.name,
                        topic=self.changelog_topic, layout=self.features.changelog_layout(),
                        others=others,
                        reason="written under another window layout (an edited declaration): "
                               "the windows over the topic's key start empty; delete these "
                               "topics once no worker of their layout runs")  # fmt: skip

    def make_pipeline(self) -> DeclaredPipeline:
        """The stream's pipeline (called by :meth:`start`)."""
        out_encoding = output_encoding(self.cfg, self.output_topic, self._registry)
        name, schema = schema_of(self.spec.input.schema, self._base_dir)
        return DeclaredPipeline(
            self.features,
            self.slot,
            self.output_topic,
            in_codec=Codec(name, registry=self._registry, reader_schema=schema),
            out_codec=output_codec(
                self.output_schema, self.output_topic, self._registry, out_encoding
            ),
            output_encoding=out_encoding,
            threshold=self.cfg.threshold,
            bounds=self.cfg.bounds,
            explain=self.cfg.explain,
            changelog_topic=self.changelog_topic or None,
        )

    def before_batch(self) -> None:
        self.label_side.read()

    def take_dead_letters(self) -> list[DeadLetter]:
        return self.label_side.take_dead_letters()

    def on_assign(self, tps: list[TP]) -> None:
        """Remember the partitions owned (for label dead letters) and rebuild their windows
        from the changelog: every record of those partitions (``read_committed`` in
        exactly-once mode); a record that is not a window record is skipped with a warning,
        and so is a corrupt one (the others are kept); rows out of the time bounds, and rows
        the declaration could not have written (:meth:`DeclaredFeatures.valid_rows`), are
        dropped with a warning."""
        parts = [p for t, p in tps if t == self.input_topic]
        self.label_side.assigned(parts)
        if not self.changelog_topic:
            return
        b = self.cfg.bounds

        def keep(rows: np.ndarray) -> np.ndarray:  # rows: time, tag, the store's columns
            t = rows[:, 0]
            latest = b.latest_ms(int(time.time() * 1000))
            return (t >= b.min_event_time_ms) & (t <= latest) & self.features.valid_rows(rows)

        restore_append_only(self.transports, self.changelog_topic, parts, self.features, keep,
                            read_committed=self.cfg.exactly_once)  # fmt: skip

    def on_revoke(self, tps: list[TP]) -> None:
        parts = {p for t, p in tps if t == self.input_topic}
        self.label_side.revoked(parts)
        if hasattr(self, "pipeline"):  # their new owner replays what was not committed
            self.pipeline.forget_partitions(parts)

    def close(self) -> None:
        self.label_side.close()


def _check_servable(spec: FamilySpec) -> None:
    """Raise :class:`FamilySpecError` unless this worker can serve ``spec``."""
    if spec.name in RESERVED_NAMES:
        raise FamilySpecError(
            f"family {spec.name!r}: the name is the built-in {spec.name} stream's model name; "
            "name the family otherwise"
        )
    out = spec.output
    if out.kind != "probability":
        raise FamilySpecError(f"[output] kind {out.kind!r}: the family worker scores "
                              "'probability' outputs only")  # fmt: skip
    if out.schema not in (None, OUTPUT_SCHEMA):
        raise FamilySpecError(
            f"[output] schema {out.schema!r}: the family worker writes {OUTPUT_SCHEMA!r} "
            f"records (schemas/{OUTPUT_SCHEMA}.avsc); leave it out or name {OUTPUT_SCHEMA!r}"
            + (
                " (the fraud flags come from `finscore worker fraud`)"
                if out.schema == "fraud_flag"
                else ""
            )  # fmt: skip
        )

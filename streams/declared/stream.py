"""The stream of a declared family (:mod:`finscore.families`): its input topic → its output
topic, ``family_score`` records, the family's delayed labels of *all* partitions read as a side
input (label-risk windows over a second key are global whatever partitions a worker owns).

Everything comes from the declaration (``WorkerConfig.family_path``): the topics (prefixed with
``cfg.topic_prefix``), the schemas, the features, and the model's name (the family's name: the
worker loads the models announced under it, and admits only those whose manifest names that
family and features the family declares, see :func:`~finscore.streams.scoring.admit`).

No changelog yet: the window state is this process's only, so a restart (or a rebalance)
rebuilds windows only from the events it reads next; labels are read again from the
beginning at each start (see :mod:`finscore.streams.declared.pipeline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finscore.families.engine import DeclaredFeatures
from finscore.families.exceptions import FamilySpecError
from finscore.families.spec import FamilySpec, LabelRiskFeature
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.topics import TopicSpec
from finscore.streams.declared.columns import schema_of
from finscore.streams.declared.pipeline import DeclaredPipeline, LabelsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import DeadLetter
from finscore.streams.scoring import InputSpec
from finscore.streams.stream import (
    MAX_PENDING_DEAD,
    SideDeadLetters,
    StreamBase,
    follow,
    output_codec,
    output_encoding,
    registry_client,
)
from finscore.streams.transport import Message, TopicReader, TransportFactory, catch_up
from finscore.streams.transport import TopicPartition as TP

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = [
    "MAX_PENDING_DEAD",
    "OUTPUT_SCHEMA",
    "RESERVED_NAMES",
    "DeclaredStream",
    "family_topics",
]

log = get_logger(__name__)

OUTPUT_SCHEMA = "family_score"  # what a "probability" family writes
RESERVED_NAMES = ("fraud", "market")  # the built-in streams' model names


def reads_labels(spec: FamilySpec) -> bool:
    """Whether any feature of ``spec`` reads the labels (a ``label_risk`` feature)."""
    return any(isinstance(f, LabelRiskFeature) for f in spec.features)


def family_topics(spec: FamilySpec, partitions: int = 6, prefix: str = "") -> list[TopicSpec]:
    """The topics a worker of ``spec`` reads and writes besides ``model-updates`` (which the
    catalog has): its input, output and the output's shadow, its labels (when a feature reads
    them) and the dead-letter topics of its inputs; for :func:`~finscore.streams.admin.
    ensure_topics`."""
    inp, lab, out, p = spec.input, spec.label, spec.output, prefix
    specs = [
        TopicSpec(p + inp.topic, partitions, inp.schema.ref, inp.key,
                  doc=f"Events of the {spec.name} family in."),
        TopicSpec(p + out.topic, partitions, OUTPUT_SCHEMA, inp.key,
                  doc=f"Scores of the {spec.name} family out."),
        TopicSpec(p + T.shadow(out.topic), partitions, OUTPUT_SCHEMA, inp.key,
                  doc=f"Challenger scores of the {spec.name} family (not acted on)."),
        TopicSpec(p + T.dlq(inp.topic), partitions, "dead_letter", "source key",
                  doc=f"Records of {inp.topic} that could not be processed."),
    ]  # fmt: skip
    if reads_labels(spec):
        specs += [
            TopicSpec(p + lab.topic, partitions, lab.schema.ref, lab.id,
                      doc=f"Delayed labels of the {spec.name} family."),
            TopicSpec(p + T.dlq(lab.topic), partitions, "dead_letter", "source key",
                      doc=f"Records of {lab.topic} that could not be processed."),
        ]  # fmt: skip
    return specs


class DeclaredStream(StreamBase):
    """A declared family's events → ``family_score`` records, labels read globally, no
    changelog (see the module docstring)."""

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
        self._labels_reader: TopicReader | None = None
        self._label_dead = SideDeadLetters()
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
        self.pipeline = self.make_pipeline()
        if self.labels_topic:
            self._labels_reader = follow(self.cfg, self.transports, self.labels_topic, "labels")
            n = catch_up(self._labels_reader, self._apply_labels)
            log.info("labels.caught_up", family=self.spec.name, labels=n)

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
        )

    def _apply_labels(self, msgs: list[Message]) -> int:
        result = self.labels.process(msgs)
        self._label_dead.keep(result.dead_letters)
        return result.scored

    def before_batch(self) -> None:
        if self._labels_reader is not None:
            msgs = self._labels_reader.read(20000, 0)
            if msgs:
                self._apply_labels(msgs)

    def take_dead_letters(self) -> list[DeadLetter]:
        """Dead letters of labels read since the last call that this worker reports (those
        of the label partitions numbered like its input partitions)."""
        return self._label_dead.take()

    def on_assign(self, tps: list[TP]) -> None:
        """Remember the partitions owned (for label dead letters); there is no state to
        restore (no changelog: windows build up from the events read from now on)."""
        self._label_dead.assigned(p for t, p in tps if t == self.input_topic)

    def on_revoke(self, tps: list[TP]) -> None:
        self._label_dead.revoked(p for t, p in tps if t == self.input_topic)

    def close(self) -> None:
        if self._labels_reader is not None:
            self._labels_reader.close()
            self._labels_reader = None


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

"""The pure core shared by every worker: batches in, outputs and dead letters out, and the
skeleton every stream's pipeline is built on.

Nothing here talks to a broker. A pipeline's ``process(messages)`` decodes, validates,
featurises, scores and encodes one batch and returns a :class:`BatchResult`; failures are data
(:class:`DeadLetter` records for ``<input>-dlq``), never exceptions out of the hot path.

:class:`StreamPipeline` is that batch written once; a stream (``fraud/``, ``market/``) fills in
what is its own:

1. ``decode(messages)``: columns and dead letters (each stream's columnar decoder first, the
   per-record :class:`~finscore.schemas.codec.Codec` for what it leaves: other encodings,
   other writer versions, malformed records; see ``fraud/columns.py``, ``market/columns.py``);
2. ``checks()``: the validation stages, in order; the rows a stage refuses become dead letters
   with its reasons (:func:`split_off`) and never reach the next stage;
3. ``score(cols, messages, result)``: features, state, the models, and the outputs through
   :meth:`StreamPipeline.emit`, the one challenger step: a ``shadow`` challenger scores every
   key into the shadow topic, a ``canary`` one replaces the live outputs of its share of keys
   (:func:`~finscore.streams.scoring.in_canary`), whatever the stream;
4. the state flush its class declares (:data:`FlushPolicy`): ``at_commit``, the worker asks
   :meth:`StreamPipeline.flush_state` for the changelog records just before it commits;
   ``every_batch``, ``process`` puts them in :attr:`BatchResult.state` of every batch.

:class:`AppendOnlyPipeline` adds the bookkeeping of state kept in an append-only changelog
(the fraud customer windows, a declared family's windows over its topic's key): the keys
touched since the last flush with their input partition, their new entries at each flush,
periodic eviction, and forgetting revoked partitions' unwritten changes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

import numpy as np

from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.schemas.topics import dlq, shadow
from finscore.streams.changelog import AppendOnlyState
from finscore.streams.scoring import decision_threshold, in_canary
from finscore.streams.transport import Message, OutRecord

if TYPE_CHECKING:
    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.scoring import Challenger, Scorer

__all__ = [
    "AppendOnlyPipeline",
    "BatchResult",
    "Clock",
    "DeadLetter",
    "DeadLetterEncoder",
    "Encode",
    "FlushPolicy",
    "ModelOutputs",
    "Pipeline",
    "Stage",
    "StreamPipeline",
    "decode_batch",
    "no_model",
    "now_ms",
    "records",
    "split_off",
    "split_valid",
]

Clock = Callable[[], float]  # seconds since the epoch, like time.time

#: When a pipeline's state goes to its changelog: ``at_commit`` (the worker calls
#: ``flush_state()`` just before each commit) or ``every_batch`` (in every batch's result).
FlushPolicy = Literal["at_commit", "every_batch"]

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


@dataclass(slots=True)
class ModelOutputs:
    """What the live model (and the slot's challenger) gave on one batch's feature rows."""

    live: Scorer
    x_live: np.ndarray  # the columns the live model reads
    scores: np.ndarray
    challenger: Challenger | None
    challenger_scores: np.ndarray | None


class Pipeline(Protocol):
    """What a worker runs per batch, and when it asks for the pipeline's state."""

    flush: FlushPolicy

    def process(self, messages: list[Message]) -> BatchResult: ...

    def flush_state(self) -> list[OutRecord]: ...


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


# -- the skeleton -----------------------------------------------------------------------------


class Columns(Protocol):
    """A stream's decoded batch: one entry per row, rows taken by index."""

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray): ...  # noqa: ANN201 - the same columns type


C = TypeVar("C", bound=Columns)


class ScoreEncoder(Protocol):
    """Encodes one output per scored row (a stream's flags or scores encoder)."""

    def encode(self, cols: Any, scores: np.ndarray, scorer: Scorer, threshold: float,
               processing_ms: int, top: list[list[dict]] | None = None) -> list[bytes]: ...  # fmt: skip


#: One validation stage: ``(columns, now_ms) -> (rows refused, their reasons)``.
Stage = Callable[[C, int], tuple[np.ndarray, Sequence[str]]]

#: Encodes outputs: ``(rows or None for all, scorer, its scores of those rows, shadow) ->
#: values``; ``shadow`` is True for a shadow challenger's outputs.
Encode = Callable[[np.ndarray | None, "Scorer", np.ndarray, bool], list[bytes]]


def split_off(
    cols: C,
    rows: np.ndarray,
    reasons: Sequence[str],
    message_at: Callable[[int], Message],
    error_type: str = "ImpossibleValue",
) -> tuple[C, list[DeadLetter]]:
    """(``cols`` without ``rows``, a dead letter per refused row with its reason), the rows
    kept in order; ``message_at(i)`` is the message of row ``i``."""
    if not len(rows):
        return cols, []
    dead = [
        DeadLetter(message_at(i), error_type, why)
        for i, why in zip(rows.tolist(), reasons, strict=True)
    ]
    keep = np.ones(len(cols), dtype=bool)
    keep[rows] = False
    return cols.take(np.flatnonzero(keep)), dead


def no_model(messages: Sequence[Message]) -> list[DeadLetter]:
    """Dead letters for records that would have been scored with no model loaded (nothing
    may be dropped silently)."""
    return [DeadLetter(m, "NoModel", "no model loaded") for m in messages]


def records(topic: str, messages: Sequence[Message], values: list[bytes]) -> list[OutRecord]:
    """One output record per message, keyed and timestamped like its input."""
    # positional OutRecord(topic, key, value, partition, timestamp): measurably faster
    return [
        OutRecord(topic, m.key, v, None, m.timestamp_ms)
        for m, v in zip(messages, values, strict=True)
    ]


class StreamPipeline(Generic[C]):
    """One batch of a stream, written once: decode → validate → score → emit (+ the state
    flush the class declares). See the module docstring for what a stream fills in."""

    #: When the state goes to the changelog (see :data:`FlushPolicy`); every stream declares it.
    flush: ClassVar[FlushPolicy]
    threshold_override: float | None = None  # a stream of decisions: the worker's setting

    def __init__(
        self, slot: ModelSlot, output_topic: str, *, changelog_topic: str | None, clock: Clock
    ) -> None:
        self.slot = slot
        self.output_topic = output_topic
        self.changelog_topic = changelog_topic
        self.clock = clock

    # -- what a stream provides ------------------------------------------------------------

    def decode(self, messages: list[Message]) -> tuple[C, list[DeadLetter]]:
        """The batch's decodable messages as columns, and dead letters for the others."""
        raise NotImplementedError

    def checks(self) -> Sequence[tuple[str, Stage[C]]]:
        """The validation stages, in order, each with the error type of its dead letters."""
        raise NotImplementedError

    def message_at(self, cols: C, messages: list[Message]) -> Callable[[int], Message]:
        """The message of a row of ``cols`` (decoded from ``messages``)."""
        raise NotImplementedError

    def score(self, cols: C, messages: list[Message], result: BatchResult) -> None:
        """Features, state and models on the valid rows; outputs through :meth:`emit`."""
        raise NotImplementedError

    def flush_state(self) -> list[OutRecord]:
        """The changelog records of the state changed since the last flush."""
        return []

    def run_models(self, live: Scorer, x: np.ndarray, result: BatchResult) -> ModelOutputs:
        """The live model and the slot's challenger on feature rows ``x``, each on the columns
        it reads; adds to ``result``'s inference time and rows scored (a stream may run its
        models more than once a batch) and sets its model version."""
        t0 = time.perf_counter()
        x_live = live.select(x)
        scores = live.score_batch(x_live)
        challenger = self.slot.challenger
        ch_scores = (
            challenger.scorer.score_batch(challenger.scorer.select(x)) if challenger else None
        )
        result.inference_seconds += time.perf_counter() - t0
        result.model_version = live.version
        result.scored += len(x)
        return ModelOutputs(live, x_live, scores, challenger, ch_scores)

    # -- the batch ---------------------------------------------------------------------------

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → score → encode one batch (see the module docstring)."""
        result = BatchResult()
        cols, result.dead_letters = self.decode(messages)
        now = now_ms(self.clock)
        for error_type, check in self.checks():
            if not len(cols):
                break
            rows, reasons = check(cols, now)
            if len(rows):
                cols, dead = split_off(
                    cols, rows, reasons, self.message_at(cols, messages), error_type
                )
                result.dead_letters += dead
        if len(cols):
            self.score(cols, messages, result)
        if self.flush == "every_batch":
            result.state = self.flush_state()
        return result

    def emit(
        self,
        result: BatchResult,
        messages: Sequence[Message],
        live: Scorer,
        scores: np.ndarray,
        challenger: Challenger | None,
        challenger_scores: np.ndarray | None,
        encode: Encode,
    ) -> None:
        """The challenger step, the same for every stream: add the outputs of the scored rows
        (``messages``, ``scores`` by ``live``, in output order) to ``result``. A ``shadow``
        challenger's outputs (``challenger_scores``) go to the shadow topic, every row, each
        just before its live one; a ``canary`` challenger's replace the live ones of its share
        of keys (:func:`~finscore.streams.scoring.in_canary`)."""
        topic = self.output_topic
        values = encode(None, live, scores, False)
        if challenger is not None and challenger_scores is not None:
            ch = challenger.scorer
            if challenger.mode == "canary":
                canary = np.fromiter(
                    (in_canary(m.key, challenger.share) for m in messages), bool, len(messages)
                )
                if canary.any():
                    rows = np.flatnonzero(canary)
                    ch_values = encode(rows, ch, challenger_scores[rows], False)
                    for i, v in zip(rows.tolist(), ch_values, strict=True):
                        values[i] = v
            else:  # each shadow output just before its live one
                shadows = records(
                    shadow(topic), messages, encode(None, ch, challenger_scores, True)
                )
                lives = records(topic, messages, values)
                result.outputs += [r for pair in zip(shadows, lives, strict=True) for r in pair]
                return
        result.outputs += records(topic, messages, values)

    def threshold_of(self, scorer: Scorer) -> float:
        """The decision threshold: the override, else the manifest's, else 0.5."""
        return decision_threshold(scorer, self.threshold_override)

    def emit_scores(
        self,
        result: BatchResult,
        messages: Sequence[Message],
        cols: Columns,
        run: ModelOutputs,
        encoder: ScoreEncoder,
        processing_ms: int,
        top: list[list[dict]] | None = None,
    ) -> None:
        """:meth:`emit` for a stream of one score per row: each output is
        ``encoder.encode(rows of cols, scores, scorer, its threshold, processing_ms, top)``,
        ``cols`` the scored rows' columns (taken by index for a challenger's share),
        ``top`` their top features (:func:`~finscore.streams.scoring.top_features`; live
        outputs and a canary's only, never a shadow's; None: none)."""

        def encode(rows: np.ndarray | None, scorer: Scorer, s: np.ndarray, shadow: bool) -> list[bytes]:  # fmt: skip
            sub = cols if rows is None else cols.take(rows)
            t = None if top is None or shadow else top
            if t is not None and rows is not None:
                t = [t[i] for i in rows.tolist()]
            return encoder.encode(sub, s, scorer, self.threshold_of(scorer), processing_ms, t)

        self.emit(result, messages, run.live, run.scores, run.challenger, run.challenger_scores,
                  encode)  # fmt: skip


class AppendOnlyPipeline(StreamPipeline[C]):
    """A :class:`StreamPipeline` whose state (``features``, set by the subclass) is kept in an
    append-only changelog (``changelog_topic``; None: nowhere, the state is this process's
    only). :meth:`touched` remembers the keys a batch changed with their input partitions;
    :meth:`flush_state` writes their new entries; :meth:`forget_partitions` drops those of
    revoked partitions."""

    features: AppendOnlyState

    def __init__(
        self,
        slot: ModelSlot,
        output_topic: str,
        *,
        changelog_topic: str | None,
        clock: Clock,
        evict_interval: float,
    ) -> None:
        """``evict_interval``: seconds between evictions of state no feature can see (at a
        flush; an eviction scans the whole state, so not at every commit)."""
        super().__init__(slot, output_topic, changelog_topic=changelog_topic, clock=clock)
        self.evict_interval = evict_interval
        self._last_evict = time.monotonic()
        self._dirty: dict[str, int] = {}  # key -> input partition, since the last flush

    def touched(self, keys: Sequence[str], messages: Sequence[Message]) -> None:
        """Remember that ``keys`` changed, each in the input partition of its message."""
        self._dirty.update(zip(keys, [m.partition for m in messages], strict=True))

    def flush_state(self) -> list[OutRecord]:
        """Changelog records of the keys changed since the last flush: the entries added
        since then (``features.take_changes``), a few records per input partition, each in
        the partition its keys live in, keyed ``p<partition>`` (none without a changelog).
        Every ``evict_interval`` seconds also forgets what no feature can see any more."""
        dirty, self._dirty = self._dirty, {}
        changes = self.features.take_changes(dirty)
        if time.monotonic() - self._last_evict >= self.evict_interval:
            self.features.evict()
            self._last_evict = time.monotonic()
        if not self.changelog_topic:
            return []
        topic = self.changelog_topic
        return [OutRecord(topic, b"p%d" % p, rows, p) for p, rows in changes]

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop pending changelog updates of revoked partitions (never write the state of a
        key a new owner has; it rebuilds ours by replaying the uncommitted input)."""
        gone = [k for k, p in self._dirty.items() if p in partitions]
        self.features.forget_changes(gone)
        self._dirty = {k: p for k, p in self._dirty.items() if p not in partitions}

"""The fraud pipeline (pure): transactions → shared features → model → fraud flags.

Per batch, on columns rather than per-record dicts: decode (see
:mod:`finscore.streams.fraud_columns`), validate (impossible values become dead letters),
featurise with :meth:`finscore.features.fraud.FraudFeatures.transform_columns` (the same code
training uses), score with the live model (and a challenger, if one is set), encode flags keyed
like their input. Customers whose state changed are remembered until the worker asks for
their changelog records (:meth:`FraudPipeline.flush_state`), which it does before it commits.
"""

from __future__ import annotations

import math
import time
import zlib
from decimal import Decimal

import numpy as np

from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures
from finscore.schemas.codec import Codec
from finscore.schemas.columnar import ColumnarCodec
from finscore.schemas.topics import shadow
from finscore.streams.fraud_columns import FlagEncoder, TxColumns, decode_transactions
from finscore.streams.pipeline import (
    MAX_FUTURE_SKEW_MS,
    BatchResult,
    Clock,
    DeadLetter,
    decode_batch,
    now_ms,
)
from finscore.streams.scoring import ModelSlot, Scorer
from finscore.streams.transport import Message, OutRecord

_LABEL_COLUMNAR = ColumnarCodec("fraud_label")


def validate_transaction(tx: dict, now: int) -> str | None:
    """Why a decoded transaction is impossible, or None when it is fine."""
    amount = tx["amount"]
    if isinstance(amount, Decimal):
        if not amount.is_finite():
            return f"amount is {amount}"
    elif not math.isfinite(float(amount)):
        return f"amount is {amount}"
    if amount < 0:
        return f"negative amount {amount}"
    if not tx["customer_id"] or not tx["terminal_id"]:
        return "empty customer_id or terminal_id"
    if tx["event_time"] > now + MAX_FUTURE_SKEW_MS:
        return f"event_time {tx['event_time']} is more than 1 h in the future"
    return None


def in_canary(key: bytes | None, share: float) -> bool:
    """Deterministic key-based canary split: the same key always lands on the same side."""
    if share <= 0:
        return False
    return (zlib.crc32(key or b"") % 10_000) < share * 10_000


class FraudPipeline:
    """Scores a batch of transaction messages; see the module docstring."""

    def __init__(
        self,
        features: FraudFeatures,
        slot: ModelSlot,
        output_topic: str,
        *,
        threshold: float | None = None,
        output_encoding: str = "avro",
        changelog_topic: str | None = None,
        clock: Clock = time.time,
        in_codec: Codec | None = None,
        out_codec: Codec | None = None,
        explain: int = 0,
        evict_interval: float = 30.0,
    ) -> None:
        """``evict_interval``: seconds between evictions of state no feature can see (at a
        flush; an eviction scans the whole state, so not at every commit)."""
        self.explain = explain
        self.features = features
        self.slot = slot
        self.output_topic = output_topic
        self.threshold_override = threshold
        self.changelog_topic = changelog_topic
        self.clock = clock
        self.in_codec = in_codec or Codec("transaction")
        self.flags = FlagEncoder(out_codec or Codec("fraud_flag"), output_encoding)
        self._dirty: dict[str, int] = {}  # customer -> input partition, since the last flush
        self.evict_interval = evict_interval
        self._last_evict = time.monotonic()

    @property
    def output_encoding(self) -> str:
        return self.flags.encoding

    def threshold_of(self, scorer: Scorer) -> float:
        """The decision threshold: the override, else the manifest's, else 0.5."""
        if self.threshold_override is not None:
            return self.threshold_override
        t = scorer.manifest.threshold
        return 0.5 if t is None else float(t)

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → featurise → score → encode one batch."""
        result = BatchResult()
        cols, result.dead_letters = decode_transactions(self.in_codec, messages)
        cols, impossible = self._validate(cols, now_ms(self.clock))
        result.dead_letters += impossible
        live = self.slot.live
        if not len(cols) or live is None:
            if len(cols):  # no model: nothing may be dropped silently
                result.dead_letters += [
                    DeadLetter(m, "NoModel", "no model loaded") for m in cols.messages
                ]
            return result
        x = self.features.transform_columns(
            cols.transaction_id, cols.event_time, cols.customer_id, cols.terminal_id, cols.cents
        )
        self._dirty.update(zip(cols.customer_id, [m.partition for m in cols.messages], strict=True))
        t0 = time.perf_counter()
        x_live = live.select(x)
        scores = live.score_batch(x_live)
        challenger = self.slot.challenger
        ch_scores = (
            challenger.scorer.score_batch(challenger.scorer.select(x)) if challenger else None
        )
        result.inference_seconds = time.perf_counter() - t0
        result.model_version = live.version
        result.scored = len(cols)
        processing = now_ms(self.clock)
        top = self._top_features(x_live, live, self.explain) if self.explain else None
        if challenger is not None and ch_scores is not None and challenger.mode == "shadow":
            ch = challenger.scorer
            values = self.flags.encode(cols, ch_scores, ch, self.threshold_of(ch), processing)
            result.outputs += self._records(shadow(self.output_topic), cols.messages, values)
        if challenger is not None and ch_scores is not None and challenger.mode == "canary":
            ch = challenger.scorer
            canary = np.fromiter(
                (in_canary(m.key, challenger.share) for m in cols.messages), bool, len(cols)
            )
            values = self.flags.encode(cols, scores, live, self.threshold_of(live), processing, top)
            if canary.any():
                rows = np.flatnonzero(canary)
                sub = cols.take(rows)
                sub_top = [top[i] for i in rows] if top is not None else None
                ch_values = self.flags.encode(
                    sub, ch_scores[rows], ch, self.threshold_of(ch), processing, sub_top
                )
                for i, v in zip(rows.tolist(), ch_values, strict=True):
                    values[i] = v
        else:
            values = self.flags.encode(cols, scores, live, self.threshold_of(live), processing, top)
        result.outputs += self._records(self.output_topic, cols.messages, values)
        return result

    @staticmethod
    def _records(topic: str, messages: list[Message], values: list[bytes]) -> list[OutRecord]:
        return [
            OutRecord(topic, m.key, v, None, m.timestamp_ms)
            for m, v in zip(messages, values, strict=True)
        ]

    def _validate(self, cols: TxColumns, now: int) -> tuple[TxColumns, list[DeadLetter]]:
        """Split off impossible transactions (same rules and reasons as validate_transaction)."""
        bad = (
            (cols.cents < 0)
            | (cols.event_time > now + MAX_FUTURE_SKEW_MS)
            | ~self.features.accepts_times(cols.event_time)
            | (np.fromiter(map(len, cols.customer_id), np.int64, len(cols)) == 0)
            | (np.fromiter(map(len, cols.terminal_id), np.int64, len(cols)) == 0)
        )
        if not bad.any():
            return cols, []
        dead = []
        for i in np.flatnonzero(bad).tolist():
            reason = validate_transaction(cols.record(i), now) or (
                f"event_time {int(cols.event_time[i])} is out of the feature state's range"
            )
            dead.append(DeadLetter(cols.messages[i], "ImpossibleValue", reason))
        return cols.take(np.flatnonzero(~bad)), dead

    def flush_state(self) -> list[OutRecord]:
        """Changelog records for the customers changed since the last flush: the window entries
        added since then (an append-only changelog, see ``FraudFeatures.take_changes``), a few
        records per input partition, each in the partition its customers live in. Every
        ``evict_interval`` seconds also forgets what no feature can see any more."""
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
        gone = [c for c, p in self._dirty.items() if p in partitions]
        self.features.forget_changes(gone)
        self._dirty = {c: p for c, p in self._dirty.items() if p not in partitions}

    @staticmethod
    def _top_features(x: np.ndarray, scorer: Scorer, k: int) -> list[list[dict]]:
        """Per row, the k features furthest from the training mean, in standard deviations.

        Uses ``feature_mean``/``feature_std`` from the manifest's params (a cheap, model-agnostic
        "what is unusual about this transaction"); empty lists when the manifest has none.
        """
        params = scorer.manifest.params or {}
        mean, std = params.get("feature_mean"), params.get("feature_std")
        if not mean or not std:
            return [[] for _ in range(len(x))]
        z = (x - np.asarray(mean, dtype=np.float32)) / np.maximum(np.asarray(std, np.float32), 1e-6)
        order = np.argsort(-np.abs(z), axis=1)[:, :k]
        names = scorer.manifest.feature_names or list(FRAUD_FEATURE_NAMES)
        return [
            [
                {"feature": names[j], "value": float(x[r, j]), "contribution": float(z[r, j])}
                for j in row
            ]
            for r, row in enumerate(order.tolist())
        ]


class LabelsPipeline:
    """Applies delayed fraud labels to the terminal-risk state; bad labels are dead letters.

    Every worker reads every label (terminal risk is global), so this path is columnar too:
    the vectorised decoder for our own Avro labels, the per-record codec for the rest.
    """

    def __init__(self, features: FraudFeatures, codec: Codec | None = None) -> None:
        self.features = features
        self.codec = codec or Codec("fraud_label")

    def process(self, messages: list[Message]) -> BatchResult:
        result = BatchResult()
        batch = _LABEL_COLUMNAR.decode([m.value for m in messages])
        if len(batch):
            assert batch.scales["amount"] == 2, "the label schema's amounts are in cents"
            self.features.apply_label_columns(
                batch["transaction_id"],
                batch["customer_id"],
                batch["terminal_id"],
                batch["tx_time"],
                batch["label_time"],
                batch["is_fraud"],
                batch["amount"],
            )
        decoded, result.dead_letters = decode_batch(self.codec, [messages[i] for i in batch.rest])
        labels = [lab for _, lab in decoded]
        if labels:
            self.features.apply_labels(labels)
        result.scored = len(batch) + len(labels)
        return result

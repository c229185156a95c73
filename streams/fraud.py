"""The fraud pipeline (pure): transactions → shared features → model → fraud flags.

Per batch: decode, validate (impossible values become dead letters), featurise with
:class:`finscore.features.fraud.FraudFeatures` (the same code training uses), score with the
live model (and a challenger, if one is set), encode flags keyed like their input, and emit
changelog records for the customers whose state changed.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from decimal import Decimal

import numpy as np

from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures
from finscore.schemas.codec import Codec
from finscore.schemas.topics import shadow
from finscore.streams.pipeline import (
    MAX_FUTURE_SKEW_MS,
    BatchResult,
    Clock,
    DeadLetter,
    decode_batch,
    now_ms,
    split_valid,
)
from finscore.streams.scoring import ModelSlot, Scorer
from finscore.streams.transport import Message, OutRecord


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


def encode_snapshot(snap: object) -> bytes:
    """Changelog value of one key's state (bytes pass through; other values become JSON)."""
    if isinstance(snap, bytes):
        return snap
    return json.dumps(snap, separators=(",", ":")).encode()


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
    ) -> None:
        self.explain = explain
        self.features = features
        self.slot = slot
        self.output_topic = output_topic
        self.threshold_override = threshold
        self.output_encoding = output_encoding
        self.changelog_topic = changelog_topic
        self.clock = clock
        self.in_codec = in_codec or Codec("transaction")
        self.out_codec = out_codec or Codec("fraud_flag")

    def threshold_of(self, scorer: Scorer) -> float:
        """The decision threshold: the override, else the manifest's, else 0.5."""
        if self.threshold_override is not None:
            return self.threshold_override
        t = scorer.manifest.threshold
        return 0.5 if t is None else float(t)

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → featurise → score → encode one batch."""
        result = BatchResult()
        now = now_ms(self.clock)
        decoded, result.dead_letters = decode_batch(self.in_codec, messages)
        valid, impossible = split_valid(decoded, lambda r: validate_transaction(r, now))
        result.dead_letters += impossible
        live = self.slot.live
        if not valid or live is None:
            if valid:  # no model: nothing may be dropped silently
                result.dead_letters += [
                    DeadLetter(m, "NoModel", "no model loaded") for m, _ in valid
                ]
            return result
        txs = [tx for _, tx in valid]
        x = self.features.transform(txs)
        t0 = time.perf_counter()
        scores = live.score_batch(x)
        challenger = self.slot.challenger
        ch_scores = challenger.scorer.score_batch(x) if challenger else None
        result.inference_seconds = time.perf_counter() - t0
        result.model_version = live.version
        result.scored = len(valid)
        processing = now_ms(self.clock)
        live_t = self.threshold_of(live)
        top = self._top_features(x, live, self.explain) if self.explain else None
        for i, (m, tx) in enumerate(valid):
            scorer, score, threshold = live, float(scores[i]), live_t
            if challenger is not None and ch_scores is not None:
                if challenger.mode == "canary" and in_canary(m.key, challenger.share):
                    scorer, score = challenger.scorer, float(ch_scores[i])
                    threshold = self.threshold_of(challenger.scorer)
                elif challenger.mode == "shadow":
                    ch = challenger.scorer
                    flag = self._flag(tx, m, ch, float(ch_scores[i]), self.threshold_of(ch))
                    flag["processing_time"] = processing
                    result.outputs.append(
                        OutRecord(
                            shadow(self.output_topic),
                            m.key,
                            self.out_codec.encode(flag, self.output_encoding),
                            timestamp_ms=m.timestamp_ms,
                        )
                    )
            flag = self._flag(tx, m, scorer, score, threshold)
            flag["processing_time"] = processing
            if top is not None:
                flag["top_features"] = top[i]
            value = self.out_codec.encode(flag, self.output_encoding)
            result.outputs.append(
                OutRecord(self.output_topic, m.key, value, timestamp_ms=m.timestamp_ms)
            )
        if self.changelog_topic:
            result.state = self._changelog(valid)
        return result

    def _flag(self, tx: dict, m: Message, scorer: Scorer, score: float, threshold: float) -> dict:
        return {
            "transaction_id": tx["transaction_id"],
            "customer_id": tx["customer_id"],
            "terminal_id": tx["terminal_id"],
            "score": score,
            "flagged": score >= threshold,
            "threshold": threshold,
            "model_name": scorer.name,
            "model_version": scorer.version,
            "event_time": tx["event_time"],
            "processing_time": 0,
            "source_topic": m.topic,
            "source_partition": m.partition,
            "source_offset": m.offset,
            "top_features": [],
        }

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

    def _changelog(self, valid: list[tuple[Message, dict]]) -> list[OutRecord]:
        latest: dict[str, int] = {}
        for m, tx in valid:
            latest[tx["customer_id"]] = m.partition
        assert self.changelog_topic is not None
        return [
            OutRecord(
                self.changelog_topic,
                cid.encode(),
                encode_snapshot(self.features.snapshot_customer(cid)),
                partition=p,
            )
            for cid, p in latest.items()
        ]


class LabelsPipeline:
    """Applies delayed fraud labels to the terminal-risk state; bad labels are dead letters."""

    def __init__(self, features: FraudFeatures, codec: Codec | None = None) -> None:
        self.features = features
        self.codec = codec or Codec("fraud_label")

    def process(self, messages: list[Message]) -> BatchResult:
        result = BatchResult()
        decoded, result.dead_letters = decode_batch(self.codec, messages)
        labels = [lab for _, lab in decoded]
        if labels:
            self.features.apply_labels(labels)
        result.scored = len(labels)
        return result

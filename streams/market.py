"""The market pipeline (pure): book snapshots → rolling windows → model → price signals.

Nothing is emitted for an instrument until its window holds ``window`` snapshots. Crossed or
empty books, non-positive prices, negative sizes and far-future timestamps are dead letters.
"""

from __future__ import annotations

import time

import numpy as np

from finscore.features.market import MarketWindows
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

SIGNALS = ("DOWN", "FLAT", "UP")


def validate_tick(tick: dict, now_us: int) -> str | None:
    """Why a decoded book snapshot is impossible, or None when it is fine."""
    bids, asks = tick["bids"], tick["asks"]
    if not bids or not asks:
        return "empty book side"
    if len(bids) > 10 or len(asks) > 10:
        return "more than 10 levels on a side"
    for side in (bids, asks):
        for lvl in side:
            if not lvl["price"] > 0 or lvl["size"] < 0:  # `not >` also catches NaN
                return f"impossible level {lvl}"
    if bids[0]["price"] >= asks[0]["price"]:
        return f"crossed book: bid {bids[0]['price']} >= ask {asks[0]['price']}"
    if tick["event_time"] > now_us + MAX_FUTURE_SKEW_MS * 1000:
        return f"event_time {tick['event_time']} is more than 1 h in the future"
    return None


class MarketPipeline:
    """Scores a batch of market-tick messages; see the module docstring."""

    def __init__(
        self,
        windows: MarketWindows,
        slot: ModelSlot,
        output_topic: str,
        *,
        output_encoding: str = "avro",
        changelog_topic: str | None = None,
        clock: Clock = time.time,
        in_codec: Codec | None = None,
        out_codec: Codec | None = None,
    ) -> None:
        self.windows = windows
        self.slot = slot
        self.output_topic = output_topic
        self.output_encoding = output_encoding
        self.changelog_topic = changelog_topic
        self.clock = clock
        self.in_codec = in_codec or Codec("market_tick")
        self.out_codec = out_codec or Codec("price_signal")

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → window → score the full windows → encode signals."""
        result = BatchResult()
        now_us = now_ms(self.clock) * 1000
        decoded, result.dead_letters = decode_batch(self.in_codec, messages)
        valid, impossible = split_valid(decoded, lambda r: validate_tick(r, now_us))
        result.dead_letters += impossible
        if not valid:
            return result
        ticks = [t for _, t in valid]
        ready = self.windows.push(ticks)
        live = self.slot.live
        if ready and live is None:
            result.dead_letters += [
                DeadLetter(valid[i][0], "NoModel", "no model loaded") for i, _ in ready
            ]
            ready = []
        if ready and live is not None:
            x = np.stack([w for _, w in ready]).astype(np.float32, copy=False)
            t0 = time.perf_counter()
            probs = live.score_batch(x)
            challenger = self.slot.challenger
            ch_probs = challenger.scorer.score_batch(x) if challenger else None
            result.inference_seconds = time.perf_counter() - t0
            result.model_version = live.version
            result.scored = len(ready)
            processing = now_ms(self.clock)
            for row, (i, _) in enumerate(ready):
                m, tick = valid[i]
                if challenger is not None and ch_probs is not None:
                    signal = self._signal(tick, m, challenger.scorer, ch_probs[row], processing)
                    result.outputs.append(
                        OutRecord(
                            shadow(self.output_topic),
                            m.key,
                            self.out_codec.encode(signal, self.output_encoding),
                            timestamp_ms=m.timestamp_ms,
                        )
                    )
                signal = self._signal(tick, m, live, probs[row], processing)
                value = self.out_codec.encode(signal, self.output_encoding)
                result.outputs.append(
                    OutRecord(self.output_topic, m.key, value, timestamp_ms=m.timestamp_ms)
                )
        if self.changelog_topic:
            latest = {t["instrument"]: m.partition for m, t in valid}
            result.state = [
                OutRecord(self.changelog_topic, inst.encode(), self.windows.snapshot(inst), p)
                for inst, p in latest.items()
            ]
        return result

    @staticmethod
    def _signal(tick: dict, m: Message, scorer: Scorer, p: np.ndarray, processing: int) -> dict:
        params = scorer.manifest.params or {}
        mid = (tick["bids"][0]["price"] + tick["asks"][0]["price"]) / 2
        return {
            "instrument": tick["instrument"],
            "sequence": tick["sequence"],
            "horizon": int(params.get("horizon", 0)),
            "prob_down": float(p[0]),
            "prob_flat": float(p[1]),
            "prob_up": float(p[2]),
            "signal": SIGNALS[int(np.argmax(p))],
            "mid_price": float(mid),
            "model_name": scorer.name,
            "model_version": scorer.version,
            "event_time": tick["event_time"],
            "processing_time": processing,
            "source_topic": m.topic,
            "source_partition": m.partition,
            "source_offset": m.offset,
        }

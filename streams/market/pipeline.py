"""The market pipeline (pure): book snapshots → rolling windows → model → price signals.

Columnar from end to end: the batch is decoded into columns (:func:`decode_ticks`), checked
with the rules of :func:`validate_tick` on all rows at once, turned into feature rows
(:func:`rows_from_levels`, bit-identical to the training path ``rows_from_book_array(book_array)``), pushed
into per-instrument windows, scored in chunks of windows copied once each into a reused
float32 array (:class:`ReadyWindows`), and the signals are encoded with :class:`ColumnarCodec`.

Nothing is emitted for an instrument until its window holds ``window`` snapshots; a tick whose
sequence was already seen is skipped, and so is one more than ``max_sequence_gap`` above its
instrument's last (a dead letter). Empty or over-long instrument names, negative sequences,
crossed or empty books, more than 10 levels, non-positive, NaN or infinite prices, negative
sizes and event times outside the bounds (:class:`~finscore.streams.bounds.InputBounds`) are
dead letters (with the reasons of :func:`validate_tick`); so are undecodable records (with the
reasons of ``Codec.decode``).
Signals are produced in input order. A shadow challenger's signal goes to the shadow topic just
before the live one; a canary challenger's signal replaces the live one for its share of
instruments (:func:`~finscore.streams.scoring.in_canary`, the same split as every stream).
"""

from __future__ import annotations

import time

import numpy as np

from finscore.features.market import rows_from_levels
from finscore.features.market_windows import MarketWindows, ReadyWindows
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.schemas.topics import shadow
from finscore.streams.bounds import DEFAULT_BOUNDS, InputBounds
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.columns import (
    SMALL_BATCH,
    TickColumns,
    decode_ticks,
    impossible_ticks,
    validate_tick,
)
from finscore.streams.pipeline import BatchResult, Clock, DeadLetter, now_ms
from finscore.streams.scoring import Scorer, in_canary
from finscore.streams.transport import Message, OutRecord

__all__ = ["SIGNALS", "MarketPipeline", "validate_tick"]

SIGNALS = ("DOWN", "FLAT", "UP")


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
        bounds: InputBounds = DEFAULT_BOUNDS,
    ) -> None:
        """``bounds``: what a tick may hold (see :func:`impossible_ticks`); others are dead
        letters."""
        self.bounds = bounds
        self.windows = windows
        self.slot = slot
        self.output_topic = output_topic
        self.output_encoding = output_encoding
        self.changelog_topic = changelog_topic
        self.clock = clock
        self.in_codec = in_codec or Codec("market_tick")
        self.out_codec = out_codec or Codec("price_signal")
        self.in_columnar = ColumnarCodec("market_tick")
        self.out_columnar = ColumnarCodec("price_signal")

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → window → score the full windows → encode signals."""
        result = BatchResult()
        now_us = now_ms(self.clock) * 1000
        ticks, result.dead_letters = decode_ticks(self.in_columnar, self.in_codec, messages)
        bad, reasons = impossible_ticks(ticks, now_us, self.bounds)
        if len(bad):
            result.dead_letters += [
                DeadLetter(messages[int(ticks.index[i])], "ImpossibleValue", why)
                for i, why in zip(bad.tolist(), reasons, strict=True)
            ]
            keep = np.ones(len(ticks), dtype=bool)
            keep[bad] = False
            ticks = ticks.take(keep)
        jumps = np.flatnonzero(
            self.windows.sequence_jumps(
                ticks.instrument, ticks.sequence, self.bounds.max_sequence_gap
            )
        )
        if len(jumps):
            result.dead_letters += [
                DeadLetter(
                    messages[int(ticks.index[i])],
                    "ImpossibleValue",
                    f"sequence {int(ticks.sequence[i])} more than "
                    f"{self.bounds.max_sequence_gap} above its instrument's last",
                )
                for i in jumps.tolist()
            ]
            keep = np.ones(len(ticks), dtype=bool)
            keep[jumps] = False
            ticks = ticks.take(keep)
        if not len(ticks):
            return result
        rows = rows_from_levels(
            ticks.ask_price, ticks.ask_size, ticks.ask_count,
            ticks.bid_price, ticks.bid_size, ticks.bid_count, self.windows.layout,
        )  # fmt: skip
        ready = self.windows.push_rows(ticks.instrument, ticks.sequence, rows)
        live = self.slot.live
        if len(ready) and live is None:
            result.dead_letters += [
                DeadLetter(messages[int(ticks.index[i])], "NoModel", "no model loaded")
                for i in np.sort(ready.index).tolist()
            ]
        elif len(ready) and live is not None:
            self._score(result, messages, ticks, ready, live)
        if self.changelog_topic:
            parts = map(messages.__getitem__, ticks.index.tolist())
            latest = dict(zip(ticks.instrument, (m.partition for m in parts), strict=True))
            result.state = [
                OutRecord(self.changelog_topic, inst.encode(), self.windows.snapshot(inst), p)
                for inst, p in latest.items()
            ]
        return result

    def _score(
        self,
        result: BatchResult,
        messages: list[Message],
        ticks: TickColumns,
        ready: ReadyWindows,
        live: Scorer,
    ) -> None:
        """Score the ready windows in chunks (each copied once into a reused array that stays
        in cache while ONNX Runtime reads it) and encode the signals in input order."""
        t0 = time.perf_counter()
        challenger = self.slot.challenger
        probs = np.empty((len(ready), 3), dtype=np.float32)
        ch_probs = np.empty_like(probs) if challenger else None
        for lo, x in ready.batches():
            probs[lo : lo + len(x)] = live.score_batch(x)
            if challenger is not None and ch_probs is not None:
                ch_probs[lo : lo + len(x)] = challenger.scorer.score_batch(x)
        result.inference_seconds = time.perf_counter() - t0
        result.model_version = live.version
        result.scored = len(ready)
        processing = now_ms(self.clock)
        order = np.argsort(ready.index, kind="stable")  # windows come grouped by instrument
        rows = ready.index[order]
        msgs = [messages[i] for i in ticks.index[rows].tolist()]
        live_values = self._encode(ticks, rows, msgs, live, probs[order], processing)
        topic = self.output_topic  # positional OutRecord(topic, key, value, partition, ts): faster
        outs = [
            OutRecord(topic, m.key, v, None, m.timestamp_ms)
            for m, v in zip(msgs, live_values, strict=True)
        ]
        if challenger is not None and ch_probs is not None and challenger.mode == "canary":
            # the challenger's signals replace the live ones for its share of instruments
            canary = np.fromiter(
                (in_canary(m.key, challenger.share) for m in msgs), bool, len(msgs)
            )
            if canary.any():
                sel = np.flatnonzero(canary)
                ch_values = self._encode(
                    ticks, rows[sel], [msgs[i] for i in sel.tolist()], challenger.scorer,
                    ch_probs[order][sel], processing,
                )  # fmt: skip
                for i, v in zip(sel.tolist(), ch_values, strict=True):
                    m = msgs[i]
                    outs[i] = OutRecord(self.output_topic, m.key, v, None, m.timestamp_ms)
        elif challenger is not None and ch_probs is not None:
            ch_values = self._encode(
                ticks, rows, msgs, challenger.scorer, ch_probs[order], processing
            )
            topic = shadow(self.output_topic)
            shadows = [
                OutRecord(topic, m.key, v, None, m.timestamp_ms)
                for m, v in zip(msgs, ch_values, strict=True)
            ]
            outs = [o for pair in zip(shadows, outs, strict=True) for o in pair]
        result.outputs += outs

    def _encode(
        self,
        ticks: TickColumns,
        rows: np.ndarray,
        msgs: list[Message],
        scorer: Scorer,
        p: np.ndarray,
        processing: int,
    ) -> list[bytes]:
        """Price signals of the ticks at ``rows`` scored ``p`` [n, 3] by ``scorer``."""
        params = scorer.manifest.params or {}
        p = np.asarray(p, dtype=np.float64)
        cols = {
            "instrument": [ticks.instrument[i] for i in rows.tolist()],
            "sequence": ticks.sequence[rows],
            "horizon": int(params.get("horizon", 0)),
            "prob_down": p[:, 0],
            "prob_flat": p[:, 1],
            "prob_up": p[:, 2],
            "signal": np.argmax(p, axis=1),
            "mid_price": ticks.mid()[rows],
            "model_name": scorer.name,
            "model_version": scorer.version,
            "event_time": ticks.event_time[rows],
            "processing_time": processing,
            "source_topic": _one_or_all([m.topic for m in msgs]),
            "source_partition": np.fromiter((m.partition for m in msgs), np.int64, len(msgs)),
            "source_offset": np.fromiter((m.offset for m in msgs), np.int64, len(msgs)),
        }
        if self.output_encoding in ("avro", "confluent") and len(rows) > SMALL_BATCH:
            header = self.out_codec.header_for(self.output_encoding)  # same Avro body in both
            return self.out_columnar.encode(len(rows), cols, header=header)
        records = [  # JSON (or Confluent) output, or a few signals: the per-record codec
            {k: (v[j] if isinstance(v, list | np.ndarray) else v) for k, v in cols.items()}
            for j in range(len(rows))
        ]
        for r in records:
            r["signal"] = SIGNALS[int(r["signal"])]
            for k, v in r.items():
                if isinstance(v, np.generic):
                    r[k] = v.item()
        return [self.out_codec.encode(r, self.output_encoding) for r in records]


def _one_or_all(values: list[str]) -> str | list[str]:
    """The one value when all are equal (encoded once per batch), else the list."""
    first = values[0] if values else ""
    return first if values.count(first) == len(values) else values

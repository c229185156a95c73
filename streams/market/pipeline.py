"""The market pipeline (pure): book snapshots → rolling windows → model → price signals.

Built on the stream skeleton (:class:`~finscore.streams.pipeline.StreamPipeline`), columnar
from end to end: the batch is decoded into columns (:func:`decode_ticks`), checked
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
Signals are produced in input order. The challenger step is the skeleton's
(:meth:`~finscore.streams.pipeline.StreamPipeline.emit`, the same for every stream): a shadow
challenger's signal goes to the shadow topic just before the live one; a canary
challenger's signals replace the live ones for its share of instruments
(:func:`~finscore.streams.scoring.in_canary`). The windows of the instruments a batch touched
go to the changelog with that batch (:meth:`MarketPipeline.flush_state`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from finscore.families import FamilySpec, FamilySpecError
from finscore.families.spec import SequenceFeature
from finscore.features.market import rows_from_levels
from finscore.features.market_windows import MarketWindows, ReadyWindows
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.streams.bounds import DEFAULT_BOUNDS, InputBounds
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.columns import (
    SMALL_BATCH,
    TickColumns,
    decode_ticks,
    impossible_ticks,
    validate_tick,
)
from finscore.streams.pipeline import (
    BatchResult,
    Clock,
    DeadLetter,
    Stage,
    StreamPipeline,
    no_model,
    now_ms,
)
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message, OutRecord

__all__ = ["SIGNALS", "MarketPipeline", "declared_sequence", "validate_tick"]

SIGNALS = ("DOWN", "FLAT", "UP")

#: what this pipeline decodes and writes: (input schema, key, id, time), output schema
TICK_SCHEMA, TICK_KEY, TICK_ID, TICK_TIME = "market_tick", "instrument", "sequence", "event_time"
SIGNAL_SCHEMA = "price_signal"


def declared_sequence(spec: FamilySpec) -> SequenceFeature:
    """The ``sequence`` feature of ``spec`` when this pipeline can compute it: it decodes
    ``market_tick`` ticks, keeps a window per ``instrument`` in ``sequence`` order, reads each
    tick's ``event_time`` and writes ``price_signal`` signals. Any other declaration raises
    :class:`FamilySpecError`, one sentence naming the entry (the declaration's own checks,
    :mod:`finscore.families.spec`, accept any schema with a book, a key and a numeric id)."""
    seq, inp, out = spec.sequence, spec.input, spec.output
    where = f"family {spec.name!r}"
    if seq is None:
        raise FamilySpecError(f"{where} declares no sequence: not a market family")
    if inp.schema.ref != TICK_SCHEMA:
        raise FamilySpecError(
            f"{where}: [input] schema: the market stream decodes {TICK_SCHEMA!r} ticks, "
            f"not {inp.schema.ref!r}"
        )
    for entry, got, does in (
        ("key", inp.key, f"keeps a window per {TICK_KEY!r}"),
        ("id", inp.id, f"orders each instrument's ticks by {TICK_ID!r}"),
        ("time", inp.time, f"reads a tick's {TICK_TIME!r}"),
    ):
        want = {"key": TICK_KEY, "id": TICK_ID, "time": TICK_TIME}[entry]
        if got != want:
            raise FamilySpecError(
                f"{where}: [input] {entry}: the market stream {does}, not {got!r}"
            )
    if (out.schema or SIGNAL_SCHEMA) != SIGNAL_SCHEMA:
        raise FamilySpecError(
            f"{where}: [output] schema: the market stream writes {SIGNAL_SCHEMA!r} signals, "
            f"not {out.schema!r}"
        )
    return seq


class MarketPipeline(StreamPipeline[TickColumns]):
    """Scores a batch of market-tick messages on the stream skeleton
    (:class:`~finscore.streams.pipeline.StreamPipeline`); see the module docstring. The windows
    of the instruments a batch touched go to the changelog with that batch
    (``flush = "every_batch"``)."""

    flush = "every_batch"

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
        super().__init__(slot, output_topic, changelog_topic=changelog_topic, clock=clock)
        self.bounds = bounds
        self.windows = windows
        self.output_encoding = output_encoding
        self.in_codec = in_codec or Codec("market_tick")
        self.out_codec = out_codec or Codec("price_signal")
        self.in_columnar = ColumnarCodec("market_tick")
        self.out_columnar = ColumnarCodec("price_signal")
        self._dirty: dict[str, int] = {}  # instrument -> input partition, since the last flush

    def decode(self, messages: list[Message]) -> tuple[TickColumns, list[DeadLetter]]:
        return decode_ticks(self.in_columnar, self.in_codec, messages)

    def message_at(self, cols: TickColumns, messages: list[Message]) -> Callable[[int], Message]:
        index = cols.index
        return lambda i: messages[int(index[i])]

    def checks(self) -> list[tuple[str, Stage[TickColumns]]]:
        """Impossible ticks (:func:`impossible_ticks`), then sequence jumps."""
        return [("ImpossibleValue", self._impossible), ("ImpossibleValue", self._jumps)]

    def _impossible(self, ticks: TickColumns, now: int) -> tuple[np.ndarray, list[str]]:
        return impossible_ticks(ticks, now * 1000, self.bounds)

    def _jumps(self, ticks: TickColumns, now: int) -> tuple[np.ndarray, list[str]]:
        """Ticks more than ``max_sequence_gap`` above their instrument's last sequence."""
        gap = self.bounds.max_sequence_gap
        jumps = np.flatnonzero(self.windows.sequence_jumps(ticks.instrument, ticks.sequence, gap))
        return jumps, [
            f"sequence {int(ticks.sequence[i])} more than {gap} above its instrument's last"
            for i in jumps.tolist()
        ]

    def score(self, ticks: TickColumns, messages: list[Message], result: BatchResult) -> None:
        """Window → score the full windows → encode signals in input order."""
        rows = rows_from_levels(
            ticks.ask_price, ticks.ask_size, ticks.ask_count,
            ticks.bid_price, ticks.bid_size, ticks.bid_count, self.windows.layout,
        )  # fmt: skip
        ready = self.windows.push_rows(ticks.instrument, ticks.sequence, rows)
        if self.changelog_topic:
            parts = map(messages.__getitem__, ticks.index.tolist())
            self._dirty.update(zip(ticks.instrument, (m.partition for m in parts), strict=True))
        live = self.slot.live
        if len(ready) and live is None:
            index = ticks.index
            result.dead_letters += no_model(
                [messages[int(index[i])] for i in np.sort(ready.index).tolist()]
            )
        elif len(ready) and live is not None:
            self._score(result, messages, ticks, ready, live)

    def flush_state(self) -> list[OutRecord]:
        """The window snapshot of every instrument changed since the last flush (in the
        partition of its latest tick)."""
        if not self.changelog_topic:
            return []
        dirty, self._dirty = self._dirty, {}
        topic = self.changelog_topic
        return [
            OutRecord(topic, inst.encode(), self.windows.snapshot(inst), p)
            for inst, p in dirty.items()
        ]

    def _score(
        self,
        result: BatchResult,
        messages: list[Message],
        ticks: TickColumns,
        ready: ReadyWindows,
        live: Scorer,
    ) -> None:
        """Score the ready windows in chunks (each copied once into a reused array that stays
        in cache while ONNX Runtime reads it, for the live model and the challenger) and emit
        the signals in input order."""
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

        def encode(sel: np.ndarray | None, scorer: Scorer, p: np.ndarray, _: bool) -> list[bytes]:
            if sel is None:
                return self._encode(ticks, rows, msgs, scorer, p, processing)
            sub = [msgs[i] for i in sel.tolist()]
            return self._encode(ticks, rows[sel], sub, scorer, p, processing)

        ch_in_order = ch_probs[order] if ch_probs is not None else None
        self.emit(result, msgs, live, probs[order], challenger, ch_in_order, encode)

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

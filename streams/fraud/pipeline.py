"""The fraud pipeline (pure): transactions → shared features → model → fraud flags.

Built on the stream skeleton (:class:`~finscore.streams.pipeline.StreamPipeline`: the batch,
the validation stages, the challenger step and the flush protocol are the skeleton's). Per
batch, on columns rather than per-record dicts: decode (see
:mod:`finscore.streams.fraud.columns`), validate (impossible values become dead letters),
featurise with :meth:`finscore.features.fraud.FraudFeatures.transform_columns` (the same code
training uses; or the same rows from the fraud family's declaration,
:class:`~finscore.families.fraud.DeclaredFraudFeatures`, which the stream
runs under ``all_outcomes``), score with the live model (and a challenger, if one is set), encode flags keyed
like their input. Validation is explicit bounds (:class:`~finscore.streams.bounds.InputBounds`:
ids, amount, event time against the wall clock) and the duplicate policy of
:meth:`FraudPipeline._duplicates` (a reused id with other content is a
``duplicate_transaction_id`` dead letter; an identical repeat is a replay, scored again). Customers whose state changed are remembered until the worker asks for
their changelog records (:meth:`FraudPipeline.flush_state`), which it does before it commits.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import numpy as np

from finscore.families.fraud import DeclaredFraudFeatures
from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures, to_cents
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.streams.bounds import DEFAULT_BOUNDS, Check, InputBounds, first_failures
from finscore.streams.fraud.columns import (
    FlagEncoder,
    TxColumns,
    columns_from_records,
    decode_transactions,
)
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import (
    AppendOnlyPipeline,
    BatchResult,
    Clock,
    DeadLetter,
    Stage,
    decode_batch,
    no_model,
    now_ms,
)
from finscore.streams.scoring import top_features
from finscore.streams.transport import Message, OutRecord

_LABEL_COLUMNAR = ColumnarCodec("fraud_label")


DUPLICATE = "duplicate_transaction_id"
DUPLICATE_ERROR = "DuplicateTransactionId"


def transaction_checks(cols: TxColumns, now: int, bounds: InputBounds) -> list[Check]:
    """The bounds a transaction must meet, on whole columns (see :mod:`finscore.streams.bounds`):
    ids, amount, event time against the wall clock ``now`` (ms)."""
    return [
        *bounds.id_checks("transaction_id", cols.transaction_id),
        *bounds.id_checks("customer_id", cols.customer_id),
        *bounds.id_checks("terminal_id", cols.terminal_id),
        *bounds.amount_checks(cols.cents),
        *bounds.time_checks("event_time", cols.event_time, now),
    ]


def validate_transaction(tx: dict, now: int, bounds: InputBounds = DEFAULT_BOUNDS) -> str | None:
    """Why a decoded transaction is out of bounds, or None when it is fine (the pipeline's
    rules, on one record; a non-finite amount is refused)."""
    try:
        cols = columns_from_records([Message("", 0, 0, None, None)], [tx])
    except (ValueError, ArithmeticError, OverflowError):
        return f"amount is {tx.get('amount')}"
    _, reasons = first_failures(transaction_checks(cols, now, bounds), 1)
    return reasons[0] if reasons else None


class FraudPipeline(AppendOnlyPipeline[TxColumns]):
    """Scores a batch of transaction messages on the stream skeleton
    (:class:`~finscore.streams.pipeline.StreamPipeline`); see the module docstring. The state
    goes to its append-only changelog at each commit (``flush = "at_commit"``,
    :class:`~finscore.streams.pipeline.AppendOnlyPipeline`)."""

    flush = "at_commit"

    def __init__(
        self,
        features: FraudFeatures | DeclaredFraudFeatures,
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
        bounds: InputBounds = DEFAULT_BOUNDS,
        entries_topic: str | None = None,
        entries_partitions: int = 1,
        entries_key: bytes = b"",
    ) -> None:
        """``evict_interval``: seconds between evictions of state no feature can see (at a
        flush; an eviction scans the whole state, so not at every commit); ``bounds``: what a
        transaction may hold (others are dead letters); ``entries_topic`` (``fraud_reports``
        fleets): where each flush writes the terminal entries of the transactions scored since
        the previous one, keyed ``entries_key`` (this worker), in the partition of their
        terminal among ``entries_partitions``."""
        super().__init__(slot, output_topic, changelog_topic=changelog_topic, clock=clock,
                         evict_interval=evict_interval)  # fmt: skip
        self.entries_topic = entries_topic
        self.entries_partitions = max(1, entries_partitions)
        self.entries_key = entries_key
        self.bounds = bounds
        self.explain = explain
        self.features: FraudFeatures | DeclaredFraudFeatures = features
        self.threshold_override = threshold
        self.in_codec = in_codec or Codec("transaction")
        self.flags = FlagEncoder(out_codec or Codec("fraud_flag"), output_encoding)

    @property
    def output_encoding(self) -> str:
        return self.flags.encoding

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → validate → featurise → score → encode one batch; ``duplicates`` counts the
        ``duplicate_transaction_id`` dead letters."""
        result = super().process(messages)
        result.duplicates = sum(d.error_type == DUPLICATE_ERROR for d in result.dead_letters)
        return result

    def decode(self, messages: list[Message]) -> tuple[TxColumns, list[DeadLetter]]:
        return decode_transactions(self.in_codec, messages)

    def message_at(self, cols: TxColumns, messages: list[Message]) -> Callable[[int], Message]:
        return cols.messages.__getitem__

    def checks(self) -> list[tuple[str, Stage[TxColumns]]]:
        """Out of bounds (the reasons of :func:`validate_transaction`; the feature state's range
        is a last check the bounds already imply), then reused ids (:meth:`_duplicates`)."""
        return [("ImpossibleValue", self._impossible), (DUPLICATE_ERROR, self._duplicates)]

    def score(self, cols: TxColumns, messages: list[Message], result: BatchResult) -> None:
        """Features (the state remembers the customers for the next flush), the live model and
        the challenger, flags (with the top features when ``explain``)."""
        live = self.slot.live
        if live is None:  # dead letters, and the state is not touched
            result.dead_letters += no_model(cols.messages)
            return
        x = self.features.transform_columns(
            cols.transaction_id, cols.event_time, cols.customer_id, cols.terminal_id, cols.cents
        )
        self.touched(cols.customer_id, cols.messages)
        run = self.run_models(live, x, result)
        processing = now_ms(self.clock)
        top = (
            top_features(run.x_live, live, self.explain, FRAUD_FEATURE_NAMES)
            if self.explain
            else None
        )

        self.emit_scores(result, cols.messages, cols, run, self.flags, processing, top)

    def _impossible(self, cols: TxColumns, now: int) -> tuple[np.ndarray, list[str]]:
        """Rows out of bounds and why (:func:`transaction_checks`, then the state's range)."""
        t = cols.event_time
        checks = [
            *transaction_checks(cols, now, self.bounds),
            (~self.features.accepts_times(t),
             lambda i: f"event_time {int(t[i])} is out of the feature state's range"),
        ]  # fmt: skip
        return first_failures(checks, len(cols))

    def _duplicates(self, cols: TxColumns, now: int) -> tuple[np.ndarray, list[str]]:
        """Reused transaction ids (policy: the first occurrence is scored; a repeat for the
        same customer within the state's horizon with another event time or amount is a
        ``duplicate_transaction_id`` dead letter and never enters the state; an identical
        repeat is an at-least-once replay, scored again and counted once)."""
        conflict = np.flatnonzero(
            self.features.find_conflicts(
                cols.transaction_id, cols.event_time, cols.customer_id, cols.cents
            )
        )
        return conflict, [
            f"{DUPLICATE}: transaction {cols.transaction_id[i]!r} of customer "
            f"{cols.customer_id[i]!r} was already scored with another event time or amount"
            for i in conflict.tolist()
        ]

    def flush_state(self) -> list[OutRecord]:
        """Changelog records for the customers changed since the last flush (the window
        entries added since then, an append-only changelog, see ``FraudFeatures.take_changes``
        and :meth:`AppendOnlyPipeline.flush_state
        <finscore.streams.pipeline.AppendOnlyPipeline.flush_state>`, which also evicts every
        ``evict_interval`` seconds), then, in ``fraud_reports`` fleets, this worker's terminal
        entries since the last flush (keyed ``entries_key``, in their terminals' partitions)."""
        out = super().flush_state()
        if self.entries_topic:
            parts, topic = self.entries_partitions, self.entries_topic
            entries = self.features.take_terminal_entries(lambda t: zlib.crc32(t.encode()) % parts)
            out += [OutRecord(topic, self.entries_key, rows, p) for p, rows in entries]
        return out


class LabelsPipeline:
    """Applies delayed fraud labels to the terminal-risk state; bad labels are dead letters.

    Every worker reads every label (terminal risk is global), so this path is columnar too:
    the vectorised decoder for our own Avro labels, the per-record codec for the rest. Labels
    are checked like transactions (ids, amount, ``tx_time`` and ``label_time`` within the
    bounds, and a label never known before its transaction happened); one out of bounds is a
    dead letter and never reaches the state.
    """

    def __init__(
        self,
        features: FraudFeatures | DeclaredFraudFeatures,
        codec: Codec | None = None,
        *,
        bounds: InputBounds = DEFAULT_BOUNDS,
        clock: Clock = time.time,
    ) -> None:
        self.features = features
        self.codec = codec or Codec("fraud_label")
        self.bounds = bounds
        self.clock = clock

    def process(self, messages: list[Message]) -> BatchResult:
        """Decode → check → apply one batch of labels; ``scored`` counts those applied."""
        result = BatchResult()
        batch = _LABEL_COLUMNAR.decode([m.value if m.value is not None else b"" for m in messages])
        names = ("transaction_id", "customer_id", "terminal_id")
        cols: dict[str, list] = {k: list(batch[k]) if len(batch) else [] for k in names}
        if len(batch):
            assert batch.scales["amount"] == 2, "the label schema's amounts are in cents"
        msgs = [messages[i] for i in batch.ok.tolist()]
        tx_t, label_t, fraud, cents = (
            [np.asarray(batch[k], np.int64)] if len(batch) else []
            for k in ("tx_time", "label_time", "is_fraud", "amount")
        )
        decoded, result.dead_letters = decode_batch(self.codec, [messages[i] for i in batch.rest])
        for m, lab in decoded:
            try:
                amount = to_cents(lab["amount"])
            except (ValueError, ArithmeticError, OverflowError):
                result.dead_letters.append(
                    DeadLetter(m, "ImpossibleValue", f"amount is {lab['amount']}")
                )
                continue
            msgs.append(m)
            for k in names:
                cols[k].append(lab[k])
            for col, v in ((tx_t, lab["tx_time"]), (label_t, lab["label_time"]),
                           (fraud, bool(lab["is_fraud"])), (cents, amount)):  # fmt: skip
                col.append(np.array([int(v)], np.int64))
        if not msgs:
            return result
        tt, lt, ff, cc = (np.concatenate(c) for c in (tx_t, label_t, fraud, cents))
        rows, reasons = first_failures(self._checks(cols, tt, lt, cc), len(msgs))
        if len(rows):
            result.dead_letters += [
                DeadLetter(msgs[i], "ImpossibleValue", why)
                for i, why in zip(rows.tolist(), reasons, strict=True)
            ]
            keep = np.ones(len(msgs), dtype=bool)
            keep[rows] = False
            ok = np.flatnonzero(keep)
            cols = {k: [v[i] for i in ok.tolist()] for k, v in cols.items()}
            tt, lt, ff, cc = tt[ok], lt[ok], ff[ok], cc[ok]
        self.features.apply_label_columns(
            cols["transaction_id"], cols["customer_id"], cols["terminal_id"], tt, lt,
            ff.astype(bool), cc,
        )  # fmt: skip
        result.scored = len(tt)
        return result

    def _checks(
        self, cols: dict[str, list], tx_time: np.ndarray, label_time: np.ndarray, cents: np.ndarray
    ) -> list[Check]:
        b, now = self.bounds, now_ms(self.clock)
        return [
            *b.id_checks("transaction_id", cols["transaction_id"]),
            *b.id_checks("customer_id", cols["customer_id"]),
            *b.id_checks("terminal_id", cols["terminal_id"]),
            *b.amount_checks(cents),
            *b.time_checks("tx_time", tx_time, now),
            *b.time_checks("label_time", label_time, now),
            (label_time < tx_time,
             lambda i: f"label_time {int(label_time[i])} is before tx_time {int(tx_time[i])}"),
            (~self.features.accepts_label_times(tx_time),
             lambda i: f"tx_time {int(tx_time[i])} is out of the feature state's range"),
        ]  # fmt: skip

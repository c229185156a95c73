"""Transactions as columns, and fraud flags encoded from columns.

:func:`decode_transactions` turns a batch of messages into :class:`TxColumns` (one list or
array per field, in input order) plus dead letters for what cannot be decoded.
:class:`FlagEncoder` encodes one flag per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finscore.features.fraud import to_cents
from finscore.schemas.codec import Codec
from finscore.streams.pipeline import DeadLetter, decode_batch
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message


@dataclass
class TxColumns:
    """Decoded transactions, one entry per row (``cents``: the amount in integer cents)."""

    messages: list[Message]
    transaction_id: list[str]
    event_time: np.ndarray
    customer_id: list[str]
    terminal_id: list[str]
    cents: np.ndarray

    def __len__(self) -> int:
        return len(self.messages)

    def take(self, rows: np.ndarray) -> TxColumns:
        """The given rows, in the given order."""
        r = rows.tolist()
        return TxColumns(
            [self.messages[i] for i in r],
            [self.transaction_id[i] for i in r],
            self.event_time[rows],
            [self.customer_id[i] for i in r],
            [self.terminal_id[i] for i in r],
            self.cents[rows],
        )

    def record(self, i: int) -> dict:
        """Row ``i`` as a transaction dict (for messages about one record)."""
        from decimal import Decimal

        return {
            "transaction_id": self.transaction_id[i],
            "event_time": int(self.event_time[i]),
            "customer_id": self.customer_id[i],
            "terminal_id": self.terminal_id[i],
            "amount": Decimal(int(self.cents[i])).scaleb(-2),
        }


def columns_from_records(messages: list[Message], records: Sequence[dict]) -> TxColumns:
    """:class:`TxColumns` from decoded transaction dicts."""
    n = len(records)
    return TxColumns(
        messages,
        [r["transaction_id"] for r in records],
        np.fromiter((int(r["event_time"]) for r in records), np.int64, n),
        [r["customer_id"] for r in records],
        [r["terminal_id"] for r in records],
        np.fromiter((to_cents(r["amount"]) for r in records), np.int64, n),
    )


def decode_transactions(
    codec: Codec, messages: list[Message]
) -> tuple[TxColumns, list[DeadLetter]]:
    """Decode a batch into columns (input order kept); undecodable messages are dead letters."""
    decoded, dead = decode_batch(codec, messages)
    bad_amount = []
    good_msgs, good_recs = [], []
    for m, rec in decoded:
        amount = rec["amount"]
        try:
            to_cents(amount)
        except (ValueError, ArithmeticError, OverflowError):
            bad_amount.append(DeadLetter(m, "ImpossibleValue", f"amount is {amount}"))
            continue
        good_msgs.append(m)
        good_recs.append(rec)
    return columns_from_records(good_msgs, good_recs), dead + bad_amount


class FlagEncoder:
    """Encodes fraud flags from columns in the output encoding (``avro`` or ``json``)."""

    def __init__(self, codec: Codec, encoding: str = "avro") -> None:
        self.codec = codec
        self.encoding = encoding

    def encode(
        self,
        cols: TxColumns,
        scores: np.ndarray,
        scorer: Scorer,
        threshold: float,
        processing_ms: int,
        top: list[list[dict]] | None = None,
    ) -> list[bytes]:
        """One encoded flag per row: score, decision against ``threshold``, the model, times,
        the input's location, and the top features when given."""
        s = np.asarray(scores, dtype=np.float64).tolist()
        name, version = scorer.name, scorer.version
        encode, enc = self.codec.encode, self.encoding
        out = []
        for i, m in enumerate(cols.messages):
            out.append(
                encode(
                    {
                        "transaction_id": cols.transaction_id[i],
                        "customer_id": cols.customer_id[i],
                        "terminal_id": cols.terminal_id[i],
                        "score": s[i],
                        "flagged": s[i] >= threshold,
                        "threshold": threshold,
                        "model_name": name,
                        "model_version": version,
                        "event_time": int(cols.event_time[i]),
                        "processing_time": processing_ms,
                        "source_topic": m.topic,
                        "source_partition": m.partition,
                        "source_offset": m.offset,
                        "top_features": top[i] if top is not None else [],
                    },
                    enc,
                )
            )
        return out

"""Columnar transactions: what simulators produce, loaders read and training featurises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TransactionFrame:
    """Transactions as numpy columns, in event-time order.

    ``event_time`` is epoch milliseconds; ids are integers (records render them as strings);
    ``is_fraud``/``scenario`` are ground truth and never model inputs.
    """

    transaction_id: np.ndarray
    event_time: np.ndarray
    customer_id: np.ndarray
    terminal_id: np.ndarray
    amount: np.ndarray
    is_fraud: np.ndarray
    scenario: np.ndarray

    def __len__(self) -> int:
        return len(self.transaction_id)

    def select(self, mask_or_index: np.ndarray) -> TransactionFrame:
        """The rows picked by a boolean mask or an index array."""
        return TransactionFrame(
            **{k: getattr(self, k)[mask_or_index] for k in self.__dataclass_fields__}
        )

    def between(self, start_ms: int, end_ms: int) -> np.ndarray:
        """Boolean mask of rows with ``start_ms <= event_time < end_ms``."""
        return (self.event_time >= start_ms) & (self.event_time < end_ms)

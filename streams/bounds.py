"""Explicit bounds on what a consumed record may hold, checked on whole columns at once.

Every consumed record is untrusted. A record outside these bounds is a dead letter with a
reason, never state: one record must not move a store's time range, evict what other records
need, or make a later record fail. The bounds are plain values (the worker builds them from
settings at the edge, see ``finscore.settings``); the defaults:

========================  =====================  ==============================================
bound                      default                why
========================  =====================  ==============================================
``max_future_ms``          1 hour                 no event happens after the wall clock (skew)
``min_event_time_ms``      2000-01-01T00:00Z      nothing older can be a payment or a tick we
                                                  score; also the origin of the feature stores,
                                                  which hold ~69 years from it
``max_event_age_ms``       off (None)             optional: no older than the wall clock minus
                                                  this. Off by default: the simulator and
                                                  replays of history (2018) are supported uses
``min_amount_cents``       0                      zero-amount authorisations exist; negative
                                                  amounts do not
``max_amount_cents``       100,000,000 (1e6)      one payment of more than 1,000,000.00
``max_id_length``          128 characters         ids are short; a megabyte id is an attack
``max_sequence_gap``       100,000                a tick's sequence at most this far above its
                                                  instrument's last one (or, for an instrument
                                                  not seen yet, the batch's lowest): one forged
                                                  far-ahead sequence would otherwise make every
                                                  later tick of the instrument look like a replay
========================  =====================  ==============================================

Relative to the stream (not the wall clock), no record is refused: a record far ahead of the
stream may be the first after a genuine gap, and refusing every record after a gap would stop
the stream. Instead what the stream's time *does* (eviction) follows a watermark that no single
record moves (see ``FraudFeatures.watermark_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_MIN_EVENT_TIME_MS",
    "Check",
    "InputBounds",
    "first_failures",
    "lengths",
]

DEFAULT_MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


@dataclass(frozen=True)
class InputBounds:
    """What a consumed record may hold (times in epoch milliseconds); see the module table."""

    max_future_ms: int = 3_600_000
    min_event_time_ms: int = DEFAULT_MIN_EVENT_TIME_MS
    max_event_age_ms: int | None = None
    min_amount_cents: int = 0
    max_amount_cents: int = 100_000_000
    max_id_length: int = 128
    max_sequence_gap: int = 100_000

    def __post_init__(self) -> None:
        if self.max_future_ms < 0 or self.max_id_length < 1 or self.max_sequence_gap < 1:
            raise ValueError("max_future_ms must be >= 0, max_id_length and max_sequence_gap >= 1")
        if self.min_amount_cents > self.max_amount_cents:
            raise ValueError("min_amount_cents is above max_amount_cents")
        if self.max_event_age_ms is not None and self.max_event_age_ms <= 0:
            raise ValueError("max_event_age_ms must be positive (or None: off)")

    def earliest_ms(self, now_ms: int) -> int:
        """The earliest event time accepted at wall-clock time ``now_ms``."""
        if self.max_event_age_ms is None:
            return self.min_event_time_ms
        return max(self.min_event_time_ms, now_ms - self.max_event_age_ms)

    def latest_ms(self, now_ms: int) -> int:
        """The latest event time accepted at wall-clock time ``now_ms``."""
        return now_ms + self.max_future_ms

    def time_checks(self, name: str, t: np.ndarray, now_ms: int, unit: int = 1) -> list[Check]:
        """Checks that the times ``t`` (in ms, or µs with ``unit=1000``) are within bounds."""
        lo, hi = self.earliest_ms(now_ms), self.latest_ms(now_ms)
        return [
            (t < lo * unit, lambda i: f"{name} {int(t[i])} is before the earliest accepted "
                                      f"time {lo * unit}"),
            (t > hi * unit, lambda i: f"{name} {int(t[i])} is more than "
                                      f"{self.max_future_ms // 1000} s in the future"),
        ]  # fmt: skip

    def amount_checks(self, cents: np.ndarray) -> list[Check]:
        """Checks that amounts (integer cents) are within bounds."""
        lo, hi = self.min_amount_cents, self.max_amount_cents
        return [
            (cents < min(lo, 0), lambda i: f"negative amount {int(cents[i]) / 100:.2f}"),
            (cents < lo, lambda i: f"amount {int(cents[i]) / 100:.2f} is below {lo / 100:.2f}"),
            (cents > hi, lambda i: f"amount {int(cents[i]) / 100:.2f} is above {hi / 100:.2f}"),
        ]

    def id_checks(self, name: str, ids: Sequence[str]) -> list[Check]:
        """Checks that the ids are non-empty and at most ``max_id_length`` characters."""
        n = lengths(ids)
        top = self.max_id_length
        return [
            (n == 0, lambda i: f"empty {name}"),
            (n > top, lambda i: f"{name} of {int(n[i])} characters (at most {top})"),
        ]


DEFAULT_BOUNDS = InputBounds()

# A check: rows that fail it, and the reason of a failing row (called for failing rows only).
Check = tuple[np.ndarray, Callable[[int], str]]


def lengths(values: Sequence[str]) -> np.ndarray:
    """The length of each string (int64)."""
    return np.fromiter(map(len, values), np.int64, len(values))


def first_failures(checks: Sequence[Check], n: int) -> tuple[np.ndarray, list[str]]:
    """(rows failing any check, the reason of the first check each fails): one array
    expression per check, and Python only for the failing rows."""
    bad = np.zeros(n, dtype=bool)
    for mask, _ in checks:
        bad |= mask
    rows = np.flatnonzero(bad)
    reasons = []
    for i in rows.tolist():
        for mask, why in checks:
            if mask[i]:
                reasons.append(why(i))
                break
    return rows, reasons

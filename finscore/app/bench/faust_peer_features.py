"""The naive peer's feature code: the same fraud features, one event at a time.

A hand-rolled Faust scorer computes features per event on dicts of Python lists; this is that
code (it was finscore's own before the columnar state). It defines the same features as
:mod:`finscore.features.fraud` (``tests/streams/test_faust_naive_features.py`` checks they
agree on the same events), so `finscore bench` compares execution models, not feature sets.
Not used by the workers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from operator import mul
from typing import Any

import numpy as np

from finscore.features.fraud import DAY_MS, N_FEATURES, FraudFeatureConfig


class _Spending:
    """One customer's recent transactions: parallel lists sorted by time (ids for idempotence)."""

    __slots__ = ("times", "amounts", "idlist", "ids")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.amounts: list[float] = []
        self.idlist: list[str] = []
        self.ids: set[str] = set()

    def add(self, t: int, amount: float, tx_id: str) -> None:
        if tx_id in self.ids:
            return
        self.ids.add(tx_id)
        if not self.times or t >= self.times[-1]:
            self.times.append(t)
            self.amounts.append(amount)
            self.idlist.append(tx_id)
        else:  # out of order: keep sorted
            i = bisect_right(self.times, t)
            self.times.insert(i, t)
            self.amounts.insert(i, amount)
            self.idlist.insert(i, tx_id)

    def evict(self, before: int) -> None:
        k = bisect_right(self.times, before)
        if k:
            self.ids.difference_update(self.idlist[:k])
            del self.times[:k], self.amounts[:k], self.idlist[:k]


class _Outcomes:
    """Labelled outcomes of one terminal (or card): sorted by transaction time, with each
    one's habit flag (terminals) and amount (cards)."""

    __slots__ = ("tx_times", "label_times", "frauds", "habits", "amounts", "idlist", "ids")

    def __init__(self) -> None:
        self.tx_times: list[int] = []
        self.label_times: list[int] = []
        self.frauds: list[int] = []
        self.habits: list[int] = []
        self.amounts: list[float] = []
        self.idlist: list[str] = []
        self.ids: set[str] = set()

    def add(
        self, tx_time: int, label_time: int, fraud: int, tx_id: str, habit: int, amount: float
    ) -> None:
        if tx_id in self.ids:
            return
        self.ids.add(tx_id)
        i = len(self.tx_times)
        if i and tx_time < self.tx_times[-1]:
            i = bisect_right(self.tx_times, tx_time)
        self.tx_times.insert(i, tx_time)
        self.label_times.insert(i, label_time)
        self.frauds.insert(i, fraud)
        self.habits.insert(i, habit)
        self.amounts.insert(i, amount)
        self.idlist.insert(i, tx_id)

    def mean_amount(self, after: int, upto: int) -> float:
        """Mean amount over tx_time in (after, upto] (0 when there is none)."""
        lo = bisect_right(self.tx_times, after)
        hi = bisect_right(self.tx_times, upto)
        return sum(self.amounts[lo:hi]) / (hi - lo) if hi > lo else 0.0

    def windows(self, t: int, delay: int, spans: Sequence[int]) -> list[tuple[int, int, int]]:
        """(count, frauds, habit frauds) over tx_time in (t − delay − span, t − delay], labels
        known at t."""
        times = self.tx_times
        hi = bisect_right(times, t - delay)
        los = [bisect_right(times, t - delay - span, 0, hi) for span in spans]
        lo_min = min(los)
        fr, hb = self.frauds, self.habits
        if lo_min == hi or max(self.label_times[lo_min:hi]) <= t:  # every label known (usual)
            return [(hi - lo, sum(fr[lo:hi]), sum(hb[lo:hi])) for lo in los]
        out = []
        lt = self.label_times
        for lo in los:
            known = [i for i in range(lo, hi) if lt[i] <= t]
            out.append((len(known), sum(fr[i] for i in known), sum(hb[i] for i in known)))
        return out

    def habit_streak(self, t: int, delay: int, span: int) -> int:
        """Known outcomes over tx_time in (t − delay − span, t − delay] later than the latest
        known one that is not a habit fraud."""
        times, lt, hb = self.tx_times, self.label_times, self.habits
        hi = bisect_right(times, t - delay)
        lo = bisect_right(times, t - delay - span, 0, hi)
        last = t - delay - span
        for i in range(hi - 1, lo - 1, -1):  # newest first: the latest known non-habit one
            if lt[i] <= t and not hb[i]:
                last = times[i]
                break
        return sum(1 for i in range(bisect_right(times, last, lo, hi), hi) if lt[i] <= t)

    def evict(self, before: int) -> None:
        k = bisect_right(self.tx_times, before)
        if k:
            self.ids.difference_update(self.idlist[:k])
            del self.tx_times[:k], self.label_times[:k], self.frauds[:k], self.idlist[:k]
            del self.habits[:k], self.amounts[:k]


def _amount(v: Any) -> float:
    return float(v) if not isinstance(v, float) else v


class PerEventFraudFeatures:
    """The fraud features one transaction at a time, on dicts of lists (see the module doc)."""

    def __init__(self, cfg: FraudFeatureConfig | None = None) -> None:
        cfg = cfg or FraudFeatureConfig()
        self.cfg = cfg
        self.spans = [w * DAY_MS for w in cfg.windows_days]
        self._customers: dict[str, _Spending] = {}
        self._terminals: dict[str, _Outcomes] = {}
        self._cards: dict[str, _Outcomes] = {}
        self.latest_ms = 0

    # -- transactions -----------------------------------------------------------------------
    def transform(self, txs: Iterable[dict]) -> np.ndarray:
        """Features of each transaction, in order; each is added to its customer's state first.

        Records need ``transaction_id``, ``event_time`` (ms), ``customer_id``, ``terminal_id``
        and ``amount``. Returns float32 ``[N, N_FEATURES]``.
        """
        rows: list[list[float]] = []
        delay = self.cfg.label_delay_ms
        spans = self.spans
        long_span = spans[-1]
        for tx in txs:
            t = int(tx["event_time"])
            amount = _amount(tx["amount"])
            cid = tx["customer_id"]
            spend = self._customers.get(cid)
            if spend is None:
                spend = self._customers[cid] = _Spending()
            spend.add(t, amount, tx["transaction_id"])
            if t > self.latest_ms:
                self.latest_ms = t
            times, amounts = spend.times, spend.amounts
            hi = bisect_right(times, t)
            row = [amount, 0.0, 0.0]
            day, ms_of_day = divmod(t, DAY_MS)
            row[1] = 1.0 if (day + 3) % 7 >= 5 else 0.0  # 1970-01-01 was a Thursday
            row[2] = 1.0 if ms_of_day < 7 * 3_600_000 else 0.0  # handbook: hour <= 6
            mean_long = std_long = 0.0
            for span in spans:
                lo = bisect_right(times, t - span, 0, hi)
                n = hi - lo
                window = amounts[lo:hi]
                mean = sum(window) / n if n else 0.0
                row += [float(n), mean]
                if span == long_span:
                    mean_long = mean
                    if n > 1:
                        std_long = math.sqrt(
                            max(sum(map(mul, window, window)) / n - mean * mean, 0.0)
                        )
            term = self._terminals.get(tx["terminal_id"])
            habit_risk = [0.0] * len(spans)
            streak = 0.0
            if term is None:
                row += [0.0] * (2 * len(spans))
            else:
                for k, (n, f, h) in enumerate(term.windows(t, delay, spans)):
                    row += [float(n), f / n if n else 0.0]
                    habit_risk[k] = h / n if n else 0.0
                streak = math.log1p(term.habit_streak(t, delay, long_span))
            row.append(amount / mean_long if mean_long > 0 else 1.0)
            row.append((amount - mean_long) / std_long if std_long > 1e-9 else 0.0)
            card = self._cards.get(cid)
            if card is None:
                row += [0.0, 0.0]
            else:
                n, f, _ = card.windows(t, delay, [long_span])[0]
                row += [f / n if n else 0.0, float(f)]
            rows.append(row + habit_risk + [streak])
        if not rows:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    # -- labels -----------------------------------------------------------------------------
    def apply_labels(self, labels: Iterable[dict]) -> None:
        """Add delayed outcomes (``fraud_label`` records) to terminal and card state."""
        for lab in labels:
            tx_time = int(lab["tx_time"])
            label_time = int(lab["label_time"])
            fraud = 1 if lab["is_fraud"] else 0
            amount = _amount(lab["amount"])
            tid, cid, xid = lab["terminal_id"], lab["customer_id"], lab["transaction_id"]
            card = self._cards.get(cid)
            if card is None:
                card = self._cards[cid] = _Outcomes()
            card.add(tx_time, label_time, fraud, xid, 0, amount)
            habit = card.mean_amount(tx_time - self.spans[-1], tx_time) * self.cfg.habit_ratio
            term = self._terminals.get(tid)
            if term is None:
                term = self._terminals[tid] = _Outcomes()
            term.add(tx_time, label_time, fraud, xid, int(bool(fraud) and amount < habit), amount)

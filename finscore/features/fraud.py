"""THE definition of fraud features, shared by training and the streaming workers.

Online and offline features are the same code: the worker calls :meth:`FraudFeatures.transform`
on each batch and :meth:`FraudFeatures.apply_labels` on the delayed labels it reads; training
calls :func:`featurize_frame`, which replays the same two methods over the history. So offline
and online features are identical by construction (and tested on the same events).

Features (the handbook's, plus three extras marked *):
- ``TX_AMOUNT``, ``TX_DURING_WEEKEND``, ``TX_DURING_NIGHT`` (hour ≤ 6, UTC);
- customer spending windows: ``CUSTOMER_ID_NB_TX_{1,7,30}DAY_WINDOW`` and
  ``CUSTOMER_ID_AVG_AMOUNT_{1,7,30}DAY_WINDOW`` over the customer's transactions in
  ``(t − w, t]``, the current one included;
- terminal risk windows from *delayed* labels: ``TERMINAL_ID_NB_TX_{1,7,30}DAY_WINDOW`` and
  ``TERMINAL_ID_RISK_{1,7,30}DAY_WINDOW`` (fraud share) over the terminal's transactions in
  ``(t − delay − w, t − delay]`` whose label was known at ``t``;
- * ``CUSTOMER_AMOUNT_RATIO_30DAY``: amount / the customer's 30-day mean (compromised cards
  spend 5× their habit); * ``CUSTOMER_AMOUNT_ZSCORE_30DAY``: the same against the spread of the
  customer's 30-day amounts; * ``CUSTOMER_ID_RISK_30DAY_WINDOW`` and
  * ``CUSTOMER_ID_NB_FRAUD_30DAY_WINDOW``: the card's own delayed fraud history, same rules as
  the terminal windows.

Labels are global (every worker reads them all); customer windows are keyed like the
``transactions`` topic. Updates are idempotent per ``transaction_id`` (at-least-once replays
never count a transaction twice). Memory is bounded by :meth:`evict`.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import mul
from typing import Any

import numpy as np

DAY_MS = 86_400_000

FRAUD_FEATURE_NAMES: tuple[str, ...] = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
    "CUSTOMER_AMOUNT_RATIO_30DAY",
    "CUSTOMER_AMOUNT_ZSCORE_30DAY",
    "CUSTOMER_ID_RISK_30DAY_WINDOW",
    "CUSTOMER_ID_NB_FRAUD_30DAY_WINDOW",
)
HANDBOOK_FEATURES = FRAUD_FEATURE_NAMES[:15]


@dataclass(frozen=True)
class FraudFeatureConfig:
    """Label delay and window lengths (days)."""

    label_delay_ms: int = 7 * DAY_MS
    windows_days: tuple[int, int, int] = (1, 7, 30)

    @property
    def horizon_ms(self) -> int:
        """How far back any feature looks: delay + the longest window."""
        return self.label_delay_ms + max(self.windows_days) * DAY_MS


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
    """Labelled outcomes of one terminal (or card): sorted by transaction time."""

    __slots__ = ("tx_times", "label_times", "frauds", "idlist", "ids")

    def __init__(self) -> None:
        self.tx_times: list[int] = []
        self.label_times: list[int] = []
        self.frauds: list[int] = []
        self.idlist: list[str] = []
        self.ids: set[str] = set()

    def add(self, tx_time: int, label_time: int, fraud: int, tx_id: str) -> None:
        if tx_id in self.ids:
            return
        self.ids.add(tx_id)
        if not self.tx_times or tx_time >= self.tx_times[-1]:
            self.tx_times.append(tx_time)
            self.label_times.append(label_time)
            self.frauds.append(fraud)
            self.idlist.append(tx_id)
        else:
            i = bisect_right(self.tx_times, tx_time)
            self.tx_times.insert(i, tx_time)
            self.label_times.insert(i, label_time)
            self.frauds.insert(i, fraud)
            self.idlist.insert(i, tx_id)

    def windows(self, t: int, delay: int, spans: Sequence[int]) -> list[tuple[int, int]]:
        """(count, frauds) over tx_time in (t − delay − span, t − delay], labels known at t."""
        times = self.tx_times
        hi = bisect_right(times, t - delay)
        los = [bisect_right(times, t - delay - span, 0, hi) for span in spans]
        lo_min = min(los)
        if lo_min == hi or max(self.label_times[lo_min:hi]) <= t:  # every label known (usual)
            fr = self.frauds
            return [(hi - lo, sum(fr[lo:hi])) for lo in los]
        out = []
        for span in spans:
            lo = bisect_right(times, t - delay - span, 0, hi)
            n = f = 0
            lt, fr = self.label_times, self.frauds
            for i in range(lo, hi):
                if lt[i] <= t:
                    n += 1
                    f += fr[i]
            out.append((n, f))
        return out

    def evict(self, before: int) -> None:
        k = bisect_right(self.tx_times, before)
        if k:
            self.ids.difference_update(self.idlist[:k])
            del self.tx_times[:k], self.label_times[:k], self.frauds[:k], self.idlist[:k]


def _amount(v: Any) -> float:
    return float(v) if not isinstance(v, float) else v


class FraudFeatures:
    """Online fraud-feature state: customer windows, terminal and card outcome windows."""

    def __init__(self, cfg: FraudFeatureConfig = FraudFeatureConfig()) -> None:
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
        and ``amount``. Returns float32 ``[N, len(FRAUD_FEATURE_NAMES)]``.
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
            if term is None:
                row += [0.0] * (2 * len(spans))
            else:
                for n, f in term.windows(t, delay, spans):
                    row += [float(n), f / n if n else 0.0]
            row.append(amount / mean_long if mean_long > 0 else 1.0)
            row.append((amount - mean_long) / std_long if std_long > 1e-9 else 0.0)
            card = self._cards.get(cid)
            if card is None:
                row += [0.0, 0.0]
            else:
                n, f = card.windows(t, delay, [long_span])[0]
                row += [f / n if n else 0.0, float(f)]
            rows.append(row)
        if not rows:
            return np.zeros((0, len(FRAUD_FEATURE_NAMES)), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    # -- labels -----------------------------------------------------------------------------
    def apply_labels(self, labels: Iterable[dict]) -> None:
        """Add delayed outcomes (``fraud_label`` records) to terminal and card state."""
        for lab in labels:
            tx_time = int(lab["tx_time"])
            label_time = int(lab["label_time"])
            fraud = 1 if lab["is_fraud"] else 0
            tid, cid, xid = lab["terminal_id"], lab["customer_id"], lab["transaction_id"]
            term = self._terminals.get(tid)
            if term is None:
                term = self._terminals[tid] = _Outcomes()
            term.add(tx_time, label_time, fraud, xid)
            card = self._cards.get(cid)
            if card is None:
                card = self._cards[cid] = _Outcomes()
            card.add(tx_time, label_time, fraud, xid)

    # -- memory and changelog ----------------------------------------------------------------
    def evict(self, now_ms: int | None = None) -> None:
        """Forget what no feature can see any more (older than delay + longest window)."""
        now = self.latest_ms if now_ms is None else now_ms
        keep_customers = now - self.spans[-1] - DAY_MS
        for cid, s in list(self._customers.items()):
            s.evict(keep_customers)
            if not s.times:
                del self._customers[cid]
        keep_outcomes = now - self.cfg.horizon_ms - DAY_MS
        for store in (self._terminals, self._cards):
            for key, o in list(store.items()):
                o.evict(keep_outcomes)
                if not o.tx_times:
                    del store[key]

    def snapshot_customer(self, customer_id: str) -> bytes:
        """The customer's window state as compact bytes (for a compacted changelog):
        count, int64 times, float64 amounts, then the ids joined by 0x1f."""
        s = self._customers.get(customer_id)
        if s is None:
            return struct.pack("<I", 0)
        n = len(s.times)
        return (
            struct.pack("<I", n)
            + array("q", s.times).tobytes()
            + array("d", s.amounts).tobytes()
            + "\x1f".join(s.idlist).encode()
        )

    def restore_customer(self, customer_id: str, snap: bytes) -> None:
        """Replace the customer's window state with a snapshot from :meth:`snapshot_customer`."""
        (n,) = struct.unpack_from("<I", snap)
        times, amounts = array("q"), array("d")
        times.frombytes(snap[4 : 4 + 8 * n])
        amounts.frombytes(snap[4 + 8 * n : 4 + 16 * n])
        s = _Spending()
        s.times, s.amounts = times.tolist(), amounts.tolist()
        s.idlist = snap[4 + 16 * n :].decode().split("\x1f") if n else []
        s.ids = set(s.idlist)
        self._customers[customer_id] = s
        if s.times and s.times[-1] > self.latest_ms:
            self.latest_ms = s.times[-1]

    def customers(self) -> list[str]:
        return list(self._customers)

    def terminals(self) -> list[str]:
        return list(self._terminals)


def featurize_frame(frame, cfg: FraudFeatureConfig = FraudFeatureConfig()) -> np.ndarray:  # noqa: ANN001
    """Features of every row of a TransactionFrame, by replaying the online code over history.

    Labels (every transaction's outcome, known ``label_delay`` later) are applied day by day
    before the transactions of that day; since a label only counts once its label time has
    passed, the result equals what a worker computes on the live stream.
    """
    n = len(frame)
    out = np.zeros((n, len(FRAUD_FEATURE_NAMES)), dtype=np.float32)
    if n == 0:
        return out
    ff = FraudFeatures(cfg)
    tid = frame.transaction_id.astype(str)
    cust = frame.customer_id.astype(str)
    term = frame.terminal_id.astype(str)
    t = frame.event_time
    amount = frame.amount.astype(float)
    fraud = frame.is_fraud
    label_t = t + cfg.label_delay_ms
    day_edges = np.arange(t[0] - t[0] % DAY_MS, t[-1] + DAY_MS + 1, DAY_MS)
    j = 0
    for start, end in zip(day_edges[:-1], day_edges[1:], strict=False):
        lo, hi = np.searchsorted(t, [start, end])
        jj = int(np.searchsorted(label_t, end))
        if jj > j:
            ff.apply_labels(
                {"tx_time": int(t[k]), "label_time": int(label_t[k]), "is_fraud": bool(fraud[k]),
                 "terminal_id": term[k], "customer_id": cust[k], "transaction_id": tid[k]}
                for k in range(j, jj)
            )  # fmt: skip
            j = jj
        if hi > lo:
            out[lo:hi] = ff.transform(
                {"event_time": int(t[k]), "amount": float(amount[k]), "customer_id": cust[k],
                 "terminal_id": term[k], "transaction_id": tid[k]}
                for k in range(lo, hi)
            )  # fmt: skip
        ff.evict(int(end))
    return out


__all__ = [
    "FRAUD_FEATURE_NAMES",
    "HANDBOOK_FEATURES",
    "FraudFeatureConfig",
    "FraudFeatures",
    "featurize_frame",
]

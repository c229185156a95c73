"""Card transactions following the fraud-detection handbook's published simulator design.

Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection — Practical
Handbook*, chapter "Simulated dataset": customers and terminals on a 100×100 grid; a customer
uses the terminals within radius ``radius``; per-customer spending profile (mean amount
U(5, 100), std = mean / 2, U(0, 4) transactions a day); transaction times normal around noon.
Fraud scenarios: (1) every amount above 220 is fraud; (2) every day 2 terminals are
compromised and all their transactions in the next 28 days are fraud; (3) every day 3
customers are compromised and a third of their transactions in the next 14 days have 5× their
amount and are fraud. ``drift_day`` adds a pattern the handbook does not have, (4) card
testing: from that day on, every day 30 customers see bursts of five small night-time
payments (1–5) at random terminals — what a model trained before the drift has never seen.

Every transaction gets a *label* (its settled outcome, fraud or not) ``label_delay_days``
later; :meth:`TransactionSimulator.events` merges transactions and labels in time order. With
``label_contract="fraud_reports"`` only the frauds are labelled, as card issuers are fed (fraud
reports and chargebacks; an unreported transaction is genuine).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np

from finscore.sim.frame import TransactionFrame

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TxSimConfig:
    """Simulator parameters; the same config and seed always give the same events."""

    n_customers: int = 5000
    n_terminals: int = 10000
    radius: float = 5.0
    start: str = "2018-04-01"
    days: int = 183
    seed: int = 0
    label_delay_days: int = 7
    drift_day: int | None = None
    compromised_terminals_per_day: int = 2
    compromised_customers_per_day: int = 3
    card_testing_customers_per_day: int = 30
    # "all_outcomes": a label per transaction; "fraud_reports": labels of frauds only.
    label_contract: str = "all_outcomes"

    @property
    def start_ms(self) -> int:
        return int(datetime.fromisoformat(self.start).replace(tzinfo=UTC).timestamp() * 1000)


def _available_terminals(cust_xy: np.ndarray, term_xy: np.ndarray, r: float):  # noqa: ANN202
    """CSR lists of the terminals within ``r`` of each customer (grid-bucketed, vectorised)."""
    cell = np.floor(term_xy / r).astype(np.int64)
    order = np.lexsort((cell[:, 1], cell[:, 0]))
    buckets: dict[tuple[int, int], np.ndarray] = {}
    keys = cell[order]
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        buckets[(int(keys[s, 0]), int(keys[s, 1]))] = order[s:e]
    offsets = [0]
    flat: list[np.ndarray] = []
    for x, y in cust_xy:
        cx, cy = int(np.floor(x / r)), int(np.floor(y / r))
        cands = [buckets.get((cx + dx, cy + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        c = (
            np.concatenate([b for b in cands if b is not None])
            if any(b is not None for b in cands)
            else np.zeros(0, dtype=np.int64)
        )
        c = np.sort(c[np.hypot(term_xy[c, 0] - x, term_xy[c, 1] - y) < r])
        flat.append(c)
        offsets.append(offsets[-1] + len(c))
    return np.concatenate(flat), np.asarray(offsets)


def simulate_frame(cfg: TxSimConfig = TxSimConfig()) -> TransactionFrame:
    """All transactions of the simulation as columns, in time order (vectorised)."""
    rng = np.random.default_rng(cfg.seed)
    nc, nt = cfg.n_customers, cfg.n_terminals
    cust_xy = rng.uniform(0, 100, size=(nc, 2))
    mean_amount = rng.uniform(5, 100, size=nc)
    std_amount = mean_amount / 2
    mean_nb = rng.uniform(0, 4, size=nc)
    term_xy = rng.uniform(0, 100, size=(nt, 2))
    flat, offsets = _available_terminals(cust_xy, term_xy, cfg.radius)
    n_avail = np.diff(offsets)

    counts = rng.poisson(np.tile(mean_nb, cfg.days)).reshape(cfg.days, nc)
    counts[:, n_avail == 0] = 0
    day = np.repeat(np.repeat(np.arange(cfg.days), nc), counts.ravel())
    cust = np.repeat(np.tile(np.arange(nc), cfg.days), counts.ravel())
    n = len(cust)
    secs = rng.normal(86400 / 2, 20000, size=n)
    keep = (secs > 0) & (secs < 86400)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean_amount[cust[neg]])
    pick = offsets[cust] + np.floor(rng.random(n) * np.maximum(n_avail[cust], 1)).astype(np.int64)
    term = flat[np.minimum(pick, len(flat) - 1)]
    day, cust, secs, amount, term = day[keep], cust[keep], secs[keep], amount[keep], term[keep]
    amount = np.round(amount, 2)

    testing = np.zeros(len(day), dtype=bool)
    if cfg.drift_day is not None:
        day, cust, secs, amount, term, testing = _add_card_testing(
            rng, cfg, day, cust, secs, amount, term
        )
    order = np.lexsort((secs, day))
    day, cust, secs, amount, term = day[order], cust[order], secs[order], amount[order], term[order]
    testing = testing[order]
    fraud = np.zeros(len(day), dtype=np.int8)
    scenario = np.zeros(len(day), dtype=np.int8)

    # Scenario 1: large amounts.
    big = amount > 220
    fraud[big], scenario[big] = 1, 1
    # Scenario 2: compromised terminals, all their transactions for 28 days.
    terminals = _KeyDays(term, day)
    for d in range(cfg.days):
        for t in rng.choice(nt, size=cfg.compromised_terminals_per_day, replace=False):
            rows = terminals.rows(t, d, 28)
            fraud[rows], scenario[rows] = 1, 2
    # Scenario 3: compromised cards, a third of their transactions for 14 days, amount x5.
    cards = _KeyDays(cust, day)
    for d in range(cfg.days):
        for c in rng.choice(nc, size=cfg.compromised_customers_per_day, replace=False):
            rows = cards.rows(c, d, 14)
            rows = rows[rng.random(len(rows)) < 1 / 3]
            rows = rows[~testing[rows]]  # card-testing rows keep their small amounts
            amount[rows] = np.round(amount[rows] * 5, 2)
            fraud[rows], scenario[rows] = 1, 3
    fraud[testing], scenario[testing] = 1, 4

    event_time = cfg.start_ms + day.astype(np.int64) * DAY_MS + (secs * 1000).astype(np.int64)
    return TransactionFrame(
        transaction_id=np.arange(len(day), dtype=np.int64),
        event_time=event_time,
        customer_id=cust.astype(np.int64),
        terminal_id=term.astype(np.int64),
        amount=amount,
        is_fraud=fraud,
        scenario=scenario,
    )


class _KeyDays:
    """Rows of one key (terminal or card) within a run of days, found by binary search."""

    def __init__(self, keys: np.ndarray, day: np.ndarray) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]
        self.day = day

    def rows(self, key: int, first_day: int, days: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.sorted, [key, key + 1])
        rows = self.order[lo:hi]
        return rows[(self.day[rows] >= first_day) & (self.day[rows] < first_day + days)]


def _add_card_testing(rng, cfg: TxSimConfig, day, cust, secs, amount, term):  # noqa: ANN001, ANN202
    """Append scenario 4 rows (night bursts of small payments); returns columns + their mask."""
    assert cfg.drift_day is not None
    extra_day, extra_cust, extra_secs, extra_amt, extra_term = [], [], [], [], []
    for d in range(cfg.drift_day, cfg.days):
        victims = rng.choice(
            cfg.n_customers, size=cfg.card_testing_customers_per_day, replace=False
        )
        for c in victims:
            start = rng.uniform(0, 5 * 3600)
            extra_day += [d] * 5
            extra_cust += [c] * 5
            extra_secs += list(start + np.sort(rng.uniform(0, 1800, size=5)))
            extra_amt += list(np.round(rng.uniform(1, 5, size=5), 2))
            extra_term += list(rng.integers(0, cfg.n_terminals, size=5))
    mask = np.r_[np.zeros(len(day), dtype=bool), np.ones(len(extra_day), dtype=bool)]
    return (
        np.r_[day, np.asarray(extra_day, dtype=day.dtype)],
        np.r_[cust, np.asarray(extra_cust, dtype=cust.dtype)],
        np.r_[secs, np.asarray(extra_secs)],
        np.r_[amount, np.asarray(extra_amt)],
        np.r_[term, np.asarray(extra_term, dtype=term.dtype)],
        mask,
    )


def transaction_record(frame: TransactionFrame, i: int) -> dict:
    """Row ``i`` as a ``transaction`` record."""
    return {
        "transaction_id": str(int(frame.transaction_id[i])),
        "event_time": int(frame.event_time[i]),
        "customer_id": str(int(frame.customer_id[i])),
        "terminal_id": str(int(frame.terminal_id[i])),
        "amount": Decimal(f"{frame.amount[i]:.2f}"),
        "currency": "EUR",
    }


def label_record(frame: TransactionFrame, i: int, delay_ms: int) -> dict:
    """Row ``i``'s settled outcome as a ``fraud_label`` record, known ``delay_ms`` later."""
    fraud = bool(frame.is_fraud[i])
    return {
        "transaction_id": str(int(frame.transaction_id[i])),
        "customer_id": str(int(frame.customer_id[i])),
        "terminal_id": str(int(frame.terminal_id[i])),
        "tx_time": int(frame.event_time[i]),
        "label_time": int(frame.event_time[i]) + delay_ms,
        "is_fraud": fraud,
        "amount": Decimal(f"{frame.amount[i]:.2f}"),
        "scenario": int(frame.scenario[i]) if fraud else None,
    }


def merged_events(
    frame: TransactionFrame, delay_ms: int, *, reports_only: bool = False
) -> Iterator[tuple[str, dict]]:
    """Transactions and their labels, in time order (a label at ``event_time + delay``);
    ``reports_only``: labels of frauds only (the ``fraud_reports`` contract)."""
    n = len(frame)
    label_times = frame.event_time + delay_ms
    labelled = frame.is_fraud != 0 if reports_only else np.ones(n, dtype=bool)
    j = 0
    for i in range(n):
        t = frame.event_time[i]
        while j < n and label_times[j] <= t:
            if labelled[j]:
                yield "label", label_record(frame, j, delay_ms)
            j += 1
        yield "transaction", transaction_record(frame, i)
    while j < n:
        if labelled[j]:
            yield "label", label_record(frame, j, delay_ms)
        j += 1


class TransactionSimulator:
    """The default transaction source: :meth:`events` yields ``("transaction"|"label", record)``."""

    def __init__(self, cfg: TxSimConfig = TxSimConfig()) -> None:
        self.cfg = cfg
        self._frame: TransactionFrame | None = None

    @property
    def frame(self) -> TransactionFrame:
        if self._frame is None:
            self._frame = simulate_frame(self.cfg)
        return self._frame

    def events(self) -> Iterator[tuple[str, dict]]:
        reports_only = self.cfg.label_contract == "fraud_reports"
        return merged_events(
            self.frame, self.cfg.label_delay_days * DAY_MS, reports_only=reports_only
        )


__all__ = [
    "TransactionFrame",
    "TransactionSimulator",
    "TxSimConfig",
    "label_record",
    "merged_events",
    "simulate_frame",
    "transaction_record",
]

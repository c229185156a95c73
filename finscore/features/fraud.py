"""THE definition of fraud features, shared by training and the streaming workers.

Online and offline features are the same code: the worker calls :meth:`FraudFeatures.transform`
on each batch and :meth:`FraudFeatures.apply_labels` on the delayed labels it reads; training
calls :func:`featurize_frame`, which replays the same two methods over the history. So offline
and online features are identical by construction (and tested on the same events).

Features (the handbook's, plus extras marked *):
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
  the terminal windows;
- * ``TERMINAL_ID_HABIT_RISK_{1,7,30}DAY_WINDOW``: the terminal risk windows counting only
  the frauds the card's own habit does not explain: an amount below ``habit_ratio`` (2.5) times
  the card's mean over the 30 days up to that transaction, from the labels received so far. A
  compromised terminal defrauds cards at their usual amounts; a stolen card passing through a
  terminal spends far above its habit and says nothing about the terminal.

Labels are global (every worker reads them all); customer windows are keyed like the
``transactions`` topic. Updates are idempotent (an at-least-once replay of a transaction or a
label, same id, time and key, never counts twice). Memory is bounded by :meth:`evict`.

Under the ``fraud_reports`` contract the computation splits in two halves that share no state
(``FraudFeatures(cfg, part=...)``), for a two-stage fleet: the **cards** part (customer state:
:meth:`FraudFeatures.card_columns` gives the card columns and each transaction's habit flag)
and the **terminals** part (terminal entries and the reports:
:meth:`FraudFeatures.terminal_columns` fills the terminal columns). Part ``"all"`` holds both
and :meth:`FraudFeatures.transform_columns` is exactly the one followed by the other. A fraud
report whose transaction's terminal entry is not held yet (its row has not reached this
instance) is held aside, *pending*, and counts nowhere in the terminal windows until the entry
arrives; it then counts with the entry's habit flag, so the order in which reports and
transactions arrive does not change the features. Pending reports older than the horizon are
dropped by :meth:`evict`: in a terminals stage that reads every report, those of the other
instances' terminals wait there (the reports of one horizon, a small fraction of its rows).

State is columnar (:class:`finscore.features.timestore.TimeStore`): a whole batch is one set
of array operations, amounts are summed as integer cents (exact, so features do not depend on
batch sizes, evictions or restores), and the worker's columnar path
(:meth:`FraudFeatures.transform_columns`) never builds a dict per transaction.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from finscore.features.exceptions import UnknownFeature
from finscore.features.pending import REPORT_VALUES, PendingReports
from finscore.features.timestore import TimeStore

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
    "TERMINAL_ID_HABIT_RISK_1DAY_WINDOW",
    "TERMINAL_ID_HABIT_RISK_7DAY_WINDOW",
    "TERMINAL_ID_HABIT_RISK_30DAY_WINDOW",
    "TERMINAL_ID_HABIT_FRAUD_STREAK",
)
HANDBOOK_FEATURES = FRAUD_FEATURE_NAMES[:15]
N_FEATURES = len(FRAUD_FEATURE_NAMES)
# Bumped whenever the computation changes (caches of computed features key on it).
# 2: columnar state, window sums over integer cents. 3: terminal habit-risk windows.
# 4: terminal habit-fraud streak.
FEATURES_VERSION = 4
_NIGHT_MS = 7 * 3_600_000  # the handbook's night: hour <= 6
RECENT = 1024  # event times behind the eviction watermark (its median)
# "all_outcomes": a label per transaction (fraud or genuine), the terminal counts come from the
# labels. "fraud_reports": labels are frauds only, as card issuers get them; a transaction is
# a known genuine outcome once it is older than the delay and unreported, so the counts come
# from the transactions themselves (and every transaction's habit flag is decided when it is
# scored). Both give the same features when every fraud is reported within the delay.
LABEL_CONTRACTS = ("all_outcomes", "fraud_reports")


def feature_columns(names: Sequence[str]) -> np.ndarray | None:
    """Positions of ``names`` in a row of :data:`FRAUD_FEATURE_NAMES` (None when they are that
    whole row, in order): how a model trained on an older, shorter feature list reads today's
    rows. Raises :class:`UnknownFeature` for a name not computed here."""
    names = list(names)
    if not names or names == list(FRAUD_FEATURE_NAMES):
        return None
    position = {n: i for i, n in enumerate(FRAUD_FEATURE_NAMES)}
    missing = [n for n in names if n not in position]
    if missing:
        raise UnknownFeature(f"features not computed by this version: {', '.join(missing)}")
    return np.array([position[n] for n in names], dtype=np.intp)


@dataclass(frozen=True)
class FraudFeatureConfig:
    """Label delay, window lengths (days), and the amount-to-habit ratio above which a
    card's fraud is explained by the card rather than the terminal (habit-risk windows)."""

    label_delay_ms: int = 7 * DAY_MS
    windows_days: tuple[int, int, int] = (1, 7, 30)
    habit_ratio: float = 2.5
    # What the labels carry (see LABEL_CONTRACTS): every settled outcome, or fraud reports
    # only (a transaction nobody reports within the delay is genuine). Same features either way,
    # so it is left out of the repr (feature caches key on it and stay shared).
    label_contract: str = field(default="all_outcomes", repr=False)
    # The earliest storable time (stores then hold ~69 years from it and no record moves that
    # range); None: centred on the first times written (tests on small synthetic times).
    time_origin_ms: int | None = None

    def __post_init__(self) -> None:
        if self.label_contract not in LABEL_CONTRACTS:
            raise ValueError(
                f"label_contract must be one of {', '.join(LABEL_CONTRACTS)}, "
                f"not {self.label_contract!r}"
            )

    @property
    def reports_only(self) -> bool:
        """Labels are fraud reports only (the ``fraud_reports`` contract)."""
        return self.label_contract == "fraud_reports"

    @property
    def horizon_ms(self) -> int:
        """How far back any feature looks: delay + the longest window."""
        return self.label_delay_ms + max(self.windows_days) * DAY_MS


def tags_of(ids: Sequence[str]) -> np.ndarray:
    """Idempotence tags: CRC-32 of each id's UTF-8 bytes."""
    return np.fromiter(map(zlib.crc32, map(str.encode, ids)), dtype=np.int64, count=len(ids))


def to_cents(v: Any) -> int:
    """An amount (Decimal, float, int or str) in integer cents, half-even."""
    if isinstance(v, Decimal):
        return int((v * 100).to_integral_value(ROUND_HALF_EVEN))
    if isinstance(v, str):
        return to_cents(Decimal(v))
    return round(float(v) * 100)


def transaction_columns(
    txs: Iterable[dict],
) -> tuple[list[str], np.ndarray, list[str], list[str], np.ndarray]:
    """Dict ``transaction`` records as the arguments of ``transform_columns``: ids, event
    times (ms), customers, terminals, amounts in integer cents."""
    txs = list(txs)
    n = len(txs)
    return (
        [tx["transaction_id"] for tx in txs],
        np.fromiter((int(tx["event_time"]) for tx in txs), np.int64, n),
        [tx["customer_id"] for tx in txs],
        [tx["terminal_id"] for tx in txs],
        np.fromiter((to_cents(tx["amount"]) for tx in txs), np.int64, n),
    )


def label_columns(
    labels: Iterable[dict],
) -> tuple[list[str], list[str], list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dict ``fraud_label`` records as the arguments of ``apply_label_columns``: transaction
    ids, customers, terminals, transaction times, label times, outcomes, amounts in cents."""
    labels = list(labels)
    n = len(labels)
    return (
        [lab["transaction_id"] for lab in labels],
        [lab["customer_id"] for lab in labels],
        [lab["terminal_id"] for lab in labels],
        np.fromiter((int(lab["tx_time"]) for lab in labels), np.int64, n),
        np.fromiter((int(lab["label_time"]) for lab in labels), np.int64, n),
        np.fromiter((bool(lab["is_fraud"]) for lab in labels), bool, n),
        np.fromiter((to_cents(lab["amount"]) for lab in labels), np.int64, n),
    )


def time_chunks(idx: np.ndarray, t: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive row ranges in which each key's times strictly increase.

    Inside such a range, inserting all rows first and then querying (t − w, t] gives each row
    exactly what one-at-a-time processing gives it (later rows of its key are later in time).
    """
    n = len(idx)
    if n > 1:
        order = np.lexsort((np.arange(n), idx))
        i_s, t_s = idx[order], t[order]
        if ((i_s[1:] == i_s[:-1]) & (t_s[1:] <= t_s[:-1])).any():
            bounds: list[int] = [0]
            last: dict[int, int] = {}
            for r, (k, tt) in enumerate(zip(idx.tolist(), t.tolist(), strict=True)):
                prev = last.get(k)
                if prev is not None and tt <= prev:
                    bounds.append(r)
                    last = {}
                last[k] = tt
            bounds.append(n)
            return list(zip(bounds[:-1], bounds[1:], strict=True))
    return [(0, n)]


# Which half of the computation an instance holds (see the module docstring).
PARTS = ("all", "cards", "terminals")
_REPORT_VALUES = REPORT_VALUES  # a report's values in the stores (and pending)


class FraudFeatures:
    """Online fraud-feature state: customer spending windows, terminal and card outcomes."""

    def __init__(
        self,
        cfg: FraudFeatureConfig = FraudFeatureConfig(),
        *,
        share_entries: bool = False,
        part: str = "all",
    ) -> None:
        """``share_entries`` (``fraud_reports`` only): remember the terminal entries of the
        transactions scored here for :meth:`take_terminal_entries` (a worker in a fleet);
        otherwise nothing is remembered for it.

        ``part`` (one of :data:`PARTS`): ``"all"``, or one half of a two-stage fleet
        (``fraud_reports`` only): ``"cards"`` holds the customer state and the card outcomes
        (no terminal store), ``"terminals"`` the terminal entries, the terminal outcomes and
        the pending reports (no customer store). Raises ValueError for another part, or for a
        half under ``all_outcomes``."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
        if part != "all" and not cfg.reports_only:
            raise ValueError(
                f"part={part!r} needs the fraud_reports label contract: under all_outcomes the "
                "terminal counts come from every label (genuine outcomes included), so a "
                "terminals stage would have to read every label, and the habit flags come "
                "from the card outcomes, not from each transaction as it is scored"
            )
        self.cfg = cfg
        self.part = part
        self.spans = [w * DAY_MS for w in cfg.windows_days]
        origin = cfg.time_origin_ms
        cards, terminals = part != "terminals", part != "cards"
        self._spend: TimeStore | None = None
        self._cards: TimeStore | None = None
        if cards:
            self._spend = TimeStore(("cents", "sq"), track_changes=True, origin=origin)
            self._cards = TimeStore(("fraud", "late", "label_time", "cents"), origin=origin)
        self._terminals: TimeStore | None = None
        if terminals:
            self._terminals = TimeStore(("fraud", "habit", "late", "label_time"), origin=origin)
        # fraud_reports: every terminal's transactions (time, tag, and whether the amount is
        # within the card's habit), from this worker's transactions and, in a fleet, from the
        # other workers' (see take_terminal_entries / add_terminal_entries); and the reports
        # whose transaction's entry is not held yet (pending).
        self._term_tx: TimeStore | None = None
        self._pending: PendingReports | None = None
        if cfg.reports_only and terminals:
            self._term_tx = TimeStore(("below",), track_changes=share_entries, origin=origin)
            self._pending = PendingReports()
        self.latest_ms = 0
        self._recent = np.zeros(RECENT, dtype=np.int64)  # a ring of recent event times
        self._recent_n = 0

    @property
    def unmatched_reports(self) -> int:
        """Fraud reports held pending: their transaction's terminal entry is not held (yet).
        They count in no terminal window until it arrives (0 under ``all_outcomes`` and in a
        ``"cards"`` part, which match nothing)."""
        return 0 if self._pending is None else len(self._pending)

    def _customer_state(self, what: str) -> TimeStore:
        """The customer store; raises ValueError in a ``"terminals"`` part."""
        if self._spend is None:
            raise ValueError(
                f"{what} needs the customer state, which FraudFeatures(part={self.part!r}) "
                "does not hold (the cards stage does)"
            )
        return self._spend

    def _need_reports_part(self, what: str, store: TimeStore | None, stage: str) -> None:
        """Raise ValueError unless the contract is ``fraud_reports`` and ``store`` is held."""
        if not self.cfg.reports_only:
            raise ValueError(f"{what} is the fraud_reports contract's (this is all_outcomes)")
        if store is None:
            raise ValueError(
                f"{what} needs the {stage} state, which FraudFeatures(part={self.part!r}) does "
                "not hold"
            )

    # -- transactions -------------------------------------------------------------------------
    def transform(self, txs: Iterable[dict]) -> np.ndarray:
        """Features of each transaction, in order; each is added to its customer's state first.

        Records need ``transaction_id``, ``event_time`` (ms), ``customer_id``, ``terminal_id``
        and ``amount``. Returns float32 ``[N, len(FRAUD_FEATURE_NAMES)]``. Part ``"all"`` only.
        """
        return self.transform_columns(*transaction_columns(txs))

    def _observe(self, t: np.ndarray) -> None:
        """Remember the newest event times (for :meth:`watermark_ms`)."""
        t = t[-RECENT:]
        at = self._recent_n % RECENT
        first = min(len(t), RECENT - at)
        self._recent[at : at + first] = t[:first]
        self._recent[: len(t) - first] = t[first:]
        self._recent_n += len(t)

    def watermark_ms(self) -> int:
        """The stream's time as eviction sees it: the median of the last :data:`RECENT` event
        times (0 before any). Unlike the newest time, no single record moves it, so one record
        dated far ahead cannot make the store forget what every other record needs."""
        if not self._recent_n:
            return 0
        return int(np.median(self._recent[: min(self._recent_n, RECENT)]))

    def find_conflicts(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        customer_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> np.ndarray:
        """Rows that reuse a transaction id already held for their customer (in the state, or
        earlier in this batch) with a different event time or amount: duplicates, which must
        not enter the state. A repeat with the same time and amount is a replay (at-least-once
        redelivery) and is not a conflict. Ids are compared by their 32-bit tag. Not in a
        ``"terminals"`` part (ValueError)."""
        spend = self._customer_state("find_conflicts")
        n = len(transaction_id)
        if n == 0:
            return np.zeros(0, dtype=bool)
        t = np.asarray(event_time, dtype=np.int64)
        cents = np.asarray(amount_cents, dtype=np.int64)
        tags = tags_of(transaction_id)
        cidx = spend.index_of(customer_id, create=False)
        found, held_t, held_c = spend.find_tags(cidx, tags, "cents")
        conflict = found & ((held_t != t) | (held_c != cents))
        uniq, counts = np.unique(tags, return_counts=True)
        if (counts > 1).any():  # rare: a tag repeated inside the batch, compared row by row
            first: dict[tuple[str, int], tuple[int, int]] = {}
            for r in np.flatnonzero(np.isin(tags, uniq[counts > 1])).tolist():
                k = (customer_id[r], int(tags[r]))
                seen = first.get(k)
                if seen is None:
                    if not found[r]:
                        first[k] = (int(t[r]), int(cents[r]))
                elif seen != (int(t[r]), int(cents[r])):
                    conflict[r] = True
        return conflict

    def accepts_label_times(self, tx_time: np.ndarray) -> np.ndarray:
        """Which transaction times the outcome (terminal and card) states held here can hold."""
        ok = np.ones(len(tx_time), dtype=bool)
        for store in (self._cards, self._terminals):
            if store is not None:
                ok &= store.accepts(tx_time)
        return ok

    def accepts_times(self, event_time: np.ndarray) -> np.ndarray:
        """Which event times the customer state (in a ``"terminals"`` part: the terminal
        entries) can hold (see the time store's limits)."""
        if self._spend is None:
            assert self._term_tx is not None
            return self._term_tx.accepts(event_time)
        return self._spend.accepts(event_time)

    def transform_columns(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        customer_id: Sequence[str],
        terminal_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> np.ndarray:
        """:meth:`transform` on columns (what the worker's columnar decoder gives). Part
        ``"all"`` only (ValueError otherwise); under ``fraud_reports`` it is exactly
        :meth:`card_columns` followed by :meth:`terminal_columns`."""
        if self.part != "all":
            raise ValueError(
                f"FraudFeatures(part={self.part!r}) computes half of the features: "
                "card_columns in the cards part, terminal_columns in the terminals part"
            )
        if self.cfg.reports_only:
            tags = tags_of(transaction_id)
            out, below = self._card_part(tags, event_time, customer_id, amount_cents)
            self._terminal_part(out, tags, event_time, terminal_id, below)
            return out
        n = len(transaction_id)
        out = np.zeros((n, N_FEATURES), dtype=np.float32)
        if n == 0:
            return out
        spend = self._customer_state("transform_columns")
        t = np.asarray(event_time, dtype=np.int64)
        cents = np.asarray(amount_cents, dtype=np.int64)
        cidx = spend.index_of(customer_id, create=True)
        tags = tags_of(transaction_id)
        sq = cents * cents
        for a, b in time_chunks(cidx, t):
            spend.insert(cidx[a:b], t[a:b], tags[a:b], {"cents": cents[a:b], "sq": sq[a:b]})
            self._customer_windows(out[a:b], cidx[a:b], t[a:b], cents[a:b])
        self.latest_ms = max(self.latest_ms, int(t.max()))
        self._observe(t)
        out[:, 0] = cents / 100
        day, ms_of_day = np.divmod(t, DAY_MS)
        out[:, 1] = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        out[:, 2] = ms_of_day < _NIGHT_MS
        spans = self.spans
        end = t - self.cfg.label_delay_ms
        windows = [end - span for span in spans]
        store, cards = self._terminals, self._cards
        assert store is not None and cards is not None
        tidx = store.index_of(terminal_id, create=False)
        # The habit-fraud run: the window's outcomes after its latest non-habit one.
        run_after = np.maximum(windows[-1], store.last_time_of_zero(tidx, end, "habit"))
        n_tx, sums, late = self._outcomes(store, tidx, t, [*windows, run_after], ("fraud", "habit"))
        for k in range(len(spans)):
            seen = n_tx[k] > 0
            out[:, 9 + 2 * k] = n_tx[k]
            out[:, 10 + 2 * k] = np.divide(sums["fraud"][k], n_tx[k], out=np.zeros(n), where=seen)
            out[:, 19 + k] = np.divide(sums["habit"][k], n_tx[k], out=np.zeros(n), where=seen)
        run = n_tx[-1]
        for r in late.tolist():  # a label not known yet may be the run's true start: recount
            run[r] = self._recount_run(int(tidx[r]), int(windows[-1][r]), int(end[r]), int(t[r]))
        out[:, 22] = np.log1p(run)
        cidx = cards.index_of(customer_id, create=False)
        n_c, card, _ = self._outcomes(cards, cidx, t, windows[-1:], ("fraud",))
        f_c = card["fraud"]
        out[:, 17] = np.divide(f_c[0], n_c[0], out=np.zeros(n), where=n_c[0] > 0)
        out[:, 18] = f_c[0]
        return out

    def card_columns(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        customer_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The cards half of :meth:`transform_columns` (``fraud_reports``; parts ``"all"`` and
        ``"cards"``, ValueError otherwise): float32 features ``[n, N_FEATURES]`` with the card
        columns filled (amount, weekend, night, customer windows, amount ratio and z-score,
        the card's delayed outcomes) and the terminal ones 0, and each transaction's habit flag
        (int64 ``[n]``: 1 when its amount is below ``habit_ratio`` times the card's 30-day
        mean), which :meth:`terminal_columns` needs. Each row is added to its customer's state
        first (in chunks where a customer's times do not increase, as one at a time would)."""
        self._need_reports_part("card_columns", self._spend, "customer")
        return self._card_part(tags_of(transaction_id), event_time, customer_id, amount_cents)

    def terminal_columns(
        self,
        out: np.ndarray,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        terminal_id: Sequence[str],
        below: np.ndarray,
    ) -> None:
        """The terminals half of :meth:`transform_columns` (``fraud_reports``; parts ``"all"``
        and ``"terminals"``, ValueError otherwise): fills the terminal columns of ``out``
        (``[n, N_FEATURES]``, e.g. :meth:`card_columns`' rows) in place, from the habit flags
        ``below`` that :meth:`card_columns` gave. Each row's terminal entry (time, tag, flag)
        is added first (idempotent by terminal, time and tag), and the pending reports it
        matches then count."""
        self._need_reports_part("terminal_columns", self._term_tx, "terminal")
        n = len(transaction_id)
        if out.shape != (n, N_FEATURES):
            raise ValueError(f"out must be [{n}, {N_FEATURES}], not {list(out.shape)}")
        self._terminal_part(out, tags_of(transaction_id), event_time, terminal_id, below)

    def _card_part(
        self,
        tags: np.ndarray,
        event_time: np.ndarray,
        customer_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`card_columns` (ids given as their tags)."""
        spend, cards = self._spend, self._cards
        assert spend is not None and cards is not None
        n = len(tags)
        out = np.zeros((n, N_FEATURES), dtype=np.float32)
        below = np.zeros(n, dtype=np.int64)
        if n == 0:
            return out, below
        t = np.asarray(event_time, dtype=np.int64)
        cents = np.asarray(amount_cents, dtype=np.int64)
        cidx = spend.index_of(customer_id, create=True)
        sq = cents * cents
        for a, b in time_chunks(cidx, t):
            spend.insert(cidx[a:b], t[a:b], tags[a:b], {"cents": cents[a:b], "sq": sq[a:b]})
            n30, s30 = self._customer_windows(out[a:b], cidx[a:b], t[a:b], cents[a:b])
            # the habit flag, as apply_label_columns decides it under all_outcomes
            below[a:b] = cents[a:b] * np.maximum(n30, 1) < self.cfg.habit_ratio * s30
        self.latest_ms = max(self.latest_ms, int(t.max()))
        self._observe(t)
        out[:, 0] = cents / 100
        day, ms_of_day = np.divmod(t, DAY_MS)
        out[:, 1] = (day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        out[:, 2] = ms_of_day < _NIGHT_MS
        # The card's outcomes: its transactions in the delayed window, frauds the reports.
        end = t - self.cfg.label_delay_ms
        after = end - self.spans[-1]
        [(n_c, _)] = spend.window_sums(cidx, [after], end)
        cards_idx = cards.index_of(customer_id, create=False)
        _, card, _ = self._outcomes(cards, cards_idx, t, [after], ("fraud",))
        f_c, n_card = card["fraud"][0], n_c.astype(np.float64)
        out[:, 17] = np.divide(f_c, n_card, out=np.zeros(n), where=n_card > 0)
        out[:, 18] = f_c
        return out, below

    def _customer_windows(
        self, out: np.ndarray, idx: np.ndarray, t: np.ndarray, cents: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fill the customer columns; returns the longest window's count and cents sum."""
        assert self._spend is not None
        stats = self._spend.window_sums(idx, [t - span for span in self.spans], t, ("cents", "sq"))
        for k, (count, sums) in enumerate(stats):
            n = count.astype(np.float64)
            s1 = sums["cents"].astype(np.float64)
            mean_c = np.divide(s1, n, out=np.zeros(len(n)), where=n > 0)
            out[:, 3 + 2 * k] = n
            out[:, 4 + 2 * k] = mean_c / 100
        # The longest window also gives the amount's ratio to and z-score against the habit.
        s2 = sums["sq"].astype(np.float64)
        var_c = np.maximum(np.divide(s2 * n - s1 * s1, n * n, out=np.zeros(len(n)), where=n > 1), 0)
        std_c = np.sqrt(var_c)
        out[:, 15] = np.divide(cents, mean_c, out=np.ones(len(n)), where=mean_c > 0)
        out[:, 16] = np.divide(cents - mean_c, std_c, out=np.zeros(len(n)), where=std_c > 1e-7)
        return count, sums["cents"]

    def _terminal_part(
        self,
        out: np.ndarray,
        tags: np.ndarray,
        event_time: np.ndarray,
        terminal_id: Sequence[str],
        below: np.ndarray,
    ) -> None:
        """Terminal features under the ``fraud_reports`` contract (:meth:`terminal_columns`,
        ids given as their tags): the outcomes known at t are every transaction in the delayed
        window (a transaction older than the delay and not reported is genuine), frauds being
        the reports known at t. The transactions are held per terminal with their habit flag
        (this batch's first, then the pending reports they match)."""
        xs, reports = self._term_tx, self._terminals
        assert xs is not None and reports is not None
        n = len(tags)
        if n == 0:
            return
        t = np.asarray(event_time, dtype=np.int64)
        below = np.asarray(below, dtype=np.int64)
        self.latest_ms = max(self.latest_ms, int(t.max()))
        if self._spend is None:  # the terminals part (in "all" the card part observed t)
            self._observe(t)
        end = t - self.cfg.label_delay_ms
        windows = [end - span for span in self.spans]
        xidx = xs.index_of(terminal_id, create=True)
        xs.insert(xidx, t, tags, {"below": below})
        self._match_pending(tags)
        tidx = reports.index_of(terminal_id, create=False)
        counts = xs.window_sums(xidx, windows, end)
        _, sums, _ = self._outcomes(reports, tidx, t, windows, ("fraud", "habit"))
        for k, (count, _) in enumerate(counts):
            n_tx = count.astype(np.float64)
            seen = n_tx > 0
            out[:, 9 + 2 * k] = n_tx
            out[:, 10 + 2 * k] = np.divide(sums["fraud"][k], n_tx, out=np.zeros(n), where=seen)
            out[:, 19 + k] = np.divide(sums["habit"][k], n_tx, out=np.zeros(n), where=seen)
        # The habit-fraud run: 0 wherever some outcome at the window's latest time is not a
        # known habit fraud (nearly every row); the others are recounted from their entries.
        last = xs.last_time(xidx, end)
        at_last = np.maximum(last - 1, windows[-1])
        [(c_tx, _)] = xs.window_sums(xidx, [at_last], end)
        _, c_h, _ = self._outcomes(reports, tidx, t, [at_last], ("habit",))
        run = np.zeros(n)
        recount = np.flatnonzero((last > windows[-1]) & (c_h["habit"][0] >= c_tx))
        for r in recount.tolist():
            run[r] = self._recount_reports_run(
                int(xidx[r]), int(tidx[r]), int(windows[-1][r]), int(end[r]), int(t[r])
            )
        out[:, 22] = np.log1p(run)

    def _match_pending(self, tags: np.ndarray) -> None:
        """After entries tagged ``tags`` were added: the pending reports whose (terminal, time,
        tag) entry is now held leave the pending set and count in the terminal windows, with
        that entry's habit flag. Costs one gather in a bitmap when no tag is pending."""
        pending, reports = self._pending, self._terminals
        if pending is None or not len(pending):
            return
        assert reports is not None
        at = pending.among(np.asarray(tags, dtype=np.int64))
        if not sum(map(len, at)):
            return
        got = pending.rows(at)
        names = pending.names(got["terminal"])
        found, below = self._entry_flags(names, got["time"], got["tag"])
        if not found.any():
            return
        ends = np.cumsum([len(p) for p in at])
        pending.remove([p[found[e - len(p) : e]] for p, e in zip(at, ends.tolist(), strict=True)])
        sel = np.flatnonzero(found)
        values = {c: got[c][sel] for c in _REPORT_VALUES}
        habit = values["fraud"] * (below[sel] > 0)
        idx = reports.index_of([names[i] for i in sel.tolist()], create=True)
        reports.insert(idx, got["time"][sel], got["tag"][sel], {**values, "habit": habit})

    def _entry_flags(
        self, terminal_id: Sequence[str], tx_time: np.ndarray, tags: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per report, whether its transaction's entry (terminal, time, tag) is held, and that
        entry's habit flag (0 where not held)."""
        xs = self._term_tx
        assert xs is not None
        xidx = xs.index_of(terminal_id, create=False)
        found, held_t, below = xs.find_tags(xidx, tags, "below")
        other = np.flatnonzero(found & (held_t != tx_time))
        found &= held_t == tx_time
        for r in other.tolist():  # rare: the terminal holds the id at another time too
            e = xs.entries(int(xidx[r]), int(tx_time[r]) - 1, int(tx_time[r]), with_tags=True)
            hit = e["tag"] == tags[r]
            if hit.any():
                found[r], below[r] = True, int(e["below"][hit][0])
        below[~found] = 0
        return found, below

    def _recount_reports_run(self, x: int, i: int, after: int, end: int, t: int) -> int:
        """The habit-fraud run of one terminal under the ``fraud_reports`` contract: its
        transactions in (after, end] later than the latest one that is not a habit fraud
        reported by ``t``."""
        assert self._term_tx is not None and self._terminals is not None
        tx = self._term_tx.entries(x, after, end, with_times=True, with_tags=True)
        rep = self._terminals.entries(i, after, end, with_times=True, with_tags=True)
        hit = (rep["label_time"] <= t) & (rep["habit"] > 0)
        habit = set(zip(rep["time"][hit].tolist(), rep["tag"][hit].tolist(), strict=True))
        pairs = zip(tx["time"].tolist(), tx["tag"].tolist(), strict=True)
        is_habit = np.fromiter((p in habit for p in pairs), bool, len(tx["time"]))
        other = tx["time"][~is_habit]
        last = int(other.max()) if len(other) else after
        return int((tx["time"] > last).sum())

    def _outcomes(
        self,
        store: TimeStore,
        idx: np.ndarray,
        t: np.ndarray,
        afters: Sequence[np.ndarray],
        columns: Sequence[str],
    ) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], np.ndarray]:
        """Per lower bound in ``afters``, the count and the sums of ``columns`` over tx_time in
        (after, t − delay], counting only labels known at t (label_time <= t); and the rows
        where some window holds a label that came late."""
        end = t - self.cfg.label_delay_ms
        counts: list[np.ndarray] = []
        totals: dict[str, list[np.ndarray]] = {c: [] for c in columns}
        stats = store.window_sums(idx, afters, end, (*columns, "late"))
        late = np.zeros(len(idx), dtype=bool)
        for after, (n, sums) in zip(afters, stats, strict=True):
            late |= sums["late"] > 0
            for r in np.flatnonzero(sums["late"]).tolist():  # labels that may not be known yet
                e = store.entries(int(idx[r]), int(after[r]), int(end[r]))
                unknown = e["label_time"] > t[r]
                n[r] -= int(unknown.sum())
                for c in columns:
                    sums[c][r] -= int(e[c][unknown].sum())
            counts.append(n.astype(np.float64))
            for c in columns:
                totals[c].append(sums[c].astype(np.float64))
        return counts, totals, np.flatnonzero(late)

    def _recount_run(self, idx: int, after: int, end: int, t: int) -> int:
        """The habit-fraud run of one terminal from its entries: outcomes with tx_time in
        (after, end] known at ``t`` that are later than the latest known non-habit one."""
        assert self._terminals is not None
        e = self._terminals.entries(idx, after, end, with_times=True)
        known = e["label_time"] <= t
        other = known & (e["habit"] == 0)
        last = int(e["time"][other].max()) if other.any() else after
        return int((known & (e["time"] > last)).sum())

    # -- labels -------------------------------------------------------------------------------
    def apply_labels(self, labels: Iterable[dict]) -> None:
        """Add delayed outcomes (``fraud_label`` records) to terminal and card state."""
        self.apply_label_columns(*label_columns(labels))

    def apply_label_columns(
        self,
        transaction_id: Sequence[str],
        customer_id: Sequence[str],
        terminal_id: Sequence[str],
        tx_time: np.ndarray,
        label_time: np.ndarray,
        is_fraud: np.ndarray,
        amount_cents: np.ndarray,
    ) -> None:
        """:meth:`apply_labels` on columns (amounts in integer cents).

        Cards first: a fraud counts in the terminal's habit risk when its amount is below
        ``habit_ratio`` times the card's mean over the 30 days up to its transaction, over the
        labels received so far (this batch's included).

        Under the ``fraud_reports`` contract only frauds are kept (a genuine label says what
        the absence of a report already says) and a fraud's habit flag is the one its
        transaction got when it was scored (:meth:`card_columns`, from the card's
        transactions). A report whose transaction's terminal entry (terminal, time, tag) is
        not held yet is held pending (:attr:`unmatched_reports`) and counts in the terminal
        windows only once the entry arrives (:meth:`terminal_columns`,
        :meth:`add_terminal_entries`, :meth:`add_terminal_rows`), with the entry's flag; a
        report repeated while pending is held once. A ``"cards"`` part keeps the card
        outcomes only, a ``"terminals"`` part the terminal ones only."""
        if self.cfg.reports_only and len(transaction_id):
            keep = np.flatnonzero(np.asarray(is_fraud, dtype=bool))
            if len(keep) < len(transaction_id):
                pick = keep.tolist()
                transaction_id = [transaction_id[i] for i in pick]
                customer_id = [customer_id[i] for i in pick]
                terminal_id = [terminal_id[i] for i in pick]
                tx_time, label_time = np.asarray(tx_time)[keep], np.asarray(label_time)[keep]
                is_fraud, amount_cents = np.asarray(is_fraud)[keep], np.asarray(amount_cents)[keep]
        if not len(transaction_id):
            return
        tx_time = np.asarray(tx_time, dtype=np.int64)
        label_time = np.asarray(label_time, dtype=np.int64)
        cents = np.asarray(amount_cents, dtype=np.int64)
        fraud = np.asarray(is_fraud, dtype=np.int64)
        values = {
            "fraud": fraud,
            "late": (label_time - tx_time > self.cfg.label_delay_ms).astype(np.int64),
            "label_time": label_time,
            "cents": cents,
        }
        tags = tags_of(transaction_id)
        cidx = None
        if self._cards is not None:
            cidx = self._cards.index_of(customer_id, create=True)
            self._cards.insert(cidx, tx_time, tags, values)
        if self._terminals is None:
            return
        if self._term_tx is not None:
            self._apply_reports(terminal_id, tx_time, tags, values)
            return
        assert self._cards is not None and cidx is not None
        [(n, sums)] = self._cards.window_sums(cidx, [tx_time - self.spans[-1]], tx_time, ("cents",))
        habit = fraud * (cents * np.maximum(n, 1) < self.cfg.habit_ratio * sums["cents"])
        tidx = self._terminals.index_of(terminal_id, create=True)
        self._terminals.insert(tidx, tx_time, tags, {**values, "habit": habit.astype(np.int64)})

    def _apply_reports(
        self, terminal_id: Sequence[str], tx_time: np.ndarray, tags: np.ndarray, values: dict
    ) -> None:
        """Fraud reports into the terminal outcomes (those whose entry is held, with its habit
        flag) or the pending set (the others)."""
        reports, pending = self._terminals, self._pending
        assert reports is not None and pending is not None
        found, below = self._entry_flags(terminal_id, tx_time, tags)
        if not found.all():
            wait = np.flatnonzero(~found)
            pending.add([terminal_id[i] for i in wait.tolist()], tx_time[wait], tags[wait],
                        {c: v[wait] for c, v in values.items()})  # fmt: skip
            sel = np.flatnonzero(found)
            terminal_id = [terminal_id[i] for i in sel.tolist()]
            tx_time, tags, below = tx_time[sel], tags[sel], below[sel]
            values = {c: v[sel] for c, v in values.items()}
            if not len(sel):
                return
        tidx = reports.index_of(terminal_id, create=True)
        habit = values["fraud"] * (below > 0)
        reports.insert(tidx, tx_time, tags, {**values, "habit": habit})

    # -- memory and changelog -----------------------------------------------------------------
    def evict(self, now_ms: int | None = None) -> None:
        """Forget what no feature can see any more (older than delay + longest window),
        pending reports included."""
        now = self.watermark_ms() if now_ms is None else now_ms
        if self._spend is not None:
            self._spend.evict(now - self._spend_span_ms() - DAY_MS)
        keep_outcomes = now - self.cfg.horizon_ms - DAY_MS
        for store in (self._terminals, self._cards, self._term_tx):
            if store is not None:
                store.evict(keep_outcomes)
        if self._pending is not None:
            self._pending.evict(keep_outcomes)

    def _spend_span_ms(self) -> int:
        """How far back the customer windows are read: the longest window, or (fraud reports
        only, where the card's delayed outcomes are its own transactions) the horizon."""
        return self.cfg.horizon_ms if self.cfg.reports_only else self.spans[-1]

    def take_changes(self, partition_of: Mapping[str, int]) -> list[tuple[int, bytes]]:
        """The window entries added since the last call, as (partition, record) pairs: a few
        records per partition of ``partition_of`` (customer -> partition; customers it lacks
        are left out). An append-only changelog: :meth:`add_changes` on all its records
        rebuilds the state. Costs what was added, not what is held. Not in a
        ``"terminals"`` part (ValueError)."""
        return self._customer_state("take_changes").take_changes(partition_of)

    def add_changes(
        self, records: Iterable[tuple[str, bytes]], keep: Callable | None = None
    ) -> int:
        """Rebuild customer state from changelog records (:meth:`take_changes` records or
        snapshots, any order, repeats harmless), then forget what no feature can see. Rows
        the store cannot hold, or that ``keep(table)`` refuses (int64 rows: time, tag, cents,
        sq), are dropped; returns how many. Not in a ``"terminals"`` part (ValueError)."""
        spend = self._customer_state("add_changes")
        dropped = spend.add_rows(records, keep)
        held = spend.time_range()
        if held is not None:
            self.latest_ms = max(self.latest_ms, held[1])
            self._observe(spend.newest_times(RECENT))
            spend.evict(self.watermark_ms() - self._spend_span_ms() - DAY_MS)
        return dropped

    def take_terminal_entries(
        self, group_of: Callable[[str], int] | None = None, max_rows: int = 1 << 16
    ) -> list[tuple[int, bytes]]:
        """Under ``fraud_reports``: the terminal entries (time, tag, habit flag) of the
        transactions scored here since the last call, as (group, record) pairs coalesced per
        terminal (:func:`finscore.features.terminal_entries.encode_entries`, ~17 bytes a
        transaction), grouped by ``group_of(terminal)`` (e.g. the partition of a
        terminal-keyed topic; all in group 0 when None). What other workers need to count
        this worker's transactions at their terminals; entries added by
        :meth:`add_terminal_entries` are not reported again. Empty under ``all_outcomes``,
        in a ``"cards"`` part, or without ``share_entries``."""
        from finscore.features.terminal_entries import encode_entries

        if self._term_tx is None:
            return []
        names, rows = self._term_tx.take_change_rows()
        if not len(rows):
            return []
        group = np.zeros(len(names), dtype=np.int64)
        if group_of is not None:
            group = np.fromiter(map(group_of, names), np.int64, len(names))
        row_group = group[rows[:, 0]]
        out: list[tuple[int, bytes]] = []
        for g in np.unique(group).tolist():
            sel = np.flatnonzero(row_group == g)
            for a in range(0, len(sel), max_rows):
                part = rows[sel[a : a + max_rows]]
                used, local = np.unique(part[:, 0], return_inverse=True)
                out.append((g, encode_entries([names[k] for k in used.tolist()],
                                              local.reshape(-1), part[:, 1], part[:, 2],
                                              part[:, 3])))  # fmt: skip
        return out

    def add_terminal_entries(self, records: Iterable[bytes]) -> int:
        """Add terminal entries of other workers' transactions (:meth:`take_terminal_entries`
        records; any order, repeats harmless, idempotent by terminal, time and tag); the
        pending reports they match then count. Entries the store cannot hold are dropped;
        returns how many. Raises :class:`~finscore.features.exceptions.FeatureStateError` for
        a corrupt record (the others of the call are then not applied: apply one at a time to
        skip it). Returns 0 under ``all_outcomes``; ValueError in a ``"cards"`` part."""
        from finscore.features.terminal_entries import decode_entries

        if not self.cfg.reports_only:
            return 0
        self._need_reports_part("add_terminal_entries", self._term_tx, "terminal")
        parts = [decode_entries(v) for v in records]
        if not parts:
            return 0
        store = self._term_tx
        assert store is not None
        idx = np.concatenate([store.index_of(p.names, create=True)[p.key] for p in parts])
        t = np.concatenate([p.times for p in parts])
        tags = np.concatenate([p.tags for p in parts])
        below = np.concatenate([p.flags for p in parts])
        return self._add_entries(idx, t, tags, below)

    def add_terminal_rows(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        terminal_id: Sequence[str],
        below: np.ndarray,
    ) -> int:
        """Add terminal entries (time, tag, habit flag) without computing features: a
        terminals stage rebuilding its state from the rows it was handed (idempotent by
        terminal, time and tag; not reported by :meth:`take_terminal_entries`); the pending
        reports they match then count. Entries the store cannot hold are dropped; returns how
        many. ``fraud_reports``, parts ``"all"`` and ``"terminals"`` (ValueError otherwise)."""
        self._need_reports_part("add_terminal_rows", self._term_tx, "terminal")
        assert self._term_tx is not None
        if not len(transaction_id):
            return 0
        idx = self._term_tx.index_of(terminal_id, create=True)
        t = np.asarray(event_time, dtype=np.int64)
        return self._add_entries(idx, t, tags_of(transaction_id), np.asarray(below, np.int64))

    def _add_entries(
        self, idx: np.ndarray, t: np.ndarray, tags: np.ndarray, below: np.ndarray
    ) -> int:
        """Insert entries the terminal store can hold (not as changes to report), match the
        pending reports; returns how many were dropped."""
        store = self._term_tx
        assert store is not None
        ok = store.accepts(t)
        store.insert(idx[ok], t[ok], tags[ok], {"below": below[ok]}, record=False)
        self._match_pending(tags[ok])
        return int(len(ok) - ok.sum())

    def forget_changes(self, customer_ids: Iterable[str]) -> None:
        """Drop unreported changes of these customers (their partition was revoked)."""
        self._customer_state("forget_changes").forget_changes(customer_ids)

    def snapshot_customers(self, customer_ids: Iterable[str]) -> list[bytes]:
        """Each customer's window state as compact bytes (for a compacted changelog)."""
        return self._customer_state("snapshot_customers").snapshot(customer_ids)

    def snapshot_customer(self, customer_id: str) -> bytes:
        """One customer's window state (see :meth:`snapshot_customers`)."""
        return self.snapshot_customers([customer_id])[0]

    def restore_customers(self, snapshots: dict[str, bytes]) -> None:
        """Replace the window state of each customer with its snapshot (one bulk write)."""
        spend = self._customer_state("restore_customers")
        spend.restore(snapshots)
        held = spend.time_range()
        if held is not None:
            self.latest_ms = max(self.latest_ms, held[1])

    def restore_customer(self, customer_id: str, snap: bytes) -> None:
        """Replace one customer's window state with a snapshot from :meth:`snapshot_customer`."""
        self.restore_customers({customer_id: snap})

    def customers(self) -> list[str]:
        """Customers that have state (none in a ``"terminals"`` part)."""
        return [] if self._spend is None else self._spend.key_names()

    def terminals(self) -> list[str]:
        """Terminals that have labelled outcomes (none in a ``"cards"`` part)."""
        return [] if self._terminals is None else self._terminals.key_names()

    def _stores(self) -> list[tuple[str, TimeStore]]:
        """The stores this part holds, by their name in :meth:`held`."""
        named = (("customers", self._spend), ("terminals", self._terminals),
                 ("cards", self._cards), ("terminal_transactions", self._term_tx))  # fmt: skip
        return [(name, store) for name, store in named if store is not None]

    def held(self) -> dict[str, int]:
        """How many entries each store of this part holds (for memory metrics and tests):
        ``customers`` and ``cards`` (parts ``"all"``, ``"cards"``), ``terminals`` (parts
        ``"all"``, ``"terminals"``), and under ``fraud_reports`` ``terminal_transactions``
        and ``pending_reports`` (parts ``"all"``, ``"terminals"``)."""
        held = {name: len(store) for name, store in self._stores()}
        if self._pending is not None:
            held["pending_reports"] = len(self._pending)
        return held

    def oldest(self) -> dict[str, int | None]:
        """The oldest time each store of this part holds (None when empty): ``customers``,
        ``terminals``, ``cards``, as :meth:`held` has them."""
        out: dict[str, int | None] = {}
        for name, store in self._stores():
            if name != "terminal_transactions":
                held = store.time_range()
                out[name] = held[0] if held else None
        return out


def featurize_frame(frame, cfg: FraudFeatureConfig = FraudFeatureConfig()) -> np.ndarray:  # noqa: ANN001
    """Features of every row of a TransactionFrame, by replaying the online code over history.

    Labels (every transaction's outcome, known ``label_delay`` later) are applied day by day
    before the transactions of that day; since a label only counts once its label time has
    passed, the result equals what a worker computes on the live stream. Under the
    ``fraud_reports`` contract only the frauds are applied (what an issuer receives), and the
    features are the same.
    """
    n = len(frame)
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    ff = FraudFeatures(cfg)
    tid = frame.transaction_id.astype(str).tolist()
    cust = frame.customer_id.astype(str).tolist()
    term = frame.terminal_id.astype(str).tolist()
    t = np.asarray(frame.event_time, dtype=np.int64)
    cents = np.round(np.asarray(frame.amount, dtype=np.float64) * 100).astype(np.int64)
    fraud = np.asarray(frame.is_fraud, dtype=bool)
    label_t = t + cfg.label_delay_ms
    day_edges = np.arange(t[0] - t[0] % DAY_MS, t[-1] + DAY_MS + 1, DAY_MS)
    j = 0
    for start, end in zip(day_edges[:-1], day_edges[1:], strict=False):
        lo, hi = (int(v) for v in np.searchsorted(t, [start, end]))
        jj = int(np.searchsorted(label_t, end))
        if jj > j and cfg.reports_only:
            sel = np.flatnonzero(fraud[j:jj]) + j
            pick = sel.tolist()
            ff.apply_label_columns([tid[i] for i in pick], [cust[i] for i in pick],
                                   [term[i] for i in pick], t[sel], label_t[sel], fraud[sel],
                                   cents[sel])  # fmt: skip
            j = jj
        elif jj > j:
            ff.apply_label_columns(tid[j:jj], cust[j:jj], term[j:jj], t[j:jj], label_t[j:jj],
                                   fraud[j:jj], cents[j:jj])  # fmt: skip
            j = jj
        if hi > lo:
            out[lo:hi] = ff.transform_columns(tid[lo:hi], t[lo:hi], cust[lo:hi], term[lo:hi],
                                              cents[lo:hi])  # fmt: skip
        ff.evict(int(end))
    return out


__all__ = [
    "FEATURES_VERSION",
    "FRAUD_FEATURE_NAMES",
    "HANDBOOK_FEATURES",
    "LABEL_CONTRACTS",
    "N_FEATURES",
    "PARTS",
    "FraudFeatureConfig",
    "FraudFeatures",
    "feature_columns",
    "featurize_frame",
    "label_columns",
    "tags_of",
    "time_chunks",
    "to_cents",
    "transaction_columns",
]

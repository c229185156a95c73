"""The fraud features in two halves (``FraudFeatures(cfg, part="cards" | "terminals")``), for a
two-stage fleet under the ``fraud_reports`` contract: card columns and habit flags in a cards
stage keyed by customer, terminal columns in a terminals stage keyed by terminal. Bit-identical
to one instance holding both and to the offline features; reports that arrive before their
transactions' entries wait (pending) and count once the entry arrives."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from finscore.features.fraud import (
    FRAUD_FEATURE_NAMES,
    N_FEATURES,
    FraudFeatureConfig,
    FraudFeatures,
    featurize_frame,
)
from finscore.sim.transactions import DAY_MS, TxSimConfig, simulate_frame

# Card testing (drift) included, so every fraud scenario is in the data.
CFG = TxSimConfig(
    n_customers=200,
    n_terminals=300,
    days=60,
    seed=11,
    drift_day=45,
    card_testing_customers_per_day=5,
)
REPORTS = FraudFeatureConfig(label_contract="fraud_reports")
COL = {n: i for i, n in enumerate(FRAUD_FEATURE_NAMES)}
TERMINAL_COLUMNS = [*range(9, 15), *range(19, 23)]
CARD_COLUMNS = [c for c in range(N_FEATURES) if c not in TERMINAL_COLUMNS]


@pytest.fixture(scope="module")
def frame():  # noqa: ANN201
    return simulate_frame(CFG)


@pytest.fixture(scope="module")
def offline(frame):  # noqa: ANN001, ANN201
    return featurize_frame(frame, REPORTS)


def _owner(name: str, salt: bytes, n: int = 2) -> int:
    """Which of ``n`` instances a customer or terminal belongs to (a hash)."""
    return zlib.crc32(salt + name.encode()) % n


class _Replay:
    """The frame's columns, replayed day by day as :func:`featurize_frame` does: each day's
    fraud reports (frauds whose label time falls in it) first, then its transactions in
    uneven batches, then an eviction at the day's end."""

    def __init__(self, frame) -> None:  # noqa: ANN001
        self.tid = frame.transaction_id.astype(str).tolist()
        self.cust = frame.customer_id.astype(str).tolist()
        self.term = frame.terminal_id.astype(str).tolist()
        self.t = np.asarray(frame.event_time, dtype=np.int64)
        self.cents = np.round(np.asarray(frame.amount, dtype=np.float64) * 100).astype(np.int64)
        self.fraud = np.asarray(frame.is_fraud, dtype=bool)
        self.label_t = self.t + REPORTS.label_delay_ms

    def reports(self, sel: np.ndarray) -> tuple:
        """apply_label_columns' arguments for rows ``sel``."""
        pick = sel.tolist()
        return ([self.tid[i] for i in pick], [self.cust[i] for i in pick],
                [self.term[i] for i in pick], self.t[sel], self.label_t[sel], self.fraud[sel],
                self.cents[sel])  # fmt: skip

    def days(self, on_reports, on_batch, on_day_end, seed: int = 1) -> None:  # noqa: ANN001
        t, label_t = self.t, self.label_t
        sizes = iter(np.random.default_rng(seed).integers(1, 600, size=100_000))
        edges = np.arange(t[0] - t[0] % DAY_MS, t[-1] + DAY_MS + 1, DAY_MS)
        j = 0
        for start, end in zip(edges[:-1], edges[1:], strict=False):
            lo, hi = (int(v) for v in np.searchsorted(t, [start, end]))
            jj = int(np.searchsorted(label_t, end))
            if jj > j:
                on_reports(self.reports(np.flatnonzero(self.fraud[j:jj]) + j))
                j = jj
            a = lo
            while a < hi:
                b = min(hi, a + int(next(sizes)))
                on_batch(np.arange(a, b))
                a = b
            on_day_end(int(end))


def _split(replay: _Replay, out: np.ndarray, cards: list[FraudFeatures],
           terms: list[FraudFeatures], rows: np.ndarray) -> None:  # fmt: skip
    """A batch through the two stages: each cards instance computes its customers' rows, which
    go to their terminal's instance in batch order (one call per cards batch and
    destination, as records of a repartition topic would); fills ``out[rows]``."""
    handed: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in terms]
    by_customer = np.array([_owner(replay.cust[i], b"c", len(cards)) for i in rows.tolist()])
    by_terminal = np.array([_owner(replay.term[i], b"t", len(terms)) for i in rows.tolist()])
    for k, f in enumerate(cards):
        mine = by_customer == k
        sub = rows[mine]
        x, below = f.card_columns([replay.tid[i] for i in sub.tolist()], replay.t[sub],
                                  [replay.cust[i] for i in sub.tolist()], replay.cents[sub])  # fmt: skip
        assert x.dtype == np.float32 and below.dtype == np.int64 and len(below) == len(sub)
        assert not x[:, TERMINAL_COLUMNS].any()  # the terminal columns are the other stage's
        for d in range(len(terms)):
            sel = by_terminal[mine] == d
            handed[d].append((sub[sel], x[sel], below[sel]))
    for d, f in enumerate(terms):
        for sub, x, below in handed[d]:  # an empty hand-over included
            f.terminal_columns(x, [replay.tid[i] for i in sub.tolist()], replay.t[sub],
                               [replay.term[i] for i in sub.tolist()], below)  # fmt: skip
            out[sub] = x


def test_two_cards_and_two_terminals_instances_equal_one_instance_and_offline(
    frame,
    offline,  # noqa: ANN001
) -> None:
    """Customers split over two cards instances, terminals over two terminals instances,
    every report read by all: the features are bit for bit those of one instance (through
    transform_columns, or card_columns then terminal_columns) and the offline ones."""
    replay = _Replay(frame)
    whole, halves = FraudFeatures(REPORTS), FraudFeatures(REPORTS)
    cards = [FraudFeatures(REPORTS, part="cards") for _ in range(2)]
    terms = [FraudFeatures(REPORTS, part="terminals") for _ in range(2)]
    everyone = [whole, halves, *cards, *terms]
    n = len(frame)
    got_whole = np.zeros((n, N_FEATURES), dtype=np.float32)
    got_halves, got_split = np.zeros_like(got_whole), np.zeros_like(got_whole)

    def on_reports(args: tuple) -> None:
        for f in everyone:
            f.apply_label_columns(*args)

    def on_batch(rows: np.ndarray) -> None:
        tid, cust = [replay.tid[i] for i in rows], [replay.cust[i] for i in rows]
        term, t, cents = [replay.term[i] for i in rows], replay.t[rows], replay.cents[rows]
        got_whole[rows] = whole.transform_columns(tid, t, cust, term, cents)
        x, below = halves.card_columns(tid, t, cust, cents)
        halves.terminal_columns(x, tid, t, term, below)
        got_halves[rows] = x
        _split(replay, got_split, cards, terms, rows)

    def on_day_end(end: int) -> None:
        for f in everyone:
            f.evict(end)

    replay.days(on_reports, on_batch, on_day_end)
    assert (offline[:, COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]] > 0).sum() > 100
    assert (offline[:, COL["TERMINAL_ID_HABIT_RISK_30DAY_WINDOW"]] > 0).sum() > 100
    assert (offline[:, COL["CUSTOMER_ID_NB_FRAUD_30DAY_WINDOW"]] > 0).sum() > 100
    np.testing.assert_array_equal(got_whole, offline)
    np.testing.assert_array_equal(got_halves, offline)
    np.testing.assert_array_equal(got_split, offline)
    # Each terminals instance holds its own terminals' entries; the reports of the others'
    # terminals wait, pending, until the horizon drops them. A whole instance matches all.
    held = [f.held()["terminal_transactions"] for f in terms]
    assert sum(held) == whole.held()["terminal_transactions"] and min(held) > 0
    assert whole.unmatched_reports == halves.unmatched_reports == 0
    for d, f in enumerate(terms):
        assert f.unmatched_reports > 0
        assert all(_owner(name, b"t") != d for name in f._pending.terminals())
        assert all(_owner(name, b"t") == d for name in f.terminals())
    assert sum(f.held()["customers"] for f in cards) == whole.held()["customers"]
    assert all(f.held()["cards"] == whole.held()["cards"] for f in cards)


def test_reports_known_before_their_transactions_count_once_their_entries_arrive(
    frame,
    offline,  # noqa: ANN001
) -> None:
    """Every report applied before any transaction: each waits for its transaction's entry
    (it counts nowhere before, and then with the entry's habit flag), so the features are the
    offline ones, in one instance and in a cards + terminals pair, and nothing is left
    pending once every transaction has been scored."""
    replay = _Replay(frame)
    early = FraudFeatures(REPORTS)
    cards, terms = FraudFeatures(REPORTS, part="cards"), FraudFeatures(REPORTS, part="terminals")
    every = replay.reports(np.flatnonzero(replay.fraud))
    for f in (early, cards, terms):
        f.apply_label_columns(*every)
    n_reports = int(replay.fraud.sum())
    assert early.unmatched_reports == terms.unmatched_reports == n_reports
    assert early.held()["pending_reports"] == n_reports and early.held()["terminals"] == 0
    assert cards.unmatched_reports == 0 and cards.held()["cards"] == n_reports
    n = len(frame)
    got_early = np.zeros((n, N_FEATURES), dtype=np.float32)
    got_split = np.zeros_like(got_early)

    def on_batch(rows: np.ndarray) -> None:
        tid, cust = [replay.tid[i] for i in rows], [replay.cust[i] for i in rows]
        term, t, cents = [replay.term[i] for i in rows], replay.t[rows], replay.cents[rows]
        got_early[rows] = early.transform_columns(tid, t, cust, term, cents)
        _split(replay, got_split, [cards], [terms], rows)

    def on_day_end(end: int) -> None:
        for f in (early, cards, terms):
            f.evict(end)

    replay.days(lambda args: None, on_batch, on_day_end, seed=2)
    np.testing.assert_array_equal(got_early, offline)
    np.testing.assert_array_equal(got_split, offline)
    assert early.unmatched_reports == terms.unmatched_reports == 0


def _tx(i: str, t: int, amount: float, *, customer: str = "c", terminal: str = "t") -> dict:
    return {"transaction_id": i, "event_time": t, "customer_id": customer,
            "terminal_id": terminal, "amount": amount}  # fmt: skip


def _report(i: str, t: int, *, customer: str = "c", terminal: str = "t") -> dict:
    return {"transaction_id": i, "customer_id": customer, "terminal_id": terminal, "tx_time": t,
            "label_time": t + REPORTS.label_delay_ms, "is_fraud": True, "amount": 10.0}  # fmt: skip


def test_an_orphan_report_never_counts_and_is_forgotten_past_the_horizon() -> None:
    """A report whose transaction never reaches this instance (repeated: held once) counts in
    no terminal window, and is dropped once older than the horizon."""
    t0 = 40 * DAY_MS
    f = FraudFeatures(REPORTS)
    f.transform([_tx("a", t0, 10.0), _tx("b", t0 + 1000, 10.0)])
    for _ in range(2):
        f.apply_labels([_report("ghost", t0 + 500)])
    assert f.unmatched_reports == 1 and f.held()["terminals"] == 0
    f.apply_labels([_report("ghost", t0 + 500, terminal="v")])  # same id, another terminal
    assert f.unmatched_reports == 2
    later = t0 + REPORTS.label_delay_ms + 2000
    row = f.transform([_tx("x", later, 5.0, customer="z")])[0]
    assert row[COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert row[COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 0
    assert row[COL["TERMINAL_ID_HABIT_RISK_1DAY_WINDOW"]] == 0
    assert row[COL["TERMINAL_ID_HABIT_FRAUD_STREAK"]] == 0
    edge = t0 + 500 + REPORTS.horizon_ms + DAY_MS
    f.evict(edge - 1)
    assert f.unmatched_reports == 2
    f.evict(edge)
    assert f.unmatched_reports == 0 and f.held()["pending_reports"] == 0


def test_pending_reports_take_the_habit_flag_of_the_entry_that_arrives() -> None:
    """In a terminals part, reports (one repeated) wait for their entries, then count with
    the entries' habit flags, whichever path brings them: rows restored by add_terminal_rows,
    another worker's entries (add_terminal_entries), or rows scored (terminal_columns)."""
    t0 = 40 * DAY_MS
    terms = FraudFeatures(REPORTS, part="terminals")
    reports = [_report("a", t0), _report("b", t0 + 1), _report("c", t0 + 2, terminal="u")]
    terms.apply_labels([*reports, reports[0]])
    assert terms.unmatched_reports == 3
    terms.add_terminal_rows(["a", "b"], np.array([t0, t0 + 1]), ["t", "t"], np.array([1, 0]))
    assert terms.unmatched_reports == 1 and terms.held()["terminals"] == 2
    other = FraudFeatures(REPORTS, share_entries=True)  # a fleet worker scoring "c"
    other.transform([_tx("c", t0 + 2, 10.0, terminal="u")])
    assert terms.add_terminal_entries([v for _, v in other.take_terminal_entries()]) == 0
    assert terms.unmatched_reports == 0 and terms.held()["terminals"] == 3
    terms.apply_labels([reports[0]])  # a repeat once matched: idempotent as well
    assert terms.held()["terminals"] == 3
    later = t0 + REPORTS.label_delay_ms + 10
    x = np.zeros((2, N_FEATURES), dtype=np.float32)
    terms.terminal_columns(x, ["y", "z"], np.array([later, later]), ["t", "u"], np.array([1, 1]))
    assert x[0, COL["TERMINAL_ID_NB_TX_1DAY_WINDOW"]] == 2
    assert x[0, COL["TERMINAL_ID_RISK_1DAY_WINDOW"]] == 1
    assert x[0, COL["TERMINAL_ID_HABIT_RISK_1DAY_WINDOW"]] == 0.5  # "a" within its habit
    assert x[1, COL["TERMINAL_ID_HABIT_RISK_1DAY_WINDOW"]] == 1  # "c": a 10.00 first spend
    assert not x[:, CARD_COLUMNS].any()  # the card columns are left as they were
    # and the entry scored here matches a report that came first
    terms.apply_labels([_report("w", t0 + 5)])
    assert terms.unmatched_reports == 1
    terms.terminal_columns(np.zeros((1, N_FEATURES), np.float32), ["w"], np.array([t0 + 5]),
                           ["t"], np.array([0]))  # fmt: skip
    assert terms.unmatched_reports == 0 and terms.held()["terminals"] == 4
    assert terms.watermark_ms() > 0 and terms.latest_ms == later  # the terminals part's clock


def test_many_pending_reports_survive_merges_repeats_evictions_and_renumbering() -> None:
    """Thousands of pending reports over many terminals, added in batches and repeated: each
    is held once, the horizon drops the old ones (and their terminals), and the others still
    find their entries, by terminal, time and tag."""
    n = 5000
    ids, names = [f"r{i}" for i in range(n)], [f"term{i}" for i in range(n)]
    t = 40 * DAY_MS + np.arange(n, dtype=np.int64) * 1000
    reports = [_report(ids[i], int(t[i]), terminal=names[i]) for i in range(n)]
    terms = FraudFeatures(REPORTS, part="terminals")
    for a in range(0, n, 700):
        terms.apply_labels(reports[a : a + 700])
    terms.apply_labels(reports[::3])  # repeats of reports held in either run
    assert terms.unmatched_reports == n
    terms.evict(int(t[3999]) + REPORTS.horizon_ms + DAY_MS)  # the first 4000 are too old
    assert terms.unmatched_reports == 1000
    terms.add_terminal_rows(ids[-1:], t[-1:] + 1, names[-1:], np.ones(1, np.int64))
    assert terms.unmatched_reports == 1000  # same id and terminal, another time: not its entry
    terms.add_terminal_rows(ids[-1:], t[-1:], names[-2:-1], np.ones(1, np.int64))
    assert terms.unmatched_reports == 1000  # same id and time, another terminal
    terms.add_terminal_rows(ids, t, names, np.ones(n, np.int64))
    assert terms.unmatched_reports == 0
    assert sorted(terms.terminals()) == sorted(names[4000:])
    assert terms.held()["terminals"] == 1000


def test_parts_are_validated_and_hold_only_their_half() -> None:
    with pytest.raises(ValueError, match="part must be one of"):
        FraudFeatures(REPORTS, part="both")
    for part in ("cards", "terminals"):
        with pytest.raises(ValueError, match="fraud_reports label contract.*every label"):
            FraudFeatures(FraudFeatureConfig(), part=part)
    with pytest.raises(ValueError, match="fraud_reports"):
        FraudFeatures().card_columns(["a"], np.array([1]), ["c"], np.array([100]))
    cards, terms = FraudFeatures(REPORTS, part="cards"), FraudFeatures(REPORTS, part="terminals")
    assert cards.part == "cards" and terms.part == "terminals"
    t0 = 40 * DAY_MS
    t = np.array([t0, t0 + 1])
    x, below = cards.card_columns(["a", "b"], t, ["c", "d"], np.array([1000, 2000]))
    terms.terminal_columns(x, ["a", "b"], t, ["t", "u"], below)
    for f in (cards, terms):
        f.apply_labels([_report("a", t0, customer="c")])
        f.evict()
        f.evict(t0)
        assert f.accepts_label_times(t).all() and f.accepts_times(t).all()
        assert f.watermark_ms() == t0 and f.latest_ms == t0 + 1
        with pytest.raises(ValueError, match="card_columns in the cards part"):
            f.transform([_tx("e", t0 + 2, 1.0)])
    assert cards.held() == {"customers": 2, "cards": 1}
    assert terms.held() == {"terminals": 1, "terminal_transactions": 2, "pending_reports": 0}
    assert set(cards.oldest()) == {"customers", "cards"} and set(terms.oldest()) == {"terminals"}
    assert cards.customers() == ["c", "d"] and cards.terminals() == []
    assert terms.customers() == [] and terms.terminals() == ["t"]
    assert cards.unmatched_reports == 0 and cards.take_terminal_entries() == []
    with pytest.raises(ValueError, match="terminal state"):
        cards.terminal_columns(x, ["a", "b"], t, ["t", "u"], below)
    with pytest.raises(ValueError, match="terminal state"):
        cards.add_terminal_rows(["a"], t[:1], ["t"], below[:1])
    with pytest.raises(ValueError, match="terminal state"):
        cards.add_terminal_entries([])
    with pytest.raises(ValueError, match="customer state"):
        terms.card_columns(["a"], t[:1], ["c"], np.array([1000]))
    for call in (
        lambda: terms.find_conflicts(["a"], t[:1], ["c"], np.array([1000])),
        lambda: terms.take_changes({"c": 0}),
        lambda: terms.add_changes([]),
        lambda: terms.forget_changes(["c"]),
        lambda: terms.snapshot_customers(["c"]),
        lambda: terms.restore_customers({}),
    ):
        with pytest.raises(ValueError, match="customer state"):
            call()
    with pytest.raises(ValueError, match=r"out must be \[2, 23\]"):
        terms.terminal_columns(x[:1], ["a", "b"], t, ["t", "u"], below)

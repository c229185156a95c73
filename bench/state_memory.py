"""Memory of a fraud worker's feature state per card and per terminal, measured at scale.

    .venv/bin/python bench/state_memory.py [--cards 100000,200000,500000] \\
        [--contract all_outcomes] [--json-out F]

The density comes from the simulator (:func:`finscore.sim.transactions.simulate_frame`, 5,000
cards × 60 days): transactions per card per day, the fraud share, and its terminals per card
(``--terminals-per-card``, default the simulator's 2). Then, for each card count, in a fresh
process (so the RSS delta is that state's alone), a :class:`FraudFeatures` state is built the
way a worker builds it: ``--days`` (39) of synthetic transactions in time order, in chunks of
``--chunk-hours``, each chunk through ``transform_columns`` (string ids, amounts in cents, as
the columnar decoder gives them), its delayed outcomes (``label_delay`` = 7 days later) through
``apply_label_columns`` before the transactions that follow their label time (under
``fraud_reports`` only the frauds), the changes taken at every chunk as a commit does, and
``evict`` at every day's end. After 39 days the stores hold what a worker in steady state holds:
31 days of its customers' transactions and 32 days of known outcomes (horizon 38 days + 1).

Reported per card count: entries and array bytes (``nbytes`` of every array the stores hold,
prefix-sum caches and tag filters included) per store, key-name bytes (dict + list + str
objects), the process RSS delta (after ``gc`` and ``malloc_trim``), bytes per card (customer
store + card-outcome store) and per terminal (terminal stores), then, on that state, worker-
sized batches (5,000 transactions with the pipeline's duplicate check ``find_conflicts``,
then their 5,000 outcomes: µs a row, median of 5) and the ``FSM1`` changelog
bytes per transaction (``take_changes`` over 6 partitions after one second of transactions at
``--commit-tx``). Customer-card cards are uniform per card: each card's mean rate is U(0, 4)
a day as in the simulator, so the total matches it. A linear fit of bytes against cards closes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import subprocess
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finscore.features.fraud import DAY_MS, FraudFeatureConfig, FraudFeatures
from finscore.features.timestore import TimeStore

HOUR_MS = 3_600_000
START_MS = 1_530_403_200_000  # 2018-07-01 00:00 UTC
PARTITIONS = 6


@dataclass(frozen=True)
class Density:
    """What the simulator does per card: transactions a day, fraud share, terminals a card."""

    tx_per_card_day: float
    fraud_share: float
    terminals_per_card: float
    sim_cards: int
    sim_days: int


def sim_density(
    cards: int = 5000, days: int = 60, terminals_per_card: float | None = None
) -> Density:
    """The simulator's mean transactions per card per day and fraud share (its default world:
    ``cards`` cards, twice as many terminals)."""
    from finscore.sim.transactions import TxSimConfig, simulate_frame

    cfg = TxSimConfig(n_customers=cards, n_terminals=2 * cards, days=days, seed=0)
    frame = simulate_frame(cfg)
    return Density(
        tx_per_card_day=len(frame) / (cards * days),
        fraud_share=float(np.mean(frame.is_fraud)),
        terminals_per_card=cfg.n_terminals / cards
        if terminals_per_card is None
        else terminals_per_card,
        sim_cards=cards,
        sim_days=days,
    )


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS shows what
    is live."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def store_bytes(store: TimeStore) -> dict[str, int]:
    """Bytes a :class:`TimeStore` holds: its entries (int64 columns of both runs), prefix-sum
    caches, tag filter, unreported changes, and its key names (dict + list + str objects)."""
    entries = prefix = 0
    for run in store._runs:
        entries += run.keys.nbytes + run.tags.nbytes + run.times.nbytes
        entries += sum(v.nbytes for v in run.values.values())
        prefix += sum(p.nbytes for p in run._prefix.values())
    names = sys.getsizeof(store._index) + sys.getsizeof(store._names)
    names += sum(map(sys.getsizeof, store._names))
    return {
        "entries": len(store),
        "keys": len(store._names),
        "entry_bytes": entries,
        "prefix_bytes": prefix,
        "tag_filter_bytes": 0 if store._tag_filter is None else store._tag_filter.nbytes,
        "changes_bytes": sum(c.nbytes for c in store._changes),
        "name_bytes": names,
    }


def total(parts: dict[str, int]) -> int:
    return sum(v for k, v in parts.items() if k.endswith("_bytes"))


class Feed:
    """Synthetic transactions at the simulator's density, chunk by chunk in time order."""

    def __init__(self, cards: int, terminals: int, d: Density, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.cards, self.terminals, self.d = cards, terminals, d
        rate = self.rng.uniform(0, 4, cards)  # the simulator's per-card mean a day
        self.cum = np.cumsum(rate / rate.sum())
        self.mean_cents = self.rng.uniform(500, 10_000, cards)
        self.next_id = 0

    def chunk(self, a: int, b: int) -> dict[str, Any]:
        """Transactions with event times in [a, b): columns as the worker's decoder gives them."""
        rng = self.rng
        n = int(rng.poisson(self.cards * self.d.tx_per_card_day * (b - a) / DAY_MS))
        t = np.sort(rng.integers(a, b, n))
        cust = np.minimum(np.searchsorted(self.cum, rng.random(n)), self.cards - 1)
        cents = np.abs(rng.normal(self.mean_cents[cust], self.mean_cents[cust] / 2))
        ids = range(self.next_id, self.next_id + n)
        self.next_id += n
        return {
            "transaction_id": list(map(str, ids)),
            "event_time": t,
            "customer_id": list(map(str, cust.tolist())),
            "terminal_id": list(map(str, rng.integers(0, self.terminals, n).tolist())),
            "amount_cents": np.maximum(cents.astype(np.int64), 1),
            "is_fraud": rng.random(n) < self.d.fraud_share,
        }


def apply_labels(ff: FraudFeatures, tx: dict[str, Any], delay: int, reports_only: bool) -> int:
    """The chunk's outcomes, known ``delay`` after each transaction (frauds only under
    ``fraud_reports``); returns how many were applied."""
    sel = np.flatnonzero(tx["is_fraud"]) if reports_only else np.arange(len(tx["event_time"]))
    pick = sel.tolist()
    t = tx["event_time"][sel]
    ff.apply_label_columns(
        [tx["transaction_id"][i] for i in pick],
        [tx["customer_id"][i] for i in pick],
        [tx["terminal_id"][i] for i in pick],
        t,
        t + delay,
        tx["is_fraud"][sel],
        tx["amount_cents"][sel],
    )
    return len(sel)


def transform(ff: FraudFeatures, tx: dict[str, Any], rows: slice | None = None) -> None:
    s = rows or slice(None)
    ff.transform_columns(tx["transaction_id"][s], tx["event_time"][s], tx["customer_id"][s],
                         tx["terminal_id"][s], tx["amount_cents"][s])  # fmt: skip


def partition_of(customers: Iterable[str]) -> dict[str, int]:
    return {c: zlib.crc32(c.encode()) % PARTITIONS for c in customers}


def measure(cards: int, d: Density, *, contract: str, days: int, chunk_hours: int,
            commit_tx: int, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Build the state of one worker for ``cards`` cards and measure it (see the module
    docstring)."""
    terminals = max(1, round(cards * d.terminals_per_card))
    feed = Feed(cards, terminals, d, seed)
    cfg = FraudFeatureConfig(label_contract=contract, time_origin_ms=START_MS - 400 * DAY_MS)
    delay = cfg.label_delay_ms
    trim()
    rss0 = rss_bytes()
    ff = FraudFeatures(cfg)
    pending: deque[tuple[int, dict[str, Any]]] = deque()  # (label time of the chunk's end, tx)
    step = chunk_hours * HOUR_MS
    now = START_MS
    end = START_MS + days * DAY_MS
    n_tx = n_labels = 0
    t0 = time.perf_counter()
    while now < end:
        while pending and pending[0][0] <= now:
            n_labels += apply_labels(ff, pending.popleft()[1], delay, cfg.reports_only)
        tx = feed.chunk(now, now + step)
        transform(ff, tx)
        ff.take_changes({})  # what a commit does (records not kept here)
        n_tx += len(tx["event_time"])
        now += step
        pending.append((now + delay, tx))
        if (now - START_MS) % DAY_MS == 0:
            ff.evict(now)
    build_s = time.perf_counter() - t0
    # Worker-sized batches on the steady state (they also fill the prefix caches, as a live
    # worker's queries keep them): 5,000 labels, then 5,000 transactions, several times.
    batch_us: dict[str, list[float]] = {"tx_5000": [], "labels_5000": []}
    for _ in range(5):
        while pending and pending[0][0] <= now:
            n_labels += apply_labels(ff, pending.popleft()[1], delay, cfg.reports_only)
        nxt = feed.chunk(now, now + 5000 * DAY_MS // max(1, round(cards * d.tx_per_card_day)))
        k = len(nxt["event_time"])
        t1 = time.perf_counter()
        ff.find_conflicts(nxt["transaction_id"], nxt["event_time"], nxt["customer_id"],
                          nxt["amount_cents"])  # the pipeline's duplicate check  # fmt: skip
        transform(ff, nxt)
        batch_us["tx_5000"].append((time.perf_counter() - t1) / max(k, 1) * 1e6)
        t1 = time.perf_counter()
        m = apply_labels(ff, nxt, 0, cfg.reports_only)  # outcomes known at once: same stores
        batch_us["labels_5000"].append((time.perf_counter() - t1) / max(m, 1) * 1e6)
        now = int(nxt["event_time"].max()) + 1 if k else now + 1
        ff.take_changes({})
    # One commit interval's changelog: commit_tx transactions, then take_changes per partition.
    tx = feed.chunk(now, now + commit_tx * DAY_MS // max(1, round(cards * d.tx_per_card_day)))
    for a in range(0, len(tx["event_time"]), 5000):
        transform(ff, tx, slice(a, a + 5000))
    t1 = time.perf_counter()
    records = ff.take_changes(partition_of(set(tx["customer_id"])))
    flush_ms = (time.perf_counter() - t1) * 1e3
    changelog = sum(len(r) for _, r in records)
    n_commit = len(tx["event_time"])
    del tx, nxt, pending
    trim()
    rss = rss_bytes() - rss0
    stores = {"customers": store_bytes(ff._spend), "cards": store_bytes(ff._cards),
              "terminals": store_bytes(ff._terminals)}  # fmt: skip
    if ff._term_tx is not None:
        stores["terminal_transactions"] = store_bytes(ff._term_tx)
    per_store = {k: total(v) for k, v in stores.items()}
    card_bytes = per_store["customers"] + per_store["cards"]
    term_bytes = per_store["terminals"] + per_store.get("terminal_transactions", 0)
    arrays = sum(per_store.values())
    return {
        "cards": cards,
        "terminals": terminals,
        "contract": contract,
        "transactions_fed": n_tx,
        "labels_applied": n_labels,
        "build_s": round(build_s, 1),
        "stores": stores,
        "state_bytes": arrays,
        "rss_delta_bytes": rss,
        "bytes_per_card": card_bytes / cards,
        "bytes_per_terminal": term_bytes / terminals,
        "rss_per_card_and_its_terminals": rss / cards,
        "bytes_per_entry": {
            k: (v / stores[k]["entries"] if stores[k]["entries"] else 0.0)
            for k, v in per_store.items()
        },  # fmt: skip
        "entries_per_card": stores["customers"]["entries"] / cards,
        "batch_us_per_row_median": {k: float(np.median(v)) for k, v in batch_us.items()},
        "changelog_records": len(records),
        "changelog_bytes_per_tx": changelog / max(n_commit, 1),
        "changelog_tx": n_commit,
        "changelog_flush_ms": round(flush_ms, 2),
    }


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a·x + b; returns (a, b, R²)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2:
        return (float(y[0] / x[0]) if len(x) else 0.0), 0.0, 1.0
    a, b = np.polyfit(x, y, 1)
    res = y - (a * x + b)
    tot = ((y - y.mean()) ** 2).sum()
    return float(a), float(b), float(1 - (res**2).sum() / tot) if tot else 1.0


def table(results: list[dict[str, Any]], d: Density) -> str:
    """The Markdown tables of a run."""
    mb = 1 << 20
    lines = [
        f"Density (simulator, {d.sim_cards:,} cards × {d.sim_days} days): "
        f"{d.tx_per_card_day:.3f} transactions per card a day ({30 * d.tx_per_card_day:.1f} per "
        f"30 days), fraud share {d.fraud_share:.4f}, {d.terminals_per_card:g} terminals per card.",
        "",
        "| cards | terminals | contract | entries (customers / cards / terminals"
        + (" / terminal tx" if any("terminal_transactions" in r["stores"] for r in results) else "")
        + ") | arrays MiB | RSS Δ MiB | B/card | B/terminal | RSS B/card | build s |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        st = r["stores"]
        ent = " / ".join(f"{st[k]['entries'] / 1e6:.1f}M" for k in st)
        lines.append(
            f"| {r['cards']:,} | {r['terminals']:,} | {r['contract']} | {ent} | "
            f"{r['state_bytes'] / mb:,.0f} | {r['rss_delta_bytes'] / mb:,.0f} | "
            f"{r['bytes_per_card']:,.0f} | {r['bytes_per_terminal']:,.0f} | "
            f"{r['rss_per_card_and_its_terminals']:,.0f} | {r['build_s']:.0f} |"
        )
    lines += ["", "| cards | store | entries | B/entry (arrays + caches) | names MiB | tag filter MiB |",
              "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        for k, s in r["stores"].items():
            lines.append(
                f"| {r['cards']:,} | {k} | {s['entries']:,} | {r['bytes_per_entry'][k]:.1f} | "
                f"{s['name_bytes'] / mb:.1f} | {s['tag_filter_bytes'] / mb:.0f} |"
            )
    lines += ["", "| cards | tx batch of 5,000 µs/tx | label batch of 5,000 µs/label | "
              "changelog B/tx (FSM1) | records | flush ms |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        b = r["batch_us_per_row_median"]
        lines.append(
            f"| {r['cards']:,} | {b['tx_5000']:.2f} | {b['labels_5000']:.2f} | "
            f"{r['changelog_bytes_per_tx']:.1f} (of {r['changelog_tx']:,} tx) | "
            f"{r['changelog_records']} | {r['changelog_flush_ms']:.1f} |"
        )
    if len(results) >= 2:
        cs = [r["cards"] for r in results]
        a, b, r2 = fit(cs, [r["state_bytes"] for r in results])
        ar, br, r2r = fit(cs, [r["rss_delta_bytes"] for r in results])
        lines += ["", f"Linear fit, arrays: {a:,.0f} B/card + {b / mb:,.0f} MiB (R² {r2:.5f}); "
                  f"RSS: {ar:,.0f} B/card + {br / mb:,.0f} MiB (R² {r2r:.5f}). "
                  f"At 10M cards: arrays {(a * 1e7 + b) / (1 << 30):,.0f} GiB, "
                  f"RSS {(ar * 1e7 + br) / (1 << 30):,.0f} GiB."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", default="100000,200000,500000",
                    help="comma-separated card counts, each measured in its own process")  # fmt: skip
    ap.add_argument("--contract", default="all_outcomes", choices=("all_outcomes", "fraud_reports"))
    ap.add_argument("--days", type=int, default=39, help="simulated days fed (39: steady state)")
    ap.add_argument("--chunk-hours", type=int, default=6)
    ap.add_argument("--commit-tx", type=int, default=5000,
                    help="transactions in the commit interval whose changelog is measured")  # fmt: skip
    ap.add_argument("--terminals-per-card", type=float, default=None)
    ap.add_argument("--sim-cards", type=int, default=5000)
    ap.add_argument("--max-rss-gb", type=float, default=16.0,
                    help="skip card counts whose estimated RSS is above this")  # fmt: skip
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--density", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:  # child: one card count, JSON on stdout
        d = Density(**json.loads(args.density))
        r = measure(args.one, d, contract=args.contract, days=args.days,
                    chunk_hours=args.chunk_hours, commit_tx=args.commit_tx)  # fmt: skip
        print(json.dumps(r))
        return
    d = sim_density(args.sim_cards, terminals_per_card=args.terminals_per_card)
    print(f"density: {d}", flush=True)
    results: list[dict[str, Any]] = []
    per_card = 0.0
    for cards in (int(c) for c in args.cards.split(",")):
        if per_card and per_card * cards / (1 << 30) > args.max_rss_gb:
            print(f"skipped {cards:,} cards: ~{per_card * cards / (1 << 30):.1f} GiB estimated "
                  f"> --max-rss-gb {args.max_rss_gb}", flush=True)  # fmt: skip
            continue
        cmd = [sys.executable, __file__, "--one", str(cards), "--density", json.dumps(asdict(d)),
               "--contract", args.contract, "--days", str(args.days),
               "--chunk-hours", str(args.chunk_hours), "--commit-tx", str(args.commit_tx)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        per_card = max(per_card, r["rss_delta_bytes"] / cards)
        results.append(r)
        print(f"{cards:,} cards: arrays {r['state_bytes'] / 2**20:,.0f} MiB, RSS Δ "
              f"{r['rss_delta_bytes'] / 2**20:,.0f} MiB, {r['build_s']:.0f} s", flush=True)  # fmt: skip
    print(table(results, d))
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"density": asdict(d), "runs": results}, indent=2)
        )


if __name__ == "__main__":
    main()

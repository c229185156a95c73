"""Per-component cost of the fraud pipeline per transaction, and a fleet cost model built on it.

    FINSCORE_REGISTRY_DIR=var/registry .venv/bin/python bench/cost_model.py \\
        [--transactions 100000] [--batch 5000] [--repeat 3] [--json-out F]

Measured in one process on the pure pipeline (no broker), on the setup of
``bench/fraud_pipeline_bench.py`` (its simulated, Avro-encoded transactions and labels, 5,000
cards, 10,000 terminals; the registry's fraud champion): each run warms a fresh
``FraudPipeline`` + ``LabelsPipeline`` on the first half, labels applied as they become known,
then times the second half in batches of ``--batch`` with a CPU timer around every stage:

- ``decode`` (``FraudPipeline.decode``), ``validate`` (the bounds stage) and ``duplicates``
  (the ``find_conflicts`` stage), ``features`` (``transform_columns``), ``inference`` (the
  model's ``select`` + ``score_batch``), ``encode`` (the flags), ``other`` (the rest of
  ``process``: output records, dead-letter bookkeeping); ``changelog flush``
  (``flush_state`` every ``--flush-every`` batches, as a commit does);
- per label: ``label decode+validate`` and ``label apply`` (``apply_label_columns``);
- per batch (fixed): ``process`` on batches of 1 … 5,000 fitted as a + b·n, likewise labels;
- per terminal entry (``fraud_reports`` fleets): ``add_terminal_entries`` of another worker's
  ``FTE1`` records into a warm state; ``evict`` (every 30 s in a worker).

The same for both label contracts (``all_outcomes``: every outcome; ``fraud_reports``: the
frauds only, features under that contract). Medians of ``--repeat`` runs. Then two in-process
"fleets" (1 worker with every partition; 2 workers with 3 partitions each, every worker applying
every label) validate the model's shape: measured CPU seconds per worker against the model's.

Every timer counts this process's CPU seconds (``time.process_time``), so what other
processes take of a shared machine is not counted; the pipeline's tx/s is wall time.

The cost model (per worker, CPU seconds per second; ``c_*`` in seconds a row, ``a_*`` a batch;
broker client costs from docs/BENCHMARKS.md: ``c_produce`` 1.6 µs a record, ``c_consume``
0.53 µs)::

    T(N, P, R, L) = R/N · (c_tx + c_consume + c_produce)        # own transactions, full batches
                  + L · (c_label + c_consume) + min(L, loops/s) · a_label   # every label
                  + R·(N−1)/N · c_entry                         # fraud_reports: others' entries
                  + P/N · commits/s · c_produce + c_evict / 30 s

with ``L = R`` (all_outcomes: every worker applies every label) or ``L = f·R`` (fraud_reports:
every worker applies every report *and* every other worker's terminal entry), ``loops/s =
max(R/N / batch, 1/commit interval)``. A worker is full at ``T = --utilisation`` of a core and
``N ≤ P``; as N grows T falls to the label-side floor ``L·c_label`` (+ ``R·c_entry``), so the
fleet's rate is capped at ``utilisation / (c_label + …)`` whatever N. The memory side: every
worker holds every outcome of 32 days (or every terminal's transactions of 39 days), per entry
the bytes ``bench/state_memory.py`` measured (:data:`B_ENTRY`). With ``--state-json`` the
model is also evaluated with the feature and label-apply costs measured there on the largest
state (they grow with the state), and ``c_entry`` at least :data:`C_ENTRY_AT_SCALE`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fraud_pipeline_bench as fpb  # noqa: E402  (bench/ is a folder of scripts)

from finscore.features.fraud import FraudFeatureConfig, FraudFeatures  # noqa: E402
from finscore.schemas.codec import Codec  # noqa: E402
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline  # noqa: E402
from finscore.streams.hot_swap import ModelSlot  # noqa: E402
from finscore.streams.scoring import Scorer  # noqa: E402
from finscore.streams.transport import Message  # noqa: E402

# Broker-side costs per record from docs/BENCHMARKS.md / ARCHITECTURE.md (this machine, embedded
# broker): confluent-kafka produces ~260K small messages/s (3.8 µs; 1.6 µs a record with the
# worker's positional produce), consumes ~1.9M/s in batches of 5,000 (0.53 µs).
C_PRODUCE = 1.6e-6
C_CONSUME = 1.0 / 1.9e6
DAY_S = 86_400
# Bytes per entry measured by bench/state_memory.py (arrays + prefix caches; all_outcomes:
# customers, cards, terminals), used for the memory side of the model.
# customers, cards, terminals: all_outcomes at 500,000 cards; terminal transactions:
# fraud_reports at 100,000 cards.
B_ENTRY = {"customers": 57.8, "cards": 81.5, "terminals": 91.1, "terminal_transactions": 35.8}
# add_terminal_entries per entry with 1M entries held (docs/ARCHITECTURE.md, "Labels"): 5–7 µs;
# the at-scale model uses at least this (this script measures it on a small state).
C_ENTRY_AT_SCALE = 5e-6

Timers = dict[str, list[float]]


def _timed(fn: Callable, timers: dict[str, float], name: str) -> Callable:
    """``fn`` adding its CPU seconds (this process's, so time lost to other processes on a
    shared machine is not counted) to ``timers[name]``."""

    def run(*a: Any, **k: Any) -> Any:
        t0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            timers[name] += time.process_time() - t0

    return run


def instrument(pipe: FraudPipeline, labels: LabelsPipeline, timers: dict[str, float]) -> None:
    """Timers around each stage of ``pipe`` and ``labels`` (instance attributes only)."""
    ff = pipe.features
    pipe.decode = _timed(pipe.decode, timers, "decode")  # type: ignore[method-assign]
    stage_names = {"ImpossibleValue": "validate", "DuplicateTransactionId": "duplicates"}
    checks = pipe.checks
    pipe.checks = lambda: [(e, _timed(s, timers, stage_names.get(e, e))) for e, s in checks()]  # type: ignore[method-assign]
    ff.transform_columns = _timed(ff.transform_columns, timers, "features")  # type: ignore[method-assign]
    live = pipe.slot.live
    assert live is not None
    live.select = _timed(live.select, timers, "inference")  # type: ignore[method-assign]
    live.score_batch = _timed(live.score_batch, timers, "inference")  # type: ignore[method-assign]
    pipe.flags.encode = _timed(pipe.flags.encode, timers, "encode")  # type: ignore[method-assign]
    pipe.process = _timed(pipe.process, timers, "process")  # type: ignore[method-assign]
    pipe.flush_state = _timed(pipe.flush_state, timers, "changelog flush")  # type: ignore[method-assign]
    labels.process = _timed(labels.process, timers, "labels")  # type: ignore[method-assign]
    ff.apply_label_columns = _timed(ff.apply_label_columns, timers, "label apply")  # type: ignore[method-assign]


def messages(
    n: int, customers: int | None = None
) -> tuple[list[Message], list[Message], list[int]]:
    """(transactions, labels, labels known before each transaction): ``fraud_pipeline_bench``'s
    data (5,000 cards), or the same events of a smaller simulated world of ``customers`` cards
    (twice as many terminals, 30 days: tests)."""
    if customers is None:
        return fpb.messages(n)
    from finscore.sim.transactions import TransactionSimulator, TxSimConfig

    sim = TransactionSimulator(TxSimConfig(n_customers=customers, n_terminals=2 * customers,
                                           days=30, seed=7))  # fmt: skip
    tx_codec, lab_codec = Codec("transaction"), Codec("fraud_label")
    txs: list[Message] = []
    labels: list[Message] = []
    known_before: list[int] = []
    for kind, rec in sim.events():
        key = rec["customer_id"].encode()
        if kind == "transaction":
            p = zlib.crc32(key) % 6
            txs.append(Message("transactions", p, len(txs), key, tx_codec.encode(rec), 1))
            known_before.append(len(labels))
            if len(txs) >= n:
                break
        else:
            labels.append(Message("fraud-labels", 0, len(labels), key, lab_codec.encode(rec), 1))
    return txs, labels, known_before


def _reports_only(labels: list[Message]) -> list[Message]:
    codec = Codec("fraud_label")
    return [m for m in labels if m.value is not None and codec.decode(m.value)["is_fraud"]]


def _known(labels: list[Message], all_labels: list[Message], known_before: list[int]) -> list[int]:
    """``known_before`` re-indexed for a subset of the labels (kept in order)."""
    pos = {id(m): i for i, m in enumerate(all_labels)}
    idx = np.array([pos[id(m)] for m in labels], dtype=np.int64)
    return np.searchsorted(idx, np.asarray(known_before), "left").tolist()


def run_once(champion, data, *, batch: int, flush_every: int, contract: str,  # noqa: ANN001
             partitions: set[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """One timed run (see the module docstring); ``partitions``: the input partitions this
    worker owns (None: all), labels all applied. Returns totals (s) and counts."""
    txs, labels, known_before = data
    if contract == "fraud_reports":
        kept = _reports_only(labels)
        known_before, labels = _known(kept, labels, known_before), kept
    cfg = FraudFeatureConfig(label_contract=contract)
    ff = FraudFeatures(cfg)
    pipe = FraudPipeline(ff, ModelSlot(Scorer(champion)), "fraud-flags", changelog_topic="state")
    lab = LabelsPipeline(ff)
    half = len(txs) // 2
    applied = 0
    mine = [partitions is None or m.partition in partitions for m in txs]
    timers: dict[str, float] = defaultdict(float)
    counts = {"tx": 0, "labels": 0, "batches": 0, "flushes": 0, "label_batches": 0}

    def step(a: int, b: int, timed: bool) -> None:
        nonlocal applied
        if known_before[a] > applied:
            lab.process(labels[applied : known_before[a]])
            if timed:
                counts["labels"] += known_before[a] - applied
                counts["label_batches"] += 1
            applied = known_before[a]
        own = [m for m, ok in zip(txs[a:b], mine[a:b], strict=True) if ok]
        if own:
            pipe.process(own)
            if timed:
                counts["tx"] += len(own)
                counts["batches"] += 1

    for a in range(0, half, batch):
        step(a, min(half, a + batch), False)
    pipe.flush_state()
    instrument(pipe, lab, timers)
    cpu0, t0 = time.process_time(), time.perf_counter()  # CPU, and wall for tx/s
    for k, a in enumerate(range(half, len(txs), batch)):
        step(a, min(len(txs), a + batch), True)
        if (k + 1) % flush_every == 0:
            pipe.flush_state()
            counts["flushes"] += 1
    pipe.flush_state()
    counts["flushes"] += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t1 = time.process_time()
    ff.evict()
    evict = time.process_time() - t1
    return {"timers": dict(timers), "counts": counts, "wall": wall, "cpu": cpu, "evict_s": evict,
            "held": ff.held(), "pipe": pipe, "labels": lab}  # fmt: skip


def fixed_costs(pipe: FraudPipeline, lab: LabelsPipeline, txs: list[Message],
                labels: list[Message]) -> dict[str, Any]:  # fmt: skip
    """Per-batch fixed cost and per-row cost (CPU) of ``process`` (a + b·n through the medians
    of batches of 1 and 5,000 transactions; 10 … 1,000 are kept for the record) and of the
    labels path, on rows the state has not seen."""
    out: dict[str, Any] = {}
    for name, fn, rows in (("tx", pipe.process, txs), ("label", lab.process, labels)):
        xs, ys, at = [], [], 0
        for n in (1, 10, 100, 1000, 5000):
            times = []
            for _ in range(5 if n < 5000 else 2):
                part = rows[at : at + n]  # fresh rows every time (a replay is another path)
                at += n
                if len(part) < n:
                    break
                t0 = time.process_time()
                fn(part)
                times.append(time.process_time() - t0)
            if times:
                xs.append(n)
                ys.append(statistics.median(times))
        if len(xs) < 2:
            out.update({f"{name}_batch_fixed_s": ys[0] if ys else 0.0,
                        f"{name}_per_row_s": 0.0, f"{name}_batch1_s": ys[0] if ys else 0.0})  # fmt: skip
            continue
        # Two points, not a least-squares line (the big batches' noise would move the
        # intercept by milliseconds): a batch of one is the fixed cost, the largest the slope.
        b = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
        out[f"{name}_batch_fixed_s"] = float(max(ys[0] - b, 0.0))
        out[f"{name}_per_row_s"] = float(b)
        out[f"{name}_batch1_s"] = float(ys[0])
        out[f"{name}_batch_sizes"] = xs
        out[f"{name}_batch_s"] = ys
    return out


def entry_cost(data) -> dict[str, float]:  # noqa: ANN001
    """Seconds per terminal entry of ``add_terminal_entries`` (another worker's ``FTE1``
    records, applied to a warm ``fraud_reports`` state), and ``FTE1`` bytes per entry."""
    txs, _, _ = data
    decode = FraudPipeline(FraudFeatures(), ModelSlot(), "x").decode
    cols, _ = decode(txs)
    owner = np.array([zlib.crc32(c.encode()) % 2 for c in cols.customer_id])
    cfg = FraudFeatureConfig(label_contract="fraud_reports")
    a, b = FraudFeatures(cfg, share_entries=True), FraudFeatures(cfg, share_entries=True)
    n = len(owner)
    per_entry, nbytes, entries = [], 0, 0
    for s in range(0, n, 5000):  # each worker scores its customers; B adds A's entries
        for w, ff in ((0, a), (1, b)):
            rows = np.flatnonzero(owner[s : s + 5000] == w) + s
            pick = rows.tolist()
            ff.transform_columns([cols.transaction_id[i] for i in pick], cols.event_time[rows],
                                 [cols.customer_id[i] for i in pick],
                                 [cols.terminal_id[i] for i in pick], cols.cents[rows])  # fmt: skip
        recs = [r for _, r in a.take_terminal_entries()]
        b.take_terminal_entries()
        k = sum(int.from_bytes(r[8:12], "little") for r in recs)
        t0 = time.process_time()
        b.add_terminal_entries(recs)
        if (s >= n // 2 or n <= 10_000) and k:  # timed on the warm half
            per_entry.append((time.process_time() - t0) / k)
            nbytes += sum(map(len, recs))
            entries += k
    return {"entry_s": statistics.median(per_entry) if per_entry else 0.0,
            "entry_bytes": nbytes / max(entries, 1)}  # fmt: skip


def components(run: dict[str, Any]) -> dict[str, float]:
    """Seconds per transaction of each stage (per label for the label stages) of one run."""
    tm, c = run["timers"], run["counts"]
    tx, lab = max(c["tx"], 1), max(c["labels"], 1)
    named = ("decode", "validate", "duplicates", "features", "inference", "encode")
    out = {k: tm.get(k, 0.0) / tx for k in named}
    out["other"] = tm.get("process", 0.0) / tx - sum(out.values())
    out["changelog flush"] = tm.get("changelog flush", 0.0) / tx
    out["process + flush"] = out["other"] + sum(out[k] for k in named) + out["changelog flush"]
    out["label decode+validate"] = (tm.get("labels", 0.0) - tm.get("label apply", 0.0)) / lab
    out["label apply"] = tm.get("label apply", 0.0) / lab
    out["label total"] = tm.get("labels", 0.0) / lab
    out["labels per tx"] = c["labels"] / tx
    out["labels per label batch"] = c["labels"] / max(c["label_batches"], 1)
    return out


def median_components(runs: list[dict[str, Any]]) -> dict[str, float]:
    comps = [components(r) for r in runs]
    return {k: statistics.median(c[k] for c in comps) for k in comps[0]}


def worker_cpu(n: int, p: int, r: float, label_rate: float, c: dict[str, float],
               contract: str, batch: int, commit_s: float = 1.0) -> float:  # fmt: skip
    """T(N, P, R, L): CPU seconds per second one of ``n`` workers spends (see the module
    docstring). ``c_tx`` is per transaction in full batches (its batch's fixed cost included:
    at capacity polls fill); a loop iteration (at least one a commit) reads the labels, whose
    fixed cost ``a_label`` is paid when there are labels to read."""
    tx = r / n
    loops = max(tx / batch, 1.0 / commit_s)
    t = tx * (c["c_tx"] + C_CONSUME + C_PRODUCE)
    t += label_rate * (c["c_label"] + C_CONSUME) + min(label_rate, loops) * c["a_label"]
    if contract == "fraud_reports":
        t += r * (n - 1) / n * c["c_entry"]
    t += (p / n) / commit_s * C_PRODUCE + c["evict_s"] / 30.0
    return t


def fleet_size(p: int, r: float, label_rate: float, c: dict[str, float], contract: str,
               batch: int, rho: float) -> int | None:  # fmt: skip
    """The smallest N ≤ P with T ≤ ``rho``; None when no N ≤ P fits (the label-side floor)."""
    for n in range(1, p + 1):
        if worker_cpu(n, p, r, label_rate, c, contract, batch) <= rho:
            return n
    return None


def memory_per_worker(n: int, r: float, contract: str, f: float) -> float:
    """Bytes of feature state one of ``n`` workers holds at ``r`` tx/s (31 days of its
    customers' transactions; every worker: 32 days of outcomes, or under fraud_reports 39 days
    of its customers and of every terminal's transactions, and 32 days of reports), from
    :data:`B_ENTRY` (what bench/state_memory.py measured held after eviction)."""
    day = r * DAY_S
    if contract == "all_outcomes":
        return (31 * day / n * B_ENTRY["customers"]
                + 32 * day * (B_ENTRY["cards"] + B_ENTRY["terminals"]))  # fmt: skip
    return (39 * day / n * B_ENTRY["customers"] + 39 * day * B_ENTRY["terminal_transactions"]
            + 32 * day * f * (B_ENTRY["cards"] + B_ENTRY["terminals"]))  # fmt: skip


def fleet_model(c: dict[str, float], contract: str, args: argparse.Namespace,
                f: float) -> dict[str, Any]:  # fmt: skip
    """Fleet sizes for each rate of ``--rates`` (labels: every outcome, or the report share
    ``f``), the label-side floor, CPU and state per worker, and the fleet's rate cap."""
    rows = []
    for r in (float(x) for x in args.rates.split(",")):
        lab_rate = r if contract == "all_outcomes" else f * r
        n = fleet_size(args.partitions, r, lab_rate, c, contract, args.batch, args.utilisation)
        floor = lab_rate * (c["c_label"] + C_CONSUME) + (
            r * c["c_entry"] if contract == "fraud_reports" else 0.0
        )
        at = n or args.partitions
        rows.append({"rate": r, "label_rate": lab_rate, "workers": n, "label_floor_cores": floor,
                     "worker_cpu_at_n": worker_cpu(at, args.partitions, r, lab_rate, c, contract,
                                                   args.batch),
                     "memory_per_worker_gib_at_n": memory_per_worker(at, r, contract, f)
                     / (1 << 30)})  # fmt: skip
    per_tx_floor = (c["c_label"] + C_CONSUME) if contract == "all_outcomes" else (
        f * (c["c_label"] + C_CONSUME) + c["c_entry"])  # fmt: skip
    return {"costs_s": c, "rows": rows, "max_rate_any_fleet": args.utilisation / per_tx_floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--flush-every", type=int, default=4, help="batches per changelog flush")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=256, help="P for the fleet sizes")
    ap.add_argument("--utilisation", type=float, default=0.7, help="a worker is full at this")
    ap.add_argument("--report-share", type=float, default=None,
                    help="fraud reports per transaction (default: the data's)")  # fmt: skip
    ap.add_argument("--rates", default="10000,100000,1000000")
    ap.add_argument("--model", default=None, help="an ONNX fraud artifact dir (default: champion)")
    ap.add_argument("--customers", type=int, default=None,
                    help="a smaller simulated world (default: fraud_pipeline_bench's data)")  # fmt: skip
    ap.add_argument("--state-json", default=None,
                    help="bench/state_memory.py --json-out: model at its largest state too")  # fmt: skip
    ap.add_argument("--json-out", default=None)
    model_run(ap.parse_args())


def model_run(args: argparse.Namespace, champion=None) -> dict[str, Any]:  # noqa: ANN001
    """Everything :func:`main` prints; ``champion``: the artifact (else the registry's)."""
    from finscore.models.registry import Registry
    from finscore.settings import Settings

    if champion is None:
        champion = Registry(Settings().registry_dir).champion("fraud")
        if champion is None:
            sys.exit("no fraud champion in the registry (finscore compress fraud --promote)")
    probe = 20_000
    data = messages(args.transactions + probe, args.customers)
    txs, labels, known = data
    main_data = (txs[: args.transactions], labels, known[: args.transactions])
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result: dict[str, Any] = {"transactions": args.transactions, "batch": args.batch,
                              "repeat": args.repeat, "load_before": load}  # fmt: skip
    comps: dict[str, dict[str, float]] = {}
    runs_by: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):  # interleaved, so drifts in load hit both alike
        for contract in ("all_outcomes", "fraud_reports"):
            runs_by.setdefault(contract, []).append(
                run_once(champion, main_data, batch=args.batch, flush_every=args.flush_every,
                         contract=contract))  # fmt: skip
    for contract, runs in runs_by.items():
        comps[contract] = median_components(runs)
        comps[contract]["evict_s"] = statistics.median(r["evict_s"] for r in runs)
        comps[contract]["pipeline_tx_per_s"] = statistics.median(
            r["counts"]["tx"] / r["wall"] for r in runs
        )
    last = runs_by["all_outcomes"][-1]
    fixed = fixed_costs(last["pipe"], last["labels"], txs[args.transactions :],
                        labels[known[args.transactions] :])  # fmt: skip
    ent = entry_cost(main_data)
    f = args.report_share
    if f is None:
        f = len(_reports_only(labels)) / max(len(labels), 1)
    result.update({"components_s": comps, "fixed": fixed, "entries": ent, "report_share": f})

    # Validation of the model's shape: 1 worker (all 6 partitions) vs 2 (3 each), in process.
    fleet: dict[str, Any] = {}
    for contract in ("all_outcomes",):
        one = run_once(champion, main_data, batch=args.batch, flush_every=args.flush_every,
                       contract=contract)  # fmt: skip
        two = [run_once(champion, main_data, batch=args.batch, flush_every=args.flush_every,
                        contract=contract, partitions=ps) for ps in ({0, 1, 2}, {3, 4, 5})]  # fmt: skip
        # Each worker predicted from the single worker's own costs: its transactions at the
        # single worker's marginal cost per transaction, its batches at the fixed cost a
        # batch, and every label at the single worker's cost a label.
        oc, ot = one["counts"], one["timers"]
        a_tx = fixed["tx_batch_fixed_s"]
        tx_side_1 = ot.get("process", 0.0) + ot.get("changelog flush", 0.0)
        per_tx = (tx_side_1 - oc["batches"] * a_tx) / max(oc["tx"], 1)
        per_label = ot.get("labels", 0.0) / max(oc["labels"], 1)
        predicted = [w["counts"]["tx"] * per_tx + w["counts"]["batches"] * a_tx
                     + w["counts"]["labels"] * per_label for w in two]  # fmt: skip
        fleet[contract] = {
            "one_worker": {"tx": one["counts"]["tx"], "labels": one["counts"]["labels"],
                           "cpu_s": one["cpu"], "wall_s": one["wall"]},
            "two_workers": [{"tx": w["counts"]["tx"], "labels": w["counts"]["labels"],
                             "cpu_s": w["cpu"], "wall_s": w["wall"],
                             "tx_side_s": w["timers"].get("process", 0.0)
                             + w["timers"].get("changelog flush", 0.0),
                             "label_side_s": w["timers"].get("labels", 0.0),
                             "measured_s": w["timers"].get("process", 0.0)
                             + w["timers"].get("changelog flush", 0.0)
                             + w["timers"].get("labels", 0.0),
                             "predicted_s": p} for w, p in zip(two, predicted, strict=True)],
            "one_worker_tx_side_s": one["timers"].get("process", 0.0)
            + one["timers"].get("changelog flush", 0.0),
            "one_worker_label_side_s": one["timers"].get("labels", 0.0),
        }  # fmt: skip
    result["fleet_validation"] = fleet

    # The model: on the costs measured here (a 5,000-card state) and, with --state-json, on the
    # feature and label-apply costs bench/state_memory.py measured on its largest state.
    costs = {}
    for contract in ("all_outcomes", "fraud_reports"):
        cc = comps[contract]
        # c_label: the timed runs' cost a label in all_outcomes batches (thousands: the batch's
        # fixed cost amortised; medians of --repeat, steadier than the two-point slope).
        c_label = comps["all_outcomes"]["label total"]
        costs[contract] = {"c_tx": cc["process + flush"], "c_label": c_label,
                           "c_entry": ent["entry_s"], "a_tx": fixed["tx_batch_fixed_s"],
                           "a_label": fixed["label_batch_fixed_s"], "evict_s": cc["evict_s"]}  # fmt: skip
    model = {c: fleet_model(costs[c], c, args, f) for c in costs}
    if args.state_json:
        big = max(json.loads(Path(args.state_json).read_text())["runs"], key=lambda r: r["cards"])
        b = big["batch_us_per_row_median"]
        cc = comps["all_outcomes"]
        scaled = dict(costs["all_outcomes"])
        scaled["c_tx"] += b["tx_5000"] * 1e-6 - cc["features"] - cc["duplicates"]
        scaled["c_label"] += b["labels_5000"] * 1e-6 - cc["label apply"]
        scaled["c_entry"] = max(scaled["c_entry"], C_ENTRY_AT_SCALE)
        B_ENTRY.update({k: v for k, v in big["bytes_per_entry"].items() if v})
        result["at_scale"] = {"cards": big["cards"], "costs_s": scaled,
                              "model": fleet_model(scaled, "all_outcomes", args, f)}  # fmt: skip
    result["model"] = model
    result["load_after"] = Path("/proc/loadavg").read_text().split()[:3] if load else []
    for runs in runs_by.values():
        for r in runs:
            r.pop("pipe", None)
            r.pop("labels", None)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, default=str))
    print(report(result, args))
    return result


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    """Markdown tables of a run."""
    us = 1e6
    c_all, c_rep = res["components_s"]["all_outcomes"], res["components_s"]["fraud_reports"]
    lines = [f"{res['transactions'] // 2:,} timed transactions, batches of {res['batch']:,}, "
             f"median of {res['repeat']}; load average before {res['load_before']}, after "
             f"{res['load_after']}", "",
             "| component | all_outcomes µs | fraud_reports µs |", "|---|---:|---:|"]  # fmt: skip
    for k in ("decode", "validate", "duplicates", "features", "inference", "encode", "other",
              "changelog flush", "process + flush", "label decode+validate", "label apply",
              "label total"):  # fmt: skip
        per = (
            (
                f" (per label; batches of ~{c_all['labels per label batch']:,.0f} / "
                f"{c_rep['labels per label batch']:,.0f})"
            )
            if k.startswith("label")
            else ""
        )
        lines.append(f"| {k}{per} | "
                     f"{c_all[k] * us:.2f} | {c_rep[k] * us:.2f} |")  # fmt: skip
    fx, en = res["fixed"], res["entries"]
    lines += ["", f"Per batch (fixed): transactions {fx['tx_batch_fixed_s'] * 1e3:.2f} ms + "
              f"{fx['tx_per_row_s'] * us:.2f} µs/tx (a batch of 1: {fx['tx_batch1_s'] * 1e3:.2f} "
              f"ms); labels {fx['label_batch_fixed_s'] * 1e3:.2f} ms + "
              f"{fx['label_per_row_s'] * us:.2f} µs/label. Terminal entry (FTE1, fraud_reports "
              f"fleets): {en['entry_s'] * us:.2f} µs, {en['entry_bytes']:.1f} B an entry. "
              f"evict: {c_all['evict_s'] * 1e3:.1f} ms (every 30 s). Pipeline: "
              f"{c_all['pipeline_tx_per_s']:,.0f} tx/s (all_outcomes, labels included), "
              f"{c_rep['pipeline_tx_per_s']:,.0f} (fraud_reports). Report share f = "
              f"{res['report_share']:.4f}."]  # fmt: skip
    for contract, fv in res["fleet_validation"].items():
        o = fv["one_worker"]
        lines += ["", f"In-process fleet ({contract}): 1 worker: {o['tx']:,} tx + {o['labels']:,} "
                  f"labels, {fv['one_worker_tx_side_s']:.2f} s tx side + "
                  f"{fv['one_worker_label_side_s']:.2f} s label side.", "",
                  "| worker of 2 | tx | labels | tx side s | label side s | both, measured s | both, model s | process CPU s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for i, w in enumerate(fv["two_workers"]):
            lines.append(f"| {i + 1} | {w['tx']:,} | {w['labels']:,} | {w['tx_side_s']:.2f} | "
                         f"{w['label_side_s']:.2f} | {w['measured_s']:.2f} | {w['predicted_s']:.2f} | "
                         f"{w['cpu_s']:.2f} |")  # fmt: skip
    tables = [(f"{k}, on the costs above", k, m) for k, m in res["model"].items()]
    if "at_scale" in res:
        sc = res["at_scale"]
        tables.append((f"all_outcomes, features and label apply at a {sc['cards']:,}-card state "
                       f"(c_tx {sc['costs_s']['c_tx'] * us:.1f} µs, c_label "
                       f"{sc['costs_s']['c_label'] * us:.1f} µs)", "all_outcomes", sc["model"]))  # fmt: skip
    for title, contract, m in tables:
        c = m["costs_s"]
        lines += ["", f"Fleet size, {title} (P = {args.partitions}, a worker full at "
                  f"{args.utilisation:.0%} of a core; c_tx {c['c_tx'] * us:.2f} µs, c_label "
                  f"{c['c_label'] * us:.2f} µs + {c['a_label'] * 1e3:.2f} ms a label batch"
                  + (f", c_entry {c['c_entry'] * us:.2f} µs" if contract == "fraud_reports" else "")
                  + f"; the fleet's cap whatever N: {m['max_rate_any_fleet']:,.0f} tx/s):", "",
                  "| tx/s | labels/s | workers N | label-side floor (cores/worker) "
                  "| CPU/worker at N | state/worker at N |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in m["rows"]:
            n = r["workers"]
            lines.append(f"| {r['rate']:,.0f} | {r['label_rate']:,.0f} | "
                         f"{n if n else '— (none fits)'} | {r['label_floor_cores']:.3f} | "
                         f"{r['worker_cpu_at_n']:.2f} | {r['memory_per_worker_gib_at_n']:,.0f} GiB |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

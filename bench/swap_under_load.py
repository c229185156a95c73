"""Hot swap under sustained load: loss, duplicates, version order, swap delay, throughput dip, p99.

    FINSCORE_REGISTRY_DIR=var/registry python bench/swap_under_load.py --rate 5000 --seconds 30

Needs two fraud versions in the registry (the last two are used). Starts its own embedded
broker and one exactly-once fraud worker (a subprocess, like production), offers ``--rate``
transactions/s, announces the newer version halfway, and reads every flag back with
read_committed. Throughput and p99 are compared between the steady window before the
announcement and the two seconds after it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from finscore.app.broker import EmbeddedBroker, free_port
from finscore.app.console.produce import produce, transaction_events
from finscore.models.registry import Registry
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.settings import Settings
from finscore.streams.admin import ensure_topics
from finscore.streams.hot_swap import announce


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    s = Settings()
    reg = Registry(s.registry_dir)
    versions = reg.list("fraud")
    if len(versions) < 2:
        sys.exit("need two fraud versions in the registry (run `finscore compress fraud` twice)")
    key = s.model_keys().signing_key  # the worker verifies with the same (local) pair
    old, new = (reg.get("fraud", m.version) for m in versions[-2:])
    if key:
        old, new = (a if a.signature else a.sign(key) for a in (old, new))
    with EmbeddedBroker(free_port()) as b:
        client = {"bootstrap.servers": b.bootstrap}
        ensure_topics(client, T.catalog(6))
        announce(client, T.MODEL_UPDATES, old, "PROMOTE", signing_key=key)
        env = {
            **os.environ,
            "FINSCORE_BOOTSTRAP_SERVERS": b.bootstrap,
            "FINSCORE_LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "finscore.app.cli.group",
                "worker",
                "fraud",
                "--exactly-once",
                "--instance-id",
                "w1",
            ],
            env=env,
        )
        codec = Codec("fraud_flag")
        rows: list[tuple[float, float, str, int, int, str]] = []
        stop = threading.Event()

        def observe() -> None:
            c = Consumer({**client, "group.id": "swap-obs", "isolation.level": "read_committed",
                          "fetch.wait.max.ms": 5})  # fmt: skip
            c.assign([TopicPartition(T.FRAUD_FLAGS, p, OFFSET_BEGINNING) for p in range(6)])
            while not stop.is_set():
                for m in c.consume(5000, 0.05):
                    if m.error():
                        continue
                    now = time.time()
                    f = codec.decode(m.value())
                    rows.append((now, now - m.timestamp()[1] / 1000, f["model_version"],
                                 f["source_partition"], f["source_offset"], f["transaction_id"]))  # fmt: skip
            c.close()

        obs = threading.Thread(target=observe, daemon=True)
        obs.start()
        time.sleep(12)  # the worker joins its group
        txs = [e for e in itertools.islice(transaction_events("", seed=21, days=120), int(args.rate * args.seconds * 2.2))
               if e[0] == T.TRANSACTIONS][: int(args.rate * args.seconds)]  # fmt: skip
        announced: list[float] = []

        def swap() -> None:
            time.sleep(args.seconds / 2)
            announced.append(time.time())
            announce(client, T.MODEL_UPDATES, new, "PROMOTE", signing_key=key)

        threading.Thread(target=swap, daemon=True).start()
        t0 = time.time()
        produce(client, iter(txs), rate=args.rate)
        deadline = time.time() + 60
        while len(rows) < len(txs) and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        obs.join(5)
        worker.terminate()
        worker.wait(30)
    at = announced[0]
    ids = Counter(r[5] for r in rows)
    per_part: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        per_part[r[3]].append((r[4], int(r[2])))
    monotonic = all([v for _, v in sorted(p)] == sorted(v for _, v in p) for p in per_part.values())
    first_new = min((r[0] for r in rows if r[2] == new.manifest.version), default=float("nan"))
    steady = [r for r in rows if t0 + 3 < r[0] < at - 1]
    during = [r for r in rows if at <= r[0] < at + 2]
    result = {
        "offered_per_s": args.rate,
        "produced": len(txs),
        "flags": len(rows),
        "lost": len(set(e[3]["transaction_id"] for e in txs) - set(ids)),
        "duplicated": sum(1 for v in ids.values() if v > 1),
        "versions_monotonic_per_partition": monotonic,
        "swap_delay_s": first_new - at,
        "throughput_steady_per_s": len(steady) / max(1e-9, (at - 1) - (t0 + 3)),
        "throughput_swap_window_per_s": len(during) / 2,
        "p99_steady_ms": float(np.percentile([r[1] for r in steady], 99) * 1000),
        "p99_swap_window_ms": float(np.percentile([r[1] for r in during], 99) * 1000)
        if during
        else None,
        "old_version": old.manifest.version,
        "new_version": new.manifest.version,
    }
    result["throughput_dip"] = (
        1 - result["throughput_swap_window_per_s"] / result["throughput_steady_per_s"]
    )
    print(json.dumps(result, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

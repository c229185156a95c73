"""Each fraud worker's work with 1 and 2 workers: one-stage workers vs the two-stage fleet.

    FINSCORE_REGISTRY_DIR=var/registry .venv/bin/python bench/fleet_scaling.py \\
        [--backend kafka|tansu] [--transactions 60000] [--partitions 4] [--workers 1,2] \\
        [--topologies single,stages] [--json-out F]

One broker (Apache Kafka 4.4 by default, from ``make setup``; or the embedded Tansu); per
configuration a fresh set of topics (``--partitions`` each), the registry's fraud champion
signed into a temporary registry, and the workers as separate processes
(``finscore worker fraud [--stage cards|terminals]``), fed **fraud reports only**
(``FINSCORE_LABEL_CONTRACT=fraud_reports``, the contract both topologies support):

- ``single``: N one-stage workers; each scores its partitions' transactions, reads every
  report, and (a fleet under fraud_reports) writes its terminal entries for the others and
  reads theirs;
- ``stages``: N cards workers + N terminals workers (:mod:`finscore.streams.fraud.stages`).

Once every worker has joined (``/health`` ok, partitions assigned) the simulated reports and
then the transactions are produced as fast as the producer goes, and the run ends when every
transaction has a flag. Per worker: the records it consumed from its input
(``finscore_events_in``), the CPU seconds it spent from the first produce to the last flag
(``/proc/<pid>/stat``), minus its idle CPU rate measured over 3 s before the feed (the loop's
polling), and that per transaction of the whole feed. Label-side records are counted from the
topics each worker reads: every worker reads every report (and, ``single`` with N > 1, every
other worker's terminal entries). On a 2-core machine the wall time says little (2-4 worker
processes and a broker share two cores); the CPU seconds per worker are the measure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handbook_replay import encode_labels, encode_transactions, signed_registry  # noqa: E402

from finscore.models.registry import Registry  # noqa: E402
from finscore.schemas import topics as T  # noqa: E402
from finscore.sim.transactions import DAY_MS, TxSimConfig, simulate_frame  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - localhost only
        return str(r.read().decode())


def events_in(port: int) -> float:
    m = re.search(r"^finscore_events_in_total\{[^}]*\} ([0-9.e+]+)$", get(f"http://127.0.0.1:{port}/metrics"), re.M)  # fmt: skip
    return float(m.group(1)) if m else 0.0


def healthy(port: int) -> bool:
    try:
        h = json.loads(get(f"http://127.0.0.1:{port}/health"))
    except OSError:
        return False
    return h.get("status") == "ok" and bool(h.get("assigned_partitions"))


def produce_all(client: dict, topic: str, keys: list[str], values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({**client, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 2_000_000})  # fmt: skip
    for k, v in zip(keys, values, strict=True):
        while True:
            try:
                p.produce(topic, v, k.encode())
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def flags_on(client: dict, topic: str) -> int:
    """Records on ``topic``, from its true ends (the embedded broker's high watermarks can be
    stale: they can stop short of the last batch)."""
    from finscore.streams.admin import partitions_of, true_ends

    ends = true_ends(client, topic, partitions_of(client, topic), 10)
    return sum(end - low for low, end in ends.values())


def run_config(client: dict, frame: Any, topology: str, n: int, partitions: int,
               registry: Path, work: Path) -> dict[str, Any]:  # fmt: skip
    from finscore.app.broker import free_port
    from finscore.streams.admin import ensure_topics

    prefix = f"fleet-{uuid.uuid4().hex[:6]}-"
    ensure_topics(client, T.catalog(partitions, prefix))
    reg = work / f"registry-{prefix}"
    verify = signed_registry(Registry(registry).champion("fraud"), reg)  # type: ignore[arg-type]
    env = {**os.environ, "FINSCORE_BOOTSTRAP_SERVERS": str(client["bootstrap.servers"]),
           "FINSCORE_TOPIC_PREFIX": prefix, "FINSCORE_REGISTRY_DIR": str(reg),
           "FINSCORE_VERIFY_KEY": verify, "FINSCORE_LABEL_CONTRACT": "fraud_reports",
           "FINSCORE_LOG_FORMAT": "json",
           "FINSCORE_LOG_LEVEL": os.environ.get("FINSCORE_LOG_LEVEL", "WARNING"),
           "FINSCORE_PARTITIONS": str(partitions)}  # fmt: skip
    stages = ["all"] if topology == "single" else ["cards", "terminals"]
    procs: list[dict[str, Any]] = []
    for stage in stages:
        for i in range(n):
            port = free_port()
            log = open(work / f"{prefix}{stage}{i}.log", "ab")  # noqa: SIM115
            args = [sys.executable, "-m", "finscore.app.cli", "worker", "fraud", "--stage", stage,
                    "--instance-id", f"{stage}{i}", "--metrics-port", str(port),
                    "--commit-interval", "1"]  # fmt: skip
            p = subprocess.Popen(args, env=env, cwd=ROOT, stderr=log, stdout=log)
            procs.append({"stage": stage, "i": i, "port": port, "proc": p})
    try:
        deadline = time.monotonic() + 120
        while not all(healthy(w["port"]) for w in procs):
            for w in procs:
                if w["proc"].poll() is not None:
                    raise RuntimeError(f"worker {w['stage']}{w['i']} exited; see {work}")
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not join")
            time.sleep(0.5)
        time.sleep(2)  # rebalances settle
        idle0 = {w["proc"].pid: cpu_seconds(w["proc"].pid) for w in procs}
        time.sleep(3)
        idle_rate = {pid: (cpu_seconds(pid) - c) / 3 for pid, c in idle0.items()}
        delay = 7 * DAY_MS
        fraud = np.flatnonzero(frame.is_fraud != 0)
        all_rows = np.arange(len(frame))
        cpu0 = {w["proc"].pid: cpu_seconds(w["proc"].pid) for w in procs}
        t0 = time.monotonic()
        cust = frame.customer_id.astype(str)
        produce_all(client, prefix + T.FRAUD_LABELS, cust[fraud].tolist(),
                    encode_labels(frame, fraud, delay))  # fmt: skip
        produce_all(client, prefix + T.TRANSACTIONS, cust.tolist(),
                    encode_transactions(frame, all_rows))  # fmt: skip
        produced_s = time.monotonic() - t0
        while flags_on(client, prefix + T.FRAUD_FLAGS) < len(frame):
            if time.monotonic() - t0 > 600:
                raise TimeoutError("flags missing after 600 s")
            time.sleep(0.2)
        wall = time.monotonic() - t0
        out = []
        for w in procs:
            pid = w["proc"].pid
            used = cpu_seconds(pid) - cpu0[pid]
            busy = max(0.0, used - idle_rate[pid] * wall)
            out.append({"stage": w["stage"], "worker": w["i"], "records_in": events_in(w["port"]),
                        "cpu_s": round(used, 2), "idle_cpu_per_s": round(idle_rate[pid], 3),
                        "busy_cpu_s": round(busy, 2),
                        "busy_us_per_fleet_tx": round(busy / len(frame) * 1e6, 2),
                        "rss_mib": round(rss_mb(pid), 1)})  # fmt: skip
        return {"topology": topology, "workers": n, "partitions": partitions,
                "transactions": len(frame), "reports": int(len(fraud)), "wall_s": round(wall, 1),
                "produce_s": round(produced_s, 1), "per_worker": out}  # fmt: skip
    finally:
        for w in procs:
            if w["proc"].poll() is None:
                w["proc"].send_signal(signal.SIGTERM)
        for w in procs:
            try:
                w["proc"].wait(30)
            except subprocess.TimeoutExpired:
                w["proc"].kill()


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| topology | N | stage | worker | input records | CPU s (busy) | busy µs per fleet tx | RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for w in r["per_worker"]:
            lines.append(f"| {r['topology']} | {r['workers']} | {w['stage']} | {w['worker']} | "
                         f"{w['records_in']:,.0f} | {w['cpu_s']} ({w['busy_cpu_s']}) | "
                         f"{w['busy_us_per_fleet_tx']} | {w['rss_mib']} |")  # fmt: skip
    return "\n".join(lines)


@click.command()
@click.option(
    "--backend", type=click.Choice(["kafka", "tansu"]), default="kafka", show_default=True
)
@click.option("--transactions", type=int, default=60000, show_default=True,
              help="About this many simulated transactions (30 days; cards: that / 60, terminals 2x).")  # fmt: skip
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option("--workers", default="1,2", show_default=True)
@click.option("--topologies", default="single,stages", show_default=True)
@click.option("--registry", type=click.Path(path_type=Path), default=None,
              help="Registry with a fraud champion (default FINSCORE_REGISTRY_DIR).")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def main(backend: str, transactions: int, partitions: int, workers: str, topologies: str,
         registry: Path | None, json_out: Path | None) -> None:  # fmt: skip
    """Run every (topology, N) configuration and print each worker's work."""
    from finscore.app.broker import ApacheKafkaBroker, EmbeddedBroker, free_port
    from finscore.settings import Settings

    registry = registry or Settings().registry_dir
    days = 30  # long enough for reports (7 days late) and populated terminal windows
    cards = max(100, round(transactions / (2.0 * days)))  # ~2 transactions a card a day
    frame = simulate_frame(
        TxSimConfig(n_customers=cards, n_terminals=2 * cards, days=days, seed=11)
    )
    click.echo(f"{len(frame):,} transactions over {days} days, "
               f"{int((frame.is_fraud != 0).sum()):,} fraud reports")  # fmt: skip
    broker = (ApacheKafkaBroker(port=free_port()) if backend == "kafka"
              else EmbeddedBroker(port=free_port()))  # fmt: skip
    results = []
    with broker, tempfile.TemporaryDirectory(prefix="finscore-fleet-") as tmp:
        client = {"bootstrap.servers": broker.bootstrap}
        for topology in topologies.split(","):
            for n in (int(v) for v in workers.split(",")):
                r = run_config(client, frame, topology, n, partitions, registry, Path(tmp))
                r["backend"] = backend
                results.append(r)
                click.echo(report([r]).split("\n", 2)[2], err=True)
    click.echo(report(results))
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""`finscore bench`: passthrough vs naive Faust vs finscore worker, side by side on one broker.

Throughput: N transactions are preloaded into one input topic per contender; each contender
(its own process) drains its topic; an observer counts outputs and times first→last output.
- passthrough: the same KafkaTransport with no work (consume → produce the same bytes → commit):
  the limit of the I/O path;
- faust-naive: per-event Faust agent with the same codec, features and model
  (:mod:`finscore.app.bench.faust_peer`);
- finscore: the fraud worker (batch path).
Latency: transactions are offered at ``--rate`` in ``--rounds`` slices to the passthrough and
the worker, which take turns (ABBA order, same broker, same run): each is measured alone on
the machine, and drifts in its load hit both alike. ``--together``: both read every slice at
the same moment instead (on a small machine they then compete for its cores). End-to-end
latency per output is its arrival at the observer minus the input's timestamp (outputs carry
the input timestamp).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from finscore.app.console.produce import produce
from finscore.exceptions import FinscoreError
from finscore.schemas import topics as T
from finscore.schemas.topics import TopicSpec
from finscore.settings import Settings
from finscore.streams.kafka import consume_available


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _transactions(prefix: str, n: int, seed: int = 7):
    from finscore.app.console.produce import transaction_events

    sent = 0
    for ev in transaction_events(prefix, seed=seed, days=120):
        if ev[0].endswith(T.TRANSACTIONS):
            sent += 1
            yield ev
            if sent >= n:
                return


def _ticks(prefix: str, n: int, seed: int = 7):
    from finscore.app.console.produce import tick_events

    yield from itertools.islice(tick_events(prefix, seed=seed), n)


def _events(stream: str, prefix: str, n: int, seed: int = 7):
    return _transactions(prefix, n, seed) if stream == "fraud" else _ticks(prefix, n, seed)


def _encoded(events) -> list:  # noqa: ANN001
    """Events with their records encoded up front: the producer's pacing loop then costs the
    machine (2 cores shared with the broker and the contenders) little more than the sends."""
    from finscore.schemas.codec import Codec

    codecs: dict[str, Codec] = {}
    out = []
    for topic, key, schema, rec in events:
        codec = codecs.get(schema) or codecs.setdefault(schema, Codec(schema))
        out.append((topic, key, schema, codec.encode(rec)))
    return out


def _retarget(events, topic: str):
    for _, key, schema, rec in events:
        yield topic, key, schema, rec


class Observer:
    """Counts records arriving on topics and records (arrival - record timestamp) latencies."""

    def __init__(self, client: dict, topics: list[str]) -> None:
        self.client = client
        self.topics = topics
        self.count = {t: 0 for t in topics}
        self.first = {t: 0.0 for t in topics}
        self.last = {t: 0.0 for t in topics}
        self.latencies: dict[str, list[float]] = {t: [] for t in topics}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Observer:
        c = Consumer({**self.client, "group.id": f"obs-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 5})  # fmt: skip
        md = c.list_topics(timeout=5)
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics
                  for p in md.topics[t].partitions])  # fmt: skip
        self._c = c
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            # Wake with the first arrival: a batch wait would add up to its timeout to every
            # latency measured.
            msgs = consume_available(self._c, 10000, 0.05)
            now = time.time()
            for m in msgs:
                if m.error():
                    continue
                t = m.topic()
                if self.count[t] == 0:
                    self.first[t] = now
                self.count[t] += 1
                self.last[t] = now
                self.latencies[t].append(now - m.timestamp()[1] / 1000)

    def wait_for(self, topic: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count[topic] >= n:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._c.close()


def _passthrough(client: dict, group: str, src: str, dst: str, stop_at: float) -> None:
    from finscore.streams.kafka import KafkaOptions, KafkaTransport
    from finscore.streams.transport import OutRecord

    t = KafkaTransport(KafkaOptions(client=client, group_id=group, topics=(src,)))
    try:
        while time.time() < stop_at:
            batch = t.poll_batch(5000, 0.01)
            if batch:
                t.produce_batch(
                    [OutRecord(dst, m.key, m.value, timestamp_ms=m.timestamp_ms) for m in batch]
                )
                t.commit(batch)
    finally:
        t.close()


def _worker(
    client: dict, prefix: str, registry: str, group: str, stop_at: float, stream: str = "fraud"
) -> None:
    from finscore.logging import configure_logging
    from finscore.settings import Settings
    from finscore.streams.worker import Worker, WorkerConfig

    configure_logging("WARNING", "json")
    s = Settings()  # the registry champion is verified like any model (see docs/OPERATIONS.md)
    w = Worker(WorkerConfig(stream, client, topic_prefix=prefix, group_id=group,
                            registry_dir=Path(registry), metrics_port=None,
                            verify_key=s.model_keys(create=False).verify_key,
                            allow_unsigned=s.allow_unsigned_models))  # fmt: skip
    threading.Timer(max(0.0, stop_at - time.time()), w.stop).start()
    w.run()


@dataclass(frozen=True)
class _Contender:
    """One latency contender in one round: its own fresh topics (see ``_latency_rounds``)."""

    name: str  # "passthrough" | "finscore"
    prefix: str
    src: str
    out: str


def _round_contenders(run: str, k: int, src_t: str, out_t: str) -> tuple[_Contender, _Contender]:
    pp, fp = f"b{run}-latp{k}-", f"b{run}-lat{k}-"
    return (_Contender("passthrough", pp, pp + src_t, pp + "passthrough-out"),
            _Contender("finscore", fp, fp + src_t, fp + out_t))  # fmt: skip


def _start(ctx: Any, c: _Contender, client: dict, registry: str, stream: str) -> Any:
    stop_at = time.time() + 300
    if c.name == "passthrough":
        args: tuple = (client, c.prefix + "g", c.src, c.out, stop_at)
        proc = ctx.Process(target=_passthrough, args=args)
    else:
        args = (client, c.prefix, registry, c.prefix + "g", stop_at, stream)
        proc = ctx.Process(target=_worker, args=args)
    proc.start()
    return proc


def _latency_rounds(
    ctx: Any,
    obs: Observer,
    client: dict,
    rounds: list[tuple[_Contender, _Contender]],
    offered: list,
    rate: float,
    together: bool,
    registry: str,
    stream: str,
    lost: int,
) -> dict[str, list[np.ndarray]]:
    """Offer ``offered`` (one round's events) at ``rate`` once per contender per round, each
    round on fresh topics (the embedded broker's fetch latency grows with a
    topic's length: fresh topics keep every round alike) and fresh processes; per round, each
    contender's latencies, the first 10 % dropped as warm-up. The contenders take turns, in
    ABBA order so that drifts in machine load hit both alike, each alone on the machine;
    ``together``: both read their copy of the events at the same time instead (they then
    compete for the machine's cores)."""
    samples: dict[str, list[np.ndarray]] = {"passthrough": [], "finscore": []}
    for k, pair in enumerate(rounds):
        order = [pair] if together else [(c,) for c in (pair if k % 2 == 0 else pair[::-1])]
        for group in order:
            procs = [_start(ctx, c, client, registry, stream) for c in group]
            time.sleep(8)  # started and joined (a group join takes ~session.timeout.ms / 2)
            events = [(c.src, key, sc, rec) for _, key, sc, rec in offered for c in group]
            produce(client, iter(events), rate=rate * len(group))
            for c in group:
                obs.wait_for(c.out, len(offered) - (lost if c.name == "finscore" else 0), 30)
                got = np.asarray(obs.latencies[c.out])
                samples[c.name].append(got[len(got) // 10 :])
            for proc in procs:
                proc.terminate()
                proc.join(30)
    return samples


def run_bench(
    s: Settings,
    n: int,
    faust_n: int,
    rate: float,
    seconds: float,
    stream: str = "fraud",
    rounds: int = 4,
    together: bool = False,
) -> dict:
    from finscore.app.broker import EmbeddedBroker, free_port
    from finscore.models.registry import Registry
    from finscore.streams.admin import ensure_topics

    champ = Registry(s.registry_dir).champion(stream)  # before any broker is started
    if champ is None:
        raise FinscoreError(
            f"no {stream} model in the registry", hint=f"run `finscore compress {stream}`"
        )
    broker = None
    if s.embedded:
        broker = EmbeddedBroker(free_port()).start()
        client: dict = {"bootstrap.servers": broker.bootstrap}
    else:
        client = s.kafka_config()
    src_t, out_t = (
        (T.TRANSACTIONS, T.FRAUD_FLAGS) if stream == "fraud" else (T.MARKET_TICKS, T.PRICE_SIGNALS)
    )
    # Market outputs start once an instrument's window is full (2 simulated instruments).
    lost = 0 if stream == "fraud" else 2 * (int(champ.manifest.params.get("window", 100)) - 1)
    if stream != "fraud" or not n:
        faust_n = 0  # the naive Faust peer exists for the fraud stream; --events 0: latency only
    results: list[Result] = []
    try:
        parts = s.partitions
        run = uuid.uuid4().hex[:6]
        pre = {k: f"b{run}-{k}-" for k in ("pass", "faust", "fs")}
        lat_rounds = [_round_contenders(run, k, src_t, out_t) for k in range(rounds)]
        specs = []
        for p in [*pre.values(), *(c.prefix for pair in lat_rounds for c in pair)]:
            specs += T.catalog(parts, p)
            specs.append(TopicSpec(p + "passthrough-out", parts, "transaction", "customer_id"))
        ensure_topics(client, specs)
        print(f"preloading {n:,} {stream} events (x2) and {faust_n:,} for faust …", file=sys.stderr)
        for key, count in (("pass", n), ("fs", n), ("faust", faust_n)):
            if count:
                produce(client, _events(stream, pre[key], count))
        obs = Observer(client, [pre["pass"] + "passthrough-out", pre["fs"] + out_t,
                                pre["faust"] + out_t] + [c.out for pair in lat_rounds
                                                         for c in pair]).start()  # fmt: skip
        ctx = mp.get_context("spawn")

        def timed(name: str, topic: str, count: int, proc: Any) -> None:
            ok = obs.wait_for(topic, count, timeout=300)
            got = obs.count[topic]
            seconds = obs.last[topic] - obs.first[topic]
            if isinstance(proc, subprocess.Popen):
                proc.terminate()
                proc.wait(30)
            else:
                proc.join(60)
            results.append(Result(name, got, seconds))
            print(
                f"{name}: {got:,} in {seconds:.2f} s{'' if ok else ' (timed out)'}", file=sys.stderr
            )

        far = time.time() + 600
        if n:  # --events 0: the latency comparison only
            pt = ctx.Process(target=_passthrough, args=(client, f"{pre['pass']}g", pre["pass"] + src_t,
                                                        pre["pass"] + "passthrough-out", far))  # fmt: skip
            pt.start()
            timed("passthrough", pre["pass"] + "passthrough-out", n, pt)
            pt.terminate()
            w = ctx.Process(
                target=_worker,
                args=(client, pre["fs"], str(s.registry_dir), f"{pre['fs']}g", far, stream),
            )
            w.start()
            timed("finscore", pre["fs"] + out_t, n - lost, w)
            w.terminate()
        with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
            f.write(champ.onnx)
        env = {**os.environ, "FINSCORE_BENCH_PREFIX": pre["faust"], "FINSCORE_BENCH_MODEL": f.name,
               "FINSCORE_BENCH_FEATURES": ",".join(champ.manifest.feature_names or []),
               "FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"]}  # fmt: skip
        if faust_n:
            fp = subprocess.Popen([sys.executable, "-m", "finscore.app.bench.faust_peer", "worker", "-l", "error"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            timed("faust-naive", pre["faust"] + out_t, faust_n, fp)
        offered = _encoded(_events(stream, "", -(-int(rate * seconds) // rounds), seed=11))
        samples = _latency_rounds(ctx, obs, client, lat_rounds, offered, rate, together,
                                  str(s.registry_dir), stream, lost)  # fmt: skip
        for name in ("passthrough", "finscore"):
            lat = np.concatenate(samples[name]) * 1000
            results.append(Result(f"latency-{name}", len(lat), seconds, float(np.percentile(lat, 50)),
                                  float(np.percentile(lat, 99))))  # fmt: skip
        per_round = [
            float(np.percentile(f, 99) - np.percentile(p, 99)) * 1000
            for p, f in zip(samples["passthrough"], samples["finscore"], strict=True)
        ]
        obs.stop()
    finally:
        if broker is not None:
            broker.stop()
    by = {r.name: r for r in results}
    lat_fs, lat_pt = by["latency-finscore"], by["latency-passthrough"]
    assert lat_fs.latency_p99_ms is not None and lat_pt.latency_p99_ms is not None
    assert lat_fs.latency_p50_ms is not None and lat_pt.latency_p50_ms is not None
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "broker": "embedded Tansu" if s.embedded else s.bootstrap,
        "model": f"{stream} v{champ.manifest.version} ({champ.manifest.size_bytes:,} bytes)",
        "results": [asdict(r) | {"rate": r.rate} for r in results],
        "finscore_vs_passthrough": by["finscore"].rate / by["passthrough"].rate
        if "finscore" in by
        else None,
        "finscore_vs_faust": by["finscore"].rate / by["faust-naive"].rate
        if "faust-naive" in by and "finscore" in by
        else None,
        "added_p99_ms": lat_fs.latency_p99_ms - lat_pt.latency_p99_ms,
        "added_p50_ms": lat_fs.latency_p50_ms - lat_pt.latency_p50_ms,
        "latency_mode": "together" if together else f"alternating, {rounds} rounds",
        "added_p99_ms_per_round": per_round,
    }
    return summary

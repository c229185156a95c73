"""What the dashboard shows, computed from the output topics and the workers' metrics.

A background thread follows ``fraud-flags``, ``price-signals`` and the dead-letter topics from
their end (topics or partitions that appear later are followed from their beginning, so a
dashboard started before ``finscore topics --create`` still shows everything). Outputs carry
their input's timestamp, so *arrival time − record timestamp* is the true end-to-end latency of
each event. Worker ``/metrics`` are scraped for lag and input rates; a worker URL whose host name
resolves to several addresses (a scaled compose service) is scraped once per address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from finscore.observe import WorkerSample, histogram_quantile, scrape
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError

WINDOW_S = 10.0
REFRESH_S = 2.0  # how often the consumer looks for new topics/partitions


def resolve_ipv4(host: str, port: int | None) -> list[str]:
    """The distinct IPv4 addresses ``host`` resolves to, sorted; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def expand_worker_urls(
    urls: list[str], resolve: Callable[[str, int | None], list[str]] = resolve_ipv4
) -> list[str]:
    """One URL per worker: a URL whose host name resolves to several addresses (Docker's DNS for
    a scaled service) becomes one URL per address; anything else is kept as given."""
    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname
        if host is None or _is_ip(host):
            out.append(url)
            continue
        addrs = resolve(host, parts.port)
        if len(addrs) <= 1:
            out.append(url)
            continue
        for addr in addrs:
            netloc = f"{addr}:{parts.port}" if parts.port else addr
            out.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
    return out


def worker_row(url: str, now: WorkerSample | None, before: WorkerSample | None) -> dict:
    """One worker as the page shows it. Rates and latency percentiles cover the interval since
    ``before`` (the previous scrape of the same URL); without one, or after a counter reset (a
    restarted worker), rates are None and percentiles cover the worker's lifetime."""
    if now is None:
        return {"url": url, "up": False, "stream": None, "events_in": 0, "in_per_s": None,
                "out_per_s": None, "p50_ms": None, "p99_ms": None, "lag": 0, "dead_letters": 0,
                "models": []}  # fmt: skip
    dt = now.at - before.at if before is not None else 0.0
    fresh = before is not None and dt > 0 and now.events_in >= before.events_in
    buckets = now.e2e_buckets
    if fresh and before is not None:
        old = dict(before.e2e_buckets)
        delta = [(le, count - old.get(le, 0.0)) for le, count in buckets]
        if delta and delta[-1][1] > 0:
            buckets = delta

    def ms(q: float) -> float | None:
        v = histogram_quantile(buckets, q)
        return None if v is None else round(v * 1000, 1)

    return {
        "url": url,
        "up": True,
        "stream": now.models[0][0] if now.models else None,
        "events_in": now.events_in,
        "in_per_s": (now.events_in - before.events_in) / dt if fresh and before else None,
        "out_per_s": (now.events_out - before.events_out) / dt if fresh and before else None,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "lag": now.lag,
        "dead_letters": now.dead_letters,
        "models": [f"{n} v{v} ({r})" for n, v, r in now.models],
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class DashboardState:
    """Thread-safe rolling view of the system; :meth:`snapshot` is what ``/api/state`` returns."""

    def __init__(
        self,
        client: Mapping[str, str | int],
        prefix: str = "",
        worker_urls: list[str] | None = None,
    ) -> None:
        self.client = dict(client)
        self.prefix = prefix
        self.worker_urls = list(worker_urls or [])
        self.flags_topic, self.signals_topic = prefix + T.FRAUD_FLAGS, prefix + T.PRICE_SIGNALS
        self.dlq_topics = [prefix + T.dlq(t) for t in T.INPUTS]
        self._codecs = {
            self.flags_topic: Codec("fraud_flag"),
            self.signals_topic: Codec("price_signal"),
        }
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[float]] = {
            t: deque() for t in [self.flags_topic, self.signals_topic, *self.dlq_topics]
        }
        self._latency: dict[str, deque[float]] = {
            self.flags_topic: deque(maxlen=5000),
            self.signals_topic: deque(maxlen=5000),
        }
        self.totals: Counter[str] = Counter()
        self.scores = np.zeros(20, dtype=np.int64)
        self.recent_flags: deque[dict] = deque(maxlen=15)
        self.signal_mix: Counter[str] = Counter()
        self.versions: dict[str, str] = {}
        self.swaps: list[dict] = []
        self.workers: list[dict] = []
        self._first_assignment = True  # the first topic listing starts from the end
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._consume, daemon=True, name="dash-consume"),
                         threading.Thread(target=self._scrape, daemon=True, name="dash-scrape")]  # fmt: skip

    def start(self) -> DashboardState:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _follow_new_partitions(self, c: Consumer, assigned: set[tuple[str, int]]) -> None:
        """Assign partitions of the followed topics not yet assigned: from the end on the first
        call (the dashboard shows what happens from now on), from the beginning afterwards (a
        topic or partition created later holds only records written since it appeared)."""
        try:
            md = c.list_topics(timeout=5)
        except KafkaException:
            return  # broker not reachable yet: try again at the next refresh
        offset = OFFSET_END if self._first_assignment else OFFSET_BEGINNING
        new = [
            TopicPartition(t, p, offset)
            for t in self._arrivals
            if t in md.topics and md.topics[t].error is None
            for p in md.topics[t].partitions
            if (t, p) not in assigned
        ]
        if new:
            c.incremental_assign(new)
            assigned.update((tp.topic, tp.partition) for tp in new)
        self._first_assignment = False

    def _consume(self) -> None:
        c = Consumer({**self.client, "group.id": "finscore-dashboard", "enable.auto.commit": False,
                      "isolation.level": "read_committed", "fetch.wait.max.ms": 50})  # fmt: skip
        assigned: set[tuple[str, int]] = set()
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_refresh:
                    self._follow_new_partitions(c, assigned)
                    next_refresh = time.monotonic() + REFRESH_S
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                msgs = c.consume(5000, 0.2)
                now = time.time()
                with self._lock:
                    for i, m in enumerate(msgs):
                        if m.error() is not None:
                            continue
                        t = m.topic()
                        self._arrivals[t].append(now)
                        self.totals[t] += 1
                        if t in self._latency:
                            self._latency[t].append(max(0.0, now - m.timestamp()[1] / 1000))
                        if t in self._codecs and (i % 10 == 0 or t == self.flags_topic):
                            self._record(t, m.value())
                    horizon = now - WINDOW_S
                    for q in self._arrivals.values():
                        while q and q[0] < horizon:
                            q.popleft()
        finally:
            c.close()

    def _record(self, topic: str, value: bytes) -> None:
        try:
            rec = self._codecs[topic].decode(value)
        except DecodeError:
            return
        stream = "fraud" if topic == self.flags_topic else "market"
        version = rec["model_version"]
        if self.versions.get(stream) != version:
            self.swaps.append(
                {
                    "stream": stream,
                    "from": self.versions.get(stream),
                    "to": version,
                    "at": time.time(),
                }
            )
            self.versions[stream] = version
        if stream == "fraud":
            self.scores[min(int(rec["score"] * 20), 19)] += 1
            if rec["flagged"]:
                self.recent_flags.appendleft(
                    {
                        k: rec[k]
                        for k in (
                            "transaction_id",
                            "customer_id",
                            "terminal_id",
                            "score",
                            "model_version",
                        )
                    }
                )
        else:
            self.signal_mix[rec["signal"]] += 1

    def _scrape(self) -> None:
        previous: dict[str, WorkerSample] = {}
        while not self._stop.wait(1.0):
            rows = []
            for url in expand_worker_urls(self.worker_urls):
                s = scrape(url)
                rows.append(worker_row(url, s, previous.get(url)))
                if s is not None:
                    previous[url] = s
            with self._lock:
                self.workers = rows

    def snapshot(self) -> dict:
        with self._lock:

            def pct(topic: str, q: float) -> float | None:
                lat = self._latency[topic]
                return round(float(np.percentile(np.asarray(lat), q)) * 1000, 1) if lat else None

            return {
                "at": time.time(),
                "rates": {"fraud_flags": len(self._arrivals[self.flags_topic]) / WINDOW_S,
                          "price_signals": len(self._arrivals[self.signals_topic]) / WINDOW_S,
                          "dead_letters": sum(len(self._arrivals[t]) for t in self.dlq_topics) / WINDOW_S},
                "totals": {"fraud_flags": self.totals[self.flags_topic], "price_signals": self.totals[self.signals_topic],
                           "dead_letters": sum(self.totals[t] for t in self.dlq_topics)},
                "latency_ms": {"fraud": {"p50": pct(self.flags_topic, 50), "p99": pct(self.flags_topic, 99)},
                               "market": {"p50": pct(self.signals_topic, 50), "p99": pct(self.signals_topic, 99)}},
                "score_histogram": self.scores.tolist(),
                "recent_flags": list(self.recent_flags),
                "signal_mix": dict(self.signal_mix),
                "versions": dict(self.versions),
                "swaps": self.swaps[-10:],
                "workers": list(self.workers),
            }  # fmt: skip

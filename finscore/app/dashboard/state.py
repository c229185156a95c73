"""What the dashboard shows, computed from the output topics and the workers' metrics.

A background thread follows ``fraud-flags`` and ``price-signals`` from their end (topics or
partitions that appear later are followed from their beginning, so a dashboard started before
``finscore topics --create`` still shows everything) and the dead-letter topics from their
beginning, so its dead-letter total is every dead letter the topics hold and agrees with the
workers' own counts. Every flag is decoded: *scored/s* counts flags, *flagged/s* the flags with
``flagged`` set.

Two latencies, labelled by what they measure: **visible** is *dashboard arrival − output record
timestamp* (outputs carry their input's timestamp), i.e. input → output readable by a
``read_committed`` consumer, commit and fetch included; **produced** is the workers'
``finscore_e2e_latency_seconds`` histogram, input → output handed to the producer, inside the
worker. Exactly-once workers commit per batch, so *visible* is the larger one.

A second thread, once a second: scrapes worker ``/metrics`` (a worker URL whose host name
resolves to several addresses, a scaled compose service, is scraped once per address), the
sidecar's ``/health`` (its state and last error), the committed offsets of the worker consumer
groups (per-partition lag, never negative: a committed offset past the broker's end offset is
marked ``misreported``), and appends a point to a five-minute time series (scored/s, flagged/s,
signals/s, dead letters/s, total lag).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from finscore.app.console.observe import WorkerSample, health, histogram_quantile, scrape
from finscore.exceptions import FinscoreError
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, registry_client
from finscore.schemas.exceptions import DecodeError
from finscore.streams.admin import offsets

__all__ = ["SCORE_EDGES", "DashboardState", "expand_worker_urls", "group_lag", "worker_row"]

log = get_logger(__name__)

WINDOW_S = 10.0
REFRESH_S = 2.0  # how often the consumer looks for new topics/partitions
SERIES_POINTS = 300  # one point a second: the last five minutes
RECENT_DEAD = 20  # dead letters kept for browsing
LIVE_DEAD = "#dead-letters-written-while-watching"  # a totals key: no topic has this name
# Score histogram: bin 0 holds scores below 1e-4, bin i (1..24) scores in
# [SCORE_EDGES[i-1], SCORE_EDGES[i]), log-spaced (fraud scores crowd near 0; a linear
# histogram hides everything but its first bar).
SCORE_EDGES = np.logspace(-4, 0, 25)


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


def recent_buckets(now: WorkerSample, before: WorkerSample | None) -> list[tuple[float, float]]:
    """The latency buckets of the interval since ``before`` (cumulative counts), or the
    worker's lifetime buckets without an earlier scrape, after a restart or an idle interval."""
    buckets = now.e2e_buckets
    dt = now.at - before.at if before is not None else 0.0
    if before is not None and dt > 0 and now.events_in >= before.events_in:
        old = dict(before.e2e_buckets)
        delta = [(le, count - old.get(le, 0.0)) for le, count in buckets]
        if delta and delta[-1][1] > 0:
            buckets = delta
    return buckets


def group_lag(parts: list) -> dict:
    """Per-partition lag of one group on one topic from :func:`offsets` rows: a partition the
    group never committed has ``committed`` None and lag None; a committed offset past the
    broker's end offset (a stale high watermark) has lag 0 and ``misreported`` set."""
    rows = []
    for po in parts:
        raw = po.lag
        rows.append({"partition": po.partition, "committed": po.committed, "end": po.high,
                     "lag": None if raw is None else max(0, raw),
                     "misreported": raw is not None and raw < 0})  # fmt: skip
    return {"partitions": rows, "lag": sum(r["lag"] or 0 for r in rows)}


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
    buckets = recent_buckets(now, before)

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


def _ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    v = histogram_quantile(buckets, q)
    return None if v is None else round(v * 1000, 1)


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
        *,
        sidecar_url: str | None = None,
        registry: Mapping[str, str] | None = None,
    ) -> None:
        """``registry`` (a schema-registry client config) reads flags and signals written in
        the Confluent wire format (workers with a registry set write them so)."""
        self.client = dict(client)
        self.prefix = prefix
        self.worker_urls = list(worker_urls or [])
        self.sidecar_url = sidecar_url
        self.flags_topic, self.signals_topic = prefix + T.FRAUD_FLAGS, prefix + T.PRICE_SIGNALS
        self.flagged_key = self.flags_topic + "#flagged"  # arrivals of flagged records
        self.dlq_topics = [prefix + T.dlq(t) for t in (*T.INPUTS, T.SIDECAR_COMMANDS)]
        # consumer group -> the input topic it reads (the workers' default groups)
        self.groups = {prefix + "finscore-fraud": prefix + T.TRANSACTIONS,
                       prefix + "finscore-market": prefix + T.MARKET_TICKS}  # fmt: skip
        reg = registry_client(registry)
        self._codecs = {
            self.flags_topic: Codec("fraud_flag", registry=reg),
            self.signals_topic: Codec("price_signal", registry=reg),
        }
        self._dead_codec = Codec("dead_letter")
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[float]] = {
            t: deque()
            for t in [self.flags_topic, self.flagged_key, self.signals_topic, *self.dlq_topics]
        }
        self._latency: dict[str, deque[float]] = {
            self.flags_topic: deque(maxlen=5000),
            self.signals_topic: deque(maxlen=5000),
        }
        self.totals: Counter[str] = Counter()
        self.scores = np.zeros(len(SCORE_EDGES), dtype=np.int64)
        self.threshold: float | None = None
        self.dead_by_reason: Counter[str] = Counter()
        self.dead_by_source: Counter[str] = Counter()  # "workers" / "sidecar"
        self.recent_dead: deque[dict] = deque(maxlen=RECENT_DEAD)
        self.series: deque[dict] = deque(maxlen=SERIES_POINTS)
        self.group_lags: list[dict] = []
        self.produced_ms: dict[str, dict] = {}
        self.sidecar: dict | None = None
        self._broker_seen = 0.0  # monotonic time the broker last answered
        self.recent_flags: deque[dict] = deque(maxlen=15)
        self.signal_mix: Counter[str] = Counter()
        self.versions: dict[str, str] = {}
        self.swaps: list[dict] = []
        self.workers: list[dict] = []
        self._first_assignment = True  # the first listing starts the outputs from the end
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

    def broker_reachable(self) -> bool:
        """Whether the broker answered a topic listing in the last 30 s."""
        return time.monotonic() - self._broker_seen < 30.0

    def _follow_new_partitions(self, c: Consumer, assigned: set[tuple[str, int]]) -> None:
        """Assign partitions of the followed topics not yet assigned. Outputs: from the end on
        the first call (the dashboard shows what happens from now on), from the beginning
        afterwards (a topic or partition created later holds only records written since it
        appeared). Dead-letter topics: always from the beginning (every dead letter counts)."""
        try:
            md = c.list_topics(timeout=5)
        except KafkaException:
            return  # broker not reachable yet: try again at the next refresh
        self._broker_seen = time.monotonic()
        offset = OFFSET_END if self._first_assignment else OFFSET_BEGINNING
        new = [
            TopicPartition(t, p, OFFSET_BEGINNING if t in self.dlq_topics else offset)
            for t in [self.flags_topic, self.signals_topic, *self.dlq_topics]
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
                        self.totals[t] += 1
                        if t in self.dlq_topics:
                            self._dead_letter(t, m, now)
                            continue
                        self._arrivals[t].append(now)
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

    def _dead_letter(self, topic: str, m: Any, now: float) -> None:
        """Count one dead letter by reason and source, keep it for browsing; only a recent one
        (record time within the window) counts towards dead letters/s."""
        if now - m.timestamp()[1] / 1000 < WINDOW_S:
            self._arrivals[topic].append(now)
            self.totals[LIVE_DEAD] += 1
        try:
            rec = self._dead_codec.decode(m.value())
        except DecodeError as exc:
            self.dead_by_reason["undecodable"] += 1
            log.warning("dashboard.bad_dead_letter", topic=topic, offset=m.offset(), error=str(exc))
            return
        self.dead_by_reason[rec["error_type"]] += 1
        source = "sidecar" if rec["worker"].startswith("sidecar") else "workers"
        self.dead_by_source[source] += 1
        self.recent_dead.appendleft(
            {k: rec[k] for k in ("error_type", "reason", "source_topic", "source_partition",
                                 "source_offset", "failed_at", "worker")}
            | {"topic": topic, "partition": m.partition(), "offset": m.offset()}
        )  # fmt: skip

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
            score = float(rec["score"])
            self.scores[min(int(np.searchsorted(SCORE_EDGES, score, side="right")), 24)] += 1
            self.threshold = float(rec["threshold"])
            if rec["flagged"]:
                self.totals[self.flagged_key] += 1
                self._arrivals[self.flagged_key].append(time.time())
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
        last = (time.time(), dict(self._series_totals()))
        while not self._stop.wait(1.0):
            rows = []
            produced: dict[str, dict[float, float]] = {}
            for url in expand_worker_urls(self.worker_urls):
                s = scrape(url)
                rows.append(worker_row(url, s, previous.get(url)))
                if s is not None:
                    stream = s.models[0][0] if s.models else "?"
                    acc = produced.setdefault(stream, {})
                    for le, count in recent_buckets(s, previous.get(url)):
                        acc[le] = acc.get(le, 0.0) + count
                    previous[url] = s
            sidecar = None
            if self.sidecar_url:
                sidecar = health(self.sidecar_url) or {"status": "down", "url": self.sidecar_url}
            lags = self._group_lags()
            now = time.time()
            with self._lock:
                self.workers = rows
                self.sidecar = sidecar
                self.group_lags = lags
                self.produced_ms = {
                    stream: {
                        "p50": _ms(sorted(b.items()), 0.5),
                        "p99": _ms(sorted(b.items()), 0.99),
                    }
                    for stream, b in produced.items()
                }
                totals = self._series_totals()
                dt = max(now - last[0], 1e-3)
                point = {k: (totals[k] - last[1].get(k, 0)) / dt for k in totals}
                point["lag"] = sum(g["lag"] for g in lags)
                self.series.append({"t": now, **point})
            last = (now, totals)

    def _series_totals(self) -> dict[str, int]:
        return {"scored": self.totals[self.flags_topic], "flagged": self.totals[self.flagged_key],
                "signals": self.totals[self.signals_topic],
                "dead_letters": self.totals[LIVE_DEAD]}  # fmt: skip

    def _group_lags(self) -> list[dict]:
        """Per-partition lag of the worker groups (committed offset vs end offset)."""
        out = []
        for group, topic in self.groups.items():
            try:
                parts = offsets(self.client, [topic], group, timeout=2.0)
            except (KafkaException, FinscoreError) as exc:
                log.debug("dashboard.lag_unavailable", group=group, error=str(exc))
                continue
            if parts:
                out.append({"group": group, "topic": topic, **group_lag(parts)})
        return out

    def snapshot(self) -> dict:
        """Everything the page shows, as plain JSON values (see the module docstring)."""
        with self._lock:

            def pct(topic: str, q: float) -> float | None:
                lat = self._latency[topic]
                return round(float(np.percentile(np.asarray(lat), q)) * 1000, 1) if lat else None

            def rate(*keys: str) -> float:
                return sum(len(self._arrivals[k]) for k in keys) / WINDOW_S

            series: dict[str, list[float]] = {k: [] for k in
                                              ("t", "scored", "flagged", "signals", "dead_letters", "lag")}  # fmt: skip
            for point in self.series:
                for k, values in series.items():
                    values.append(round(point[k], 2))
            dead_total = sum(self.totals[t] for t in self.dlq_topics)
            return {
                "at": time.time(),
                "rates": {"scored": rate(self.flags_topic), "flagged": rate(self.flagged_key),
                          "price_signals": rate(self.signals_topic),
                          "dead_letters": rate(*self.dlq_topics)},
                "totals": {"scored": self.totals[self.flags_topic],
                           "flagged": self.totals[self.flagged_key],
                           "price_signals": self.totals[self.signals_topic],
                           "dead_letters": dead_total},
                "series": series,
                "groups": list(self.group_lags),
                "dead_letters": {
                    "total": dead_total,
                    "by_reason": dict(self.dead_by_reason),
                    "from_workers": self.dead_by_source["workers"],
                    "from_sidecar": self.dead_by_source["sidecar"],
                    "workers_total": sum(w["dead_letters"] for w in self.workers if w["up"]),
                    "recent": list(self.recent_dead),
                },
                "latency_ms": {
                    "visible": {"fraud": {"p50": pct(self.flags_topic, 50), "p99": pct(self.flags_topic, 99)},
                                "market": {"p50": pct(self.signals_topic, 50), "p99": pct(self.signals_topic, 99)}},
                    "produced": dict(self.produced_ms),
                },
                "score_histogram": {"edges": SCORE_EDGES.tolist(), "counts": self.scores.tolist(),
                                    "threshold": self.threshold},
                "recent_flags": list(self.recent_flags),
                "signal_mix": dict(self.signal_mix),
                "versions": dict(self.versions),
                "swaps": self.swaps[-10:],
                "sidecar": self.sidecar,
                "workers": list(self.workers),
            }  # fmt: skip

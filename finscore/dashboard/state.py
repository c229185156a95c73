"""What the dashboard shows, computed from the output topics and the workers' metrics.

A background thread follows ``fraud-flags``, ``price-signals`` and the dead-letter topics from
their end. Outputs carry their input's timestamp, so *arrival time − record timestamp* is the
true end-to-end latency of each event. Worker ``/metrics`` are scraped for lag and input rates.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping

import numpy as np
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from finscore.observe import scrape
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError

WINDOW_S = 10.0


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

    def _consume(self) -> None:
        c = Consumer({**self.client, "group.id": "finscore-dashboard", "enable.auto.commit": False,
                      "isolation.level": "read_committed", "fetch.wait.max.ms": 50})  # fmt: skip
        md = c.list_topics(timeout=10)
        c.assign([TopicPartition(t, p, OFFSET_END) for t in self._arrivals if t in md.topics
                  for p in md.topics[t].partitions])  # fmt: skip
        try:
            while not self._stop.is_set():
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
        while not self._stop.wait(1.0):
            rows = []
            for url in self.worker_urls:
                s = scrape(url)
                rows.append({"url": url, "up": s is not None, "events_in": s.events_in if s else 0,
                             "lag": s.lag if s else 0, "dead_letters": s.dead_letters if s else 0,
                             "models": [f"{n} v{v} ({r})" for n, v, r in s.models] if s else []})  # fmt: skip
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

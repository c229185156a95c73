"""Reading a running system from the outside: worker /metrics and /health, output topics.

Used by the demo's live view and by ``finscore status``; torch-free and cheap.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from finscore.schemas.codec import Codec, registry_client
from finscore.schemas.exceptions import DecodeError


def fetch(url: str, timeout: float = 1.0) -> str | None:
    """GET ``url`` as text; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - local URLs
            return r.read().decode()
    except Exception:  # noqa: BLE001 - HTTPError (503 = degraded) included
        return None


def health(base_url: str) -> dict | None:
    """A worker's /health document."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=1.0) as r:  # noqa: S310
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read())
        except ValueError:
            return None
    except Exception:  # noqa: BLE001
        return None


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile from cumulative (upper bound, count) buckets, Prometheus-style interpolation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            span = count - prev_count
            frac = (rank - prev_count) / span if span else 0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


@dataclass
class WorkerSample:
    """One scrape of a worker's metrics, reduced to what people look at."""

    url: str
    at: float
    events_in: float = 0.0
    events_out: float = 0.0
    dead_letters: float = 0.0
    lag: float = 0.0
    swaps: float = 0.0
    rejections: float = 0.0
    e2e_buckets: list[tuple[float, float]] = field(default_factory=list)
    models: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, role)

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(self.e2e_buckets, q)


def scrape(url: str) -> WorkerSample | None:
    """Scrape ``url``/metrics; None when the worker does not answer."""
    text = fetch(url + "/metrics")
    if text is None:
        return None
    s = WorkerSample(url, time.time())
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            n, labels, v = smp.name, smp.labels, smp.value
            if n == "finscore_events_in_total":
                s.events_in += v
            elif n == "finscore_events_out_total" and not labels.get("topic", "").endswith("-dlq"):
                s.events_out += v
            elif n == "finscore_dead_letters_total":
                s.dead_letters += v
            elif n == "finscore_consumer_lag":
                s.lag += v
            elif n == "finscore_model_swaps_total":
                s.swaps += v
            elif n == "finscore_model_rejections_total":
                s.rejections += v
            elif n == "finscore_e2e_latency_seconds_bucket":
                s.e2e_buckets.append((float(labels["le"]), v))
            elif n == "finscore_model_info" and v == 1:
                s.models.append((labels["model_name"], labels["version"], labels["role"]))
    s.e2e_buckets.sort()
    return s


class OutputTail:
    """Follows output topics from their end in a thread; keeps recent records and counts."""

    def __init__(
        self,
        client: Mapping[str, str | int],
        topics: Mapping[str, str],
        registry: Mapping[str, str] | None = None,
    ) -> None:
        """``topics`` maps topic name → schema name; ``registry`` (a schema-registry client
        config) reads records written in the Confluent wire format."""
        self.topics = dict(topics)
        reg = registry_client(registry)
        self.codecs = {t: Codec(s, registry=reg) for t, s in self.topics.items()}
        self.recent: dict[str, deque] = {t: deque(maxlen=8) for t in self.topics}
        self.counts: dict[str, int] = {t: 0 for t in self.topics}
        self.versions: dict[str, str] = {}
        self._client = dict(client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="output-tail")

    def start(self) -> OutputTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        c = Consumer(
            {**self._client, "group.id": "finscore-observer", "enable.auto.commit": False,
             "isolation.level": "read_committed"}
        )  # fmt: skip
        md = c.list_topics(timeout=5)
        tps = [
            TopicPartition(t, p, OFFSET_END)
            for t in self.topics
            if t in md.topics
            for p in md.topics[t].partitions
        ]
        c.assign(tps)
        try:
            while not self._stop.is_set():
                for m in c.consume(2000, 0.2):
                    if m.error() is not None:
                        continue
                    t = m.topic()
                    self.counts[t] += 1
                    if self.counts[t] % 50 == 1:  # decode a sample only
                        try:
                            rec = self.codecs[t].decode(m.value())
                        except DecodeError:
                            continue
                        self.recent[t].append(rec)
                        if "model_version" in rec:
                            self.versions[t] = rec["model_version"]
        finally:
            c.close()

"""Prometheus metrics and the /health endpoint of a worker.

Each worker owns a :class:`WorkerMetrics` with its own CollectorRegistry, so several workers
can run in one process (tests, the demo) without clashing. :class:`MetricsServer` serves
``/metrics`` (Prometheus text format) and ``/health`` (JSON) on a background thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from finscore.http import Response, StatusHTTPServer

__all__ = ["MetricsServer", "WorkerMetrics"]

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class WorkerMetrics:
    """The metric set every worker exports (names are documented in docs/OPERATIONS.md)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        r = self.registry = CollectorRegistry()
        self.events_in = Counter(
            "finscore_events_in", "Records consumed.", ["stream"], registry=r
        ).labels(stream)
        self._events_out = Counter(
            "finscore_events_out",
            "Records delivered (acknowledged by the broker; in EOS mode, committed).",
            ["stream", "topic"],
            registry=r,
        )
        self._dead = Counter(
            "finscore_dead_letters", "Records sent to a dead-letter topic.", ["stream", "reason"],
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "finscore_batch_size", "Records per batch.", ["stream"], buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(stream)  # fmt: skip
        self.e2e_latency = Histogram(
            "finscore_e2e_latency_seconds",
            "Input record broker timestamp to output produced.",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(stream)
        self.inference_latency = Histogram(
            "finscore_inference_latency_seconds", "Model time per batch.", ["stream"],
            buckets=INFERENCE_BUCKETS, registry=r,
        ).labels(stream)  # fmt: skip
        self._lag = Gauge(
            "finscore_consumer_lag", "Records behind the partition end.", ["stream", "partition"],
            registry=r,
        )  # fmt: skip
        self._model = Gauge(
            "finscore_model_info", "Model versions loaded (1 = loaded).",
            ["stream", "model_name", "version", "role"], registry=r,
        )  # fmt: skip
        self._provider = Gauge(
            "finscore_execution_provider",
            "ONNX Runtime execution provider the live model runs on (1 = in use).",
            ["stream", "provider"], registry=r,
        )  # fmt: skip
        self._swaps = Counter(
            "finscore_model_swaps", "Hot swaps done.", ["stream", "model_name"], registry=r
        )
        self._rejections = Counter(
            "finscore_model_rejections", "Model announcements refused.", ["stream", "reason"],
            registry=r,
        )  # fmt: skip
        self.healthy = Gauge(
            "finscore_healthy",
            "1 while the worker runs and delivers (what /health says); 0 when outputs are not "
            "acknowledged or a required topic is missing for longer than the grace.",
            ["stream"],
            registry=r,
        ).labels(stream)
        self.delivery_failures = Counter(
            "finscore_delivery_failures",
            "Records whose delivery failed (or whose transaction aborted).",
            ["stream"],
            registry=r,
        ).labels(stream)
        self.produce_refused = Counter(
            "finscore_produce_refused",
            "Records the producer refused to queue (too large, invalid, unknown partition): "
            "counted and skipped, never a crash.",
            ["stream", "error"],
            registry=r,
        )
        self.unacked = Gauge(
            "finscore_unacknowledged_records",
            "Records produced and not yet acknowledged by the broker.",
            ["stream"],
            registry=r,
        ).labels(stream)

    def events_out(self, topic: str, n: int) -> None:
        if n:
            self._events_out.labels(self.stream, topic).inc(n)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        self._dead.labels(self.stream, reason).inc(n)

    def lag(self, partition: int, value: int) -> None:
        self._lag.labels(self.stream, str(partition)).set(value)

    def model_loaded(self, name: str, version: str, role: str = "live") -> None:
        """Mark ``version`` as the ``role`` model (other versions of that role are cleared)."""
        for labels in list(self._model._metrics):  # noqa: SLF001 - prometheus has no API for it
            if labels[1] == name and labels[3] == role:
                self._model.remove(*labels)
        self._model.labels(self.stream, name, version, role).set(1)

    def execution_provider(self, provider: str) -> None:
        """Mark ``provider`` (a short name: CPU, CUDA, TensorRT...) as the one the live model
        runs on; the previous one is cleared."""
        for labels in list(self._provider._metrics):  # noqa: SLF001
            self._provider.remove(*labels)
        self._provider.labels(self.stream, provider).set(1)

    def model_unloaded(self, name: str, role: str) -> None:
        for labels in list(self._model._metrics):  # noqa: SLF001
            if labels[1] == name and labels[3] == role:
                self._model.remove(*labels)

    def swapped(self, name: str) -> None:
        self._swaps.labels(self.stream, name).inc()

    def rejected(self, reason: str) -> None:
        self._rejections.labels(self.stream, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer(StatusHTTPServer):
    """Serves ``/metrics`` (Prometheus text format) and ``/health`` (the ``health()`` document
    as JSON: 200 while its ``status`` is ``ok``, else 503) for one worker on ``host:port``
    (0 = any free), on :class:`~finscore.http.StatusHTTPServer`; other paths are 404."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        health: Callable[[], dict],
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__(self.route, port, host, name="worker-metrics")

    def route(self, path: str) -> Response:
        """The answer to a GET of ``path``."""
        if path.startswith("/metrics"):
            return Response(200, CONTENT_TYPE_LATEST, self.metrics.exposition())
        if path.startswith("/health"):
            state = self.health()
            code = 200 if state.get("status") == "ok" else 503
            return Response(code, "application/json", json.dumps(state).encode())
        return Response.not_found()

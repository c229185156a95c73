"""A worker's /metrics and /health over HTTP (the shared status server, no broker)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from finscore.streams.metrics import MetricsServer, WorkerMetrics


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a local test server
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_and_health_answer_and_health_is_503_unless_ok() -> None:
    metrics = WorkerMetrics("fraud")
    metrics.events_in.inc(3)
    state = {"status": "ok", "batches": 1}
    server = MetricsServer(metrics, lambda: dict(state)).start()
    try:
        code, ctype, body = _get(server.url + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        assert b'finscore_events_in_total{stream="fraud"} 3.0' in body
        code, ctype, body = _get(server.url + "/health")
        assert (code, ctype, json.loads(body)) == (200, "application/json", state)
        state["status"] = "stopping"
        code, _, body = _get(server.url + "/health")
        assert code == 503 and json.loads(body)["status"] == "stopping"
        assert _get(server.url + "/nothing")[0] == 404
    finally:
        server.stop()

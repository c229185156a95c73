"""The sidecar's status over HTTP: ``GET /health`` answers its state as JSON.

The sidecar has no Prometheus metrics of its own; what an operator needs from it is *what is it
doing* (waiting for labelled data, watching, recompressing, cooling down), *how did the last
recompression end* and *its last error*. :class:`StatusServer` serves the document a callable
builds (``Sidecar.status``); the demo's live view, the dashboard and the container's
HEALTHCHECK read it. The answer is 200 while the sidecar runs; a failed recompression is a
state to show, not an unhealthy process.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from finscore.http import Response, StatusHTTPServer
from finscore.logging import get_logger

__all__ = ["StatusServer"]

log = get_logger(__name__)


class StatusServer(StatusHTTPServer):
    """Serves ``/health`` (``{"status": "ok", **status()}``) on ``host:port`` (0 = any free)."""

    def __init__(self, status: Callable[[], dict], port: int = 0, host: str = "127.0.0.1") -> None:
        def route(path: str) -> Response:
            if path.split("?")[0] != "/health":
                return Response(404, "application/json", b'{"error": "not found"}')
            try:
                doc = {"status": "ok", **status()}
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                log.warning("sidecar.status_failed", error=str(exc))
                body = json.dumps({"status": "error", "error": str(exc)}).encode()
                return Response(500, "application/json", body)
            return Response(200, "application/json", json.dumps(doc, default=str).encode())

        super().__init__(route, port, host, name="sidecar-status")

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
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from finscore.logging import get_logger

__all__ = ["StatusServer"]

log = get_logger(__name__)


class StatusServer:
    """Serves ``/health`` (``{"status": "ok", **status()}``) on ``host:port`` (0 = any free)."""

    def __init__(self, status: Callable[[], dict], port: int = 0, host: str = "127.0.0.1") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] != "/health":
                    self._send(404, b'{"error": "not found"}')
                    return
                try:
                    doc = {"status": "ok", **status()}
                except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                    log.warning("sidecar.status_failed", error=str(exc))
                    self._send(500, json.dumps({"status": "error", "error": str(exc)}).encode())
                    return
                self._send(200, json.dumps(doc, default=str).encode())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True, name="sidecar-status"
        )

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

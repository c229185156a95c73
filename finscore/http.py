"""A small HTTP server on a background thread, for the status endpoints of every process.

Workers (``/metrics``, ``/health``), the sidecar (``/health``) and the dashboard (its page and
JSON) each answer a few GET paths. :class:`StatusHTTPServer` owns what they share: the
threaded server, the port (0 = any free one), the URL to show, start and stop. Each caller
gives one function ``route(path) -> Response``; a route that raises answers 500 with the
error, so a bug in a status document never kills the process it describes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

__all__ = ["Response", "StatusHTTPServer"]


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers: status code, content type and body."""

    code: int
    content_type: str
    body: bytes

    @classmethod
    def not_found(cls) -> Response:
        return cls(404, "text/plain", b"not found\n")


class StatusHTTPServer:
    """Serves ``route(path)`` for every GET on ``host:port`` until :meth:`stop`.

    ``url`` is where a person or a scraper reaches it (``127.0.0.1`` when bound to all
    interfaces); ``port`` is the bound port. Responses are never cached (``no-store``).
    """

    def __init__(
        self,
        route: Callable[[str], Response],
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        name: str = "status-http",
        url_suffix: str = "",
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                try:
                    r = route(self.path)
                except Exception as exc:  # noqa: BLE001 - answered, never raised in the server
                    r = Response(500, "text/plain", f"error: {exc}\n".encode())
                self.send_response(r.code)
                self.send_header("Content-Type", r.content_type)
                self.send_header("Content-Length", str(len(r.body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(r.body)

            def log_message(self, *args: object) -> None:  # silence per-request logs
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - display only
        self.url = f"http://{shown}:{self.port}{url_suffix}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name=name)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

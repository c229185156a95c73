"""The dashboard's HTTP server: ``/`` (a self-contained page), ``/api/state`` (JSON),
``/health`` (200 while it serves; says whether the broker answered lately) and
``/report/<family>/<file>.svg`` (the compression reports' Pareto plots of the live models)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from finscore.app.dashboard.state import DashboardState
from finscore.settings import Settings


class Dashboard:
    """State + HTTP server on a background thread; :meth:`stop` ends both."""

    def __init__(self, state: DashboardState, port: int = 8050, host: str = "127.0.0.1",
                 reports_dir: Path = Path("reports")) -> None:  # fmt: skip
        page = resources.files("finscore.app.dashboard").joinpath("page.html").read_bytes()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", page)
                elif self.path.split("?")[0] == "/health":  # the container's HEALTHCHECK
                    doc = {"status": "ok", "broker": outer.state.broker_reachable()}
                    self._send(200, "application/json", json.dumps(doc).encode())
                elif self.path.startswith("/api/state"):
                    self._send(200, "application/json", json.dumps(outer.state.snapshot()).encode())
                elif self.path.startswith("/report/"):
                    # /report/<family>/<file>.svg or /report/<family>/v<N>/<file>.svg (the
                    # report kept with registered version N)
                    parts = self.path.split("/")[2:]
                    f = None
                    if len(parts) == 2:
                        f = reports_dir / parts[0] / parts[1]
                    elif len(parts) == 3 and parts[1][:1] == "v" and parts[1][1:].isdigit():
                        f = reports_dir / parts[0] / parts[1] / parts[2]
                    if (
                        f is not None
                        and f.suffix == ".svg"
                        and f.resolve().is_relative_to(reports_dir.resolve())
                        and f.exists()
                    ):
                        self._send(200, "image/svg+xml", f.read_bytes())
                    else:
                        self._send(404, "text/plain", b"no report yet")
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.state = state
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
        self.url = f"http://{shown}:{self.port}/"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, daemon=True, name="dashboard"
        )

    def start(self) -> Dashboard:
        self.state.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.state.stop()


def start_dashboard(
    settings: Settings,
    port: int = 8050,
    worker_urls: list[str] | None = None,
    *,
    host: str = "127.0.0.1",
    sidecar_url: str | None = None,
) -> Dashboard:
    """Start the dashboard for the cluster in ``settings`` (used by the CLI and the demo);
    ``sidecar_url`` is the sidecar's status server (``finscore sidecar --metrics-port``)."""
    state = DashboardState(settings.kafka_config(), settings.topic_prefix, worker_urls,
                           sidecar_url=sidecar_url,
                           registry=settings.schema_registry_config())  # fmt: skip
    return Dashboard(state, port, host=host).start()

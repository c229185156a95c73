"""The dashboard's HTTP server: ``/`` (a self-contained page), ``/api/state`` (JSON),
``/health`` (200 while it serves; says whether the broker answered lately) and
``/report/<family>/<file>.svg`` (the compression reports' Pareto plots of the live models)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Self

from finscore.app.dashboard.state import DashboardState
from finscore.http import Response, StatusHTTPServer
from finscore.settings import Settings


class Dashboard(StatusHTTPServer):
    """State + HTTP server on a background thread; :meth:`stop` ends both."""

    def __init__(self, state: DashboardState, port: int = 8050, host: str = "127.0.0.1",
                 reports_dir: Path = Path("reports")) -> None:  # fmt: skip
        page = resources.files("finscore.app.dashboard").joinpath("page.html").read_bytes()
        self.state = state

        def route(path: str) -> Response:
            if path in ("/", "/index.html"):
                return Response(200, "text/html; charset=utf-8", page)
            if path.split("?")[0] == "/health":  # the container's HEALTHCHECK
                doc = {"status": "ok", "broker": state.broker_reachable()}
                return Response(200, "application/json", json.dumps(doc).encode())
            if path.startswith("/api/state"):
                return Response(200, "application/json", json.dumps(state.snapshot()).encode())
            if path.startswith("/report/"):
                f = _report_file(reports_dir, path.split("/")[2:])
                if f is None:
                    return Response(404, "text/plain", b"no report yet")
                return Response(200, "image/svg+xml", f.read_bytes())
            return Response.not_found()

        super().__init__(route, port, host, name="dashboard", url_suffix="/")

    def start(self) -> Self:
        self.state.start()
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.state.stop()


def _report_file(reports_dir: Path, parts: list[str]) -> Path | None:
    """``/report/<family>/<file>.svg`` or ``/report/<family>/v<N>/<file>.svg`` (the report kept
    with registered version N): the SVG file inside ``reports_dir``, or None."""
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
        return f
    return None


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

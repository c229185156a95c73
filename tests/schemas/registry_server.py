"""A real HTTP stand-in for the Confluent Schema Registry: just the REST calls the codec needs.

``POST /subjects/{subject}/versions`` registers a schema (the same text gets the same id, as in
the real registry) and ``GET /schemas/ids/{id}`` returns it; anything else is a 404 in the
registry's error shape. stdlib ``http.server`` in a daemon thread on 127.0.0.1, random port.
Used with the real ``confluent_kafka.schema_registry.SchemaRegistryClient``.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryState:
    """Schemas by id and the ids of each subject, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[int, str] = {}
        self.ids_by_text: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []

    def register(self, subject: str, text: str) -> tuple[int, int]:
        """Id and version of ``text`` under ``subject`` (registered on first sight)."""
        key = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        with self.lock:
            sid = self.ids_by_text.get(key)
            if sid is None:
                sid = len(self.by_id) + 1
                self.by_id[sid] = text
                self.ids_by_text[key] = sid
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return sid, versions.index(sid) + 1


class _Handler(BaseHTTPRequestHandler):
    state: RegistryState

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, code: int, message: str) -> None:
        self._reply(404, {"error_code": code, "message": message})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = urlparse(self.path).path
        self.state.requests.append(("POST", path))
        m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        if not m:
            return self._not_found(404, f"no route POST {path}")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if body.get("schemaType", "AVRO") != "AVRO" or "schema" not in body:
            return self._reply(422, {"error_code": 42201, "message": "Invalid schema"})
        try:
            sid, version = self.state.register(unquote(m.group(1)), body["schema"])
        except ValueError:
            return self._reply(422, {"error_code": 42201, "message": "Invalid schema"})
        self._reply(200, {"id": sid, "subject": unquote(m.group(1)), "version": version})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = urlparse(self.path).path
        self.state.requests.append(("GET", path))
        m = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if not m:
            return self._not_found(404, f"no route GET {path}")
        text = self.state.by_id.get(int(m.group(1)))
        if text is None:
            return self._not_found(40403, "Schema not found")
        self._reply(200, {"schema": text})


class RegistryServer:
    """``with RegistryServer() as url:`` serves a fresh registry at ``url`` until the block ends."""

    def __init__(self) -> None:
        self.state = RegistryState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

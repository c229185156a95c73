"""Small helpers for broker-backed stream tests (real broker, real workers, real ONNX)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.admin import ensure_topics
from finscore.streams.worker import Worker, WorkerConfig


def make_topics(client: dict, prefix: str, partitions: int = 3) -> None:
    ensure_topics(client, T.catalog(partitions, prefix))


def consume_all(
    client: dict,
    topic: str,
    expected: int,
    timeout: float = 60.0,
    read_committed: bool = False,
    settle: float = 0.0,
) -> list:
    """Every message of ``topic`` from the beginning until ``expected`` arrived (+ ``settle`` s)."""
    conf = {**client, "group.id": "test-reader", "enable.auto.commit": False,
            "enable.partition.eof": False}  # fmt: skip
    if read_committed:
        conf["isolation.level"] = "read_committed"
    c = Consumer(conf)
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    out: list = []
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for m in c.consume(5000, 0.2):
                if m.error() is None:
                    out.append(m)
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(m.error())
            if len(out) >= expected:
                if settle_until is None:
                    settle_until = time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
    finally:
        c.close()
    return out


def produce_records(client: dict, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    p = Producer({**client, "linger.ms": 5})
    for key, value in items:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def worker_config(client: dict, prefix: str, stream: str = "fraud", **kw) -> WorkerConfig:
    """A worker config for tests; it verifies with the session's test key unless told."""
    from tests.artifacts import TEST_VERIFY_KEY

    kw.setdefault("verify_key", TEST_VERIFY_KEY)
    kw.setdefault("metrics_port", None)
    kw.setdefault("session_timeout_ms", 6000)
    return WorkerConfig(stream=stream, client=client, topic_prefix=prefix, **kw)


@contextmanager
def running(cfg: WorkerConfig, ready_timeout: float = 30.0) -> Iterator[Worker]:
    """A worker running in a thread; stopped (drained, committed) on exit."""
    w = Worker(cfg)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + ready_timeout
    while w.health()["status"] != "ok" and time.monotonic() < deadline:
        if errors:
            raise errors[0]
        time.sleep(0.05)
    try:
        yield w
    finally:
        w.stop()
        t.join(30)
        if errors:
            raise errors[0]


def decode_all(msgs: list, schema: str) -> list[dict]:
    codec = Codec(schema)
    return [codec.decode(m.value()) for m in msgs]


def wait_until(what: str, done: Callable[[], bool], timeout: float) -> None:
    """Poll ``done()`` every 20 ms; fail naming ``what`` after ``timeout`` seconds (a guard
    against a stall, not a timing)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_assigned(w: Worker, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.transport is not None and w.transport.assignment():
            return
        time.sleep(0.05)
    raise TimeoutError("worker got no partitions")


def publish(client: dict, prefix: str, artifact, action: str = "PROMOTE", **kw) -> None:  # noqa: ANN001
    """Announce ``artifact``; unless ``sign=False`` the artifact (when unsigned) and the
    envelope are signed with the session's test key, as a deployment's promoter would."""
    from finscore.streams.hot_swap import announce
    from tests.artifacts import TEST_SIGNING_KEY

    if kw.pop("sign", True):
        kw.setdefault("signing_key", TEST_SIGNING_KEY)
        if artifact is not None and artifact.signature is None:
            artifact = artifact.sign(TEST_SIGNING_KEY)
    announce(client, prefix + T.MODEL_UPDATES, artifact, action, **kw)


ROOT = Path(__file__).resolve().parents[2]

"""Honest health (issue 14, observation 8): a worker whose outputs are not acknowledged, or
whose topics are gone, says so within the grace; it recovers by itself; clients never create
topics; a worker without its topics refuses to start with one sentence; a catalog topic with
the wrong partition count is reported.

The broker-loss test runs its own embedded broker on a fixed port (the session broker is
shared), stops it and starts an empty one on the same port.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from finscore.app.broker import EmbeddedBroker, free_port
from finscore.app.console.produce import produce, transaction_events
from finscore.schemas import topics as T
from finscore.streams.admin import ensure_topics
from finscore.streams.exceptions import TopicMissing
from finscore.streams.kafka import KafkaOptions, KafkaTransport
from finscore.streams.transport import OutRecord
from finscore.streams.worker import Worker
from tests.app.test_cli import finscore
from tests.artifacts import artifact
from tests.streams.kit import consume_all, make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``cond()`` held; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def events_out(w: Worker, topic: str) -> float:
    for metric in w.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "finscore_events_out_total" and s.labels.get("topic") == topic:
                return s.value
    return 0.0


def test_a_worker_started_before_the_topics_exist_refuses_with_one_sentence(client, prefix) -> None:
    with pytest.raises(TopicMissing, match="do not exist") as err:
        Worker(worker_config(client, prefix)).run()
    assert prefix + T.TRANSACTIONS in str(err.value)
    assert "finscore topics --create" in err.value.hint
    env = {
        "FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"],
        "FINSCORE_TOPIC_PREFIX": prefix,
    }
    r = finscore("worker", "fraud", env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "error: required topic(s) do not exist" in r.stderr
    assert "Traceback" not in r.stderr and "KafkaException" not in r.stderr


def test_clients_never_create_topics(client, prefix) -> None:
    """A worker's producer writing to a topic that does not exist must not create it with the
    broker's default partition count (was: created with 4 partitions)."""
    make_topics(client, prefix, partitions=1)
    t = KafkaTransport(KafkaOptions(client=client, group_id=prefix + "g",
                                    topics=(prefix + T.TRANSACTIONS,),
                                    producer_overrides={"message.timeout.ms": 2000}))  # fmt: skip
    try:
        t.produce_batch([OutRecord(prefix + "not-in-catalog", None, b"x")])
        t.producer.flush(5)
        assert t.delivery.failed == 1 and t.delivery.unacked == 0
        assert not t.delivery.acked
    finally:
        t.consumer.close()
    assert prefix + "not-in-catalog" not in AdminClient(client).list_topics(timeout=5).topics


def test_topics_create_reports_a_catalog_topic_with_the_wrong_partition_count(
    client, prefix
) -> None:
    adm = AdminClient(client)
    adm.create_topics([NewTopic(prefix + T.TRANSACTIONS, 4, 1)])[prefix + T.TRANSACTIONS].result()
    env = {"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"], "FINSCORE_TOPIC_PREFIX": prefix,
           "FINSCORE_PARTITIONS": "6"}  # fmt: skip
    r = finscore("topics", "--create", env=env)
    assert r.returncode != 0, r.stdout
    assert f"{prefix}{T.TRANSACTIONS} has 4 partition(s), the catalog says 6" in r.stderr


def test_health_turns_unhealthy_when_the_broker_is_lost_and_recovers_when_it_is_back(
    tmp_path,
) -> None:
    port = free_port()
    prefix = "h-"
    grace = 2.0
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
    client = {"bootstrap.servers": broker.bootstrap}
    try:
        make_topics(client, prefix, partitions=2)
        publish(client, prefix, artifact("fraud", "1"))
        cfg = worker_config(client, prefix, health_grace_s=grace, commit_interval=0.2)
        with running(cfg) as w:
            n = produce(client, transaction_events(prefix, seed=1), count=400).by_topic[
                prefix + T.TRANSACTIONS
            ]
            consume_all(client, prefix + T.FRAUD_FLAGS, n, timeout=30)
            # events_out counts acknowledged deliveries: all of them, once.
            wait_for(lambda: events_out(w, prefix + T.FRAUD_FLAGS) == n, 10, "events_out == n")
            assert w.health()["status"] == "ok"
            assert w.metrics.healthy._value.get() == 1

            broker.stop()
            took = wait_for(lambda: w.health()["status"] == "unhealthy", grace + 8, "unhealthy")
            assert took >= grace * 0.5, took  # not before the grace
            assert w.metrics.healthy._value.get() == 0
            assert any("broker unreachable" in p for p in w.health()["problems"])

            # An embedded broker restarts empty: the worker names the missing topics...
            broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log").start()
            wait_for(
                lambda: any(p.startswith("topics missing") for p in w.health()["problems"]),
                grace + 10,
                "topics missing reported",
            )
            assert prefix + T.TRANSACTIONS in " ".join(w.health()["problems"])
            assert w.health()["status"] == "unhealthy"
            # ...and is healthy again once they exist (as after `finscore topics --create`).
            make_topics(client, prefix, partitions=2)
            ensure_topics(client, [T.TopicSpec(T.changelog(cfg.group, "customer-entries"), 2,
                                               "state", "key", dict(T.APPEND_ONLY_STATE))])  # fmt: skip
            wait_for(lambda: w.health()["status"] == "ok", grace + 15, "healthy again")
            assert w.metrics.healthy._value.get() == 1
            # no topic was created by a client with the broker's defaults meanwhile
            parts = AdminClient(client).list_topics(timeout=5).topics
            assert len(parts[prefix + T.FRAUD_FLAGS].partitions) == 2
    finally:
        broker.stop()


def test_a_steady_flow_of_acknowledgements_is_never_a_stall() -> None:
    """Under load some records are always pending, but acknowledgements keep coming: that is
    no stall however long it lasts (a stall is pending records and *no* ack for the grace)."""
    from types import SimpleNamespace

    from finscore.streams.health import HealthMonitor
    from finscore.streams.kafka import DeliveryStats

    st = DeliveryStats()
    mon = HealthMonitor({}, ["in"], lambda: st, grace_s=0.2)
    mon._admin = SimpleNamespace(  # type: ignore[assignment]  # topics listed: a unit test
        list_topics=lambda timeout: SimpleNamespace(topics={"in": None})
    )
    st.unacked = 500
    for _ in range(8):  # 0.4 s: twice the grace, an ack just before every check
        time.sleep(0.05)
        st.acks += 1
        st.last_progress = time.monotonic()
        assert mon.check() == []
    time.sleep(0.3)  # then no ack for longer than the grace: a stall
    assert [p.split(":")[0] for p in mon.check()] == ["delivery stalled"]

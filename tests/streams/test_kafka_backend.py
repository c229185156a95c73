"""The Apache Kafka test backend itself: large records on both backends, a 3-node KRaft cluster.

The cluster (3 combined broker+controller nodes, replication factor 3, min.insync.replicas 2)
is what failover tests run on; here it is started, checked to replicate, and (slow) made to
lose a partition leader to SIGKILL while an idempotent acks=all producer writes: nothing lost,
nothing duplicated, and the killed node rejoins the in-sync replicas.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from finscore.app.broker import KafkaCluster

pytestmark = pytest.mark.broker


def read_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0):
    """Every record of ``topic`` from the beginning until ``expected`` arrived (or timeout)."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                assert m.error() is None, m.error()
                out.append(m)
    finally:
        c.close()
    return out


def test_a_record_of_several_megabytes_goes_through(client, prefix) -> None:  # noqa: ANN001
    """Model announcements reach 8,000,000 bytes: both backends must take a 6 MB record."""
    topic = prefix + "big"
    adm = AdminClient(client)
    adm.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    payload = bytes(range(256)) * (6_000_000 // 256)
    p = Producer({**client, "message.max.bytes": 8_000_000})
    p.produce(topic, payload, b"k")
    assert p.flush(30) == 0
    [m] = read_all(client["bootstrap.servers"], topic, 1, 1)
    assert m.value() == payload


@pytest.mark.kafka
def test_three_nodes_replicate_every_partition_three_times(cluster: KafkaCluster) -> None:
    boot = cluster.bootstrap
    adm = AdminClient({"bootstrap.servers": boot})
    topic = "replicated"
    adm.create_topics([NewTopic(topic, 3)])[topic].result(30)  # the broker's default factor
    deadline = time.monotonic() + 30  # metadata reaches every broker a moment after creation
    while True:
        md = adm.list_topics(topic, timeout=10).topics[topic]
        if len(md.partitions) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(len(p.replicas) for p in md.partitions.values()) == [3, 3, 3]
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    conf = adm.describe_configs([res])[res].result(10)
    assert conf["min.insync.replicas"].value == "2"
    p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True})
    for i in range(3000):
        p.produce(topic, str(i).encode(), str(i).encode())
    assert p.flush(30) == 0
    got = read_all(boot, topic, 3, 3000)
    assert sorted(int(m.value()) for m in got) == list(range(3000))
    assert {cluster.leader(topic, i) for i in range(3)} <= set(cluster.node_ids)


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkill_of_a_partition_leader_loses_and_duplicates_nothing(cluster: KafkaCluster) -> None:
    """acks=all + idempotence across a leader crash: every record once; the node rejoins."""
    boot = cluster.bootstrap
    adm = AdminClient({"bootstrap.servers": boot})
    topic = "failover"
    adm.create_topics([NewTopic(topic, 3)])[topic].result(30)
    victim = cluster.leader(topic, 0)
    p = Producer(
        {"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    errors: list[object] = []
    n = 6000
    for i in range(n):
        p.produce(
            topic,
            str(i).encode(),
            str(i).encode(),
            on_delivery=lambda e, _m: e and errors.append(e),
        )
        if i == n // 3:
            p.flush(30)
            cluster.kill(victim)
        p.poll(0)
    assert p.flush(60) == 0
    assert errors == []
    assert cluster.leader(topic, 0) not in (victim, -1)
    got = Counter(int(m.value()) for m in read_all(boot, topic, 3, n, timeout=60))
    assert set(got) == set(range(n)), f"lost {n - len(got)}"
    assert max(got.values()) == 1, "a record was written twice"
    cluster.start_node(victim)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = AdminClient({"bootstrap.servers": boot}).list_topics(topic, timeout=10)
        if all(victim in part.isrs for part in md.topics[topic].partitions.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"node {victim} did not rejoin the in-sync replicas")

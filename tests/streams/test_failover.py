"""Broker failover on a 3-node Apache Kafka cluster (RF 3, min.insync.replicas 2), real workers.

While two fraud workers (one at-least-once, one exactly-once, each on its own topic prefix)
drain a paced feed, the cluster loses brokers:

- **SIGKILL** (default suite): the node leading partitions of both workers' input and output
  topics (and coordinating the exactly-once worker's group) dies without a goodbye;
- **rolling restart** (slow): every node is stopped cleanly and started again, one at a time,
  waiting for every partition's in-sync replicas to be full again in between.

Then: at-least-once lost nothing (every transaction has a flag); exactly-once lost and
duplicated nothing (read_committed: each transaction exactly once); both workers ran through
without a restart and report healthy at the end. With RF 3 / min.insync.replicas 2 one lost
broker is a short stall (the controller fences the dead node after
``broker.session.timeout.ms``, 3 s here, and moves leadership), so /health may or may not turn
unhealthy for a moment (grace 2 s here): what it reported is printed, and it must be "ok" again
once the feed is drained.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from confluent_kafka.admin import AdminClient

from finscore.app.broker import KafkaCluster
from finscore.app.console.produce import produce, transaction_events
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.admin import ensure_topics
from finscore.streams.worker import Worker
from tests.artifacts import artifact
from tests.streams.kit import publish, running, worker_config

pytestmark = [pytest.mark.broker, pytest.mark.kafka]

PARTITIONS = 3
GRACE_S = 2.0


def wait_full_isr(cluster: KafkaCluster, timeout: float = 90.0) -> None:
    """Until every partition of every topic (internal ones too) has a leader and all its
    replicas in sync."""
    adm = AdminClient({"bootstrap.servers": cluster.bootstrap})
    deadline = time.monotonic() + timeout
    lagging: list[str] = []
    while time.monotonic() < deadline:
        md = adm.list_topics(timeout=10)
        lagging = [
            f"{t}[{p.id}]"
            for t, tm in md.topics.items()
            for p in tm.partitions.values()
            if p.leader < 0 or len(p.isrs) < len(p.replicas)
        ]
        if not lagging:
            return
        time.sleep(0.25)
    raise AssertionError(f"in-sync replicas not full after {timeout:.0f} s: {lagging[:10]}")


def heal(cluster: KafkaCluster) -> None:
    """Start any node an earlier test left down; wait for full in-sync replicas."""
    for node in cluster.node_ids:
        if not cluster.node_running(node):
            cluster.start_node(node)
    wait_full_isr(cluster)


class HealthLog:
    """Samples each worker's /health every 100 ms on a thread (what an orchestrator sees)."""

    def __init__(self, workers: dict[str, Worker]) -> None:
        self.workers = workers
        self.seen: dict[str, list[tuple[float, str, tuple[str, ...]]]] = {k: [] for k in workers}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, w in self.workers.items():
                h = w.health()
                log = self.seen[name]
                entry = (round(time.monotonic() - self.t0, 1), h["status"], tuple(h["problems"]))
                if not log or log[-1][1:] != entry[1:]:
                    log.append(entry)

    def __enter__(self) -> HealthLog:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)

    def unhealthy(self, name: str) -> list[tuple[float, str, tuple[str, ...]]]:
        return [e for e in self.seen[name] if e[1] != "ok"]


def thread_stacks() -> str:
    """Every thread's stack (a diagnostic for a worker that does not recover)."""
    import sys
    import traceback

    frames = sys._current_frames()
    return "\n".join(
        f"--- thread {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
        for t in threading.enumerate()
        if t.ident in frames
    )


def flag_counts(
    client: dict, topic: str, ids: set[str], read_committed: bool, timeout: float = 90.0
) -> Counter[str]:
    """Flags per transaction id on ``topic``, read from the beginning until every id in
    ``ids`` has one (or the deadline), then 2 s more (so duplicates would show)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    conf = {**client, "group.id": "failover-reader", "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted"}  # fmt: skip
    c = Consumer(conf)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    codec = Codec("fraud_flag")
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < (settle_until or deadline):
            for m in c.consume(5000, 0.2):
                if m.error() is None:
                    counts[codec.decode(m.value())["transaction_id"]] += 1
            if settle_until is None and ids <= set(counts):
                settle_until = time.monotonic() + 2.0
    finally:
        c.close()
    return counts


def run_failover(cluster: KafkaCluster, n_tx: int, rate: float, disrupt) -> None:  # noqa: ANN001
    """Two workers (at-least-once on prefix A, exactly-once on prefix B) drain a paced feed of
    ``n_tx`` transactions into both; ``disrupt(workers)`` runs once a third is sent. Asserts
    nothing lost (both), nothing duplicated (exactly-once), healthy at the end."""
    client = {"bootstrap.servers": cluster.bootstrap}
    run_id = f"f{int(time.time() * 1000) % 10**8}"
    prefixes = {"alo": f"{run_id}a-", "eos": f"{run_id}e-"}
    for p in prefixes.values():
        ensure_topics(client, T.catalog(PARTITIONS, p), replication_factor=3)
    art = artifact("fraud", "1")
    for p in prefixes.values():
        publish(client, p, art)
    txs = [e for e in itertools.islice(transaction_events("", seed=11), n_tx)]
    assert len(txs) == n_tx and all(e[0] == T.TRANSACTIONS for e in txs)

    def feed_events() -> Iterator:
        for topic, key, schema, rec in txs:  # the same transaction to both workers
            for p in prefixes.values():
                yield p + topic, key, schema, rec

    sent = threading.Event()
    third = threading.Event()
    feed_errors: list[BaseException] = []

    def progress(stats) -> None:  # noqa: ANN001
        if sum((stats.by_topic or {}).values()) >= 2 * n_tx // 3:
            third.set()

    def feed() -> None:
        try:
            stats = produce(client, feed_events(), rate=2 * rate, on_progress=progress)
            assert stats.failed == 0, f"the feed lost {stats.failed} records"
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test
            feed_errors.append(exc)
        finally:
            third.set()
            sent.set()

    cfgs = {
        "alo": worker_config(client, prefixes["alo"], health_grace_s=GRACE_S, batch_size=500),
        "eos": worker_config(
            client, prefixes["eos"], exactly_once=True, health_grace_s=GRACE_S, batch_size=500
        ),
    }
    t_start = time.monotonic()
    with ExitStack() as stack:
        workers = {k: stack.enter_context(running(c, ready_timeout=60)) for k, c in cfgs.items()}
        health = stack.enter_context(HealthLog(workers))
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        assert third.wait(60), "the feed did not get going"
        disrupt_at = time.monotonic() - health.t0
        disrupt(workers)
        disrupted = time.monotonic() - health.t0
        assert sent.wait(120), "the feed did not finish"
        feeder.join(5)
        assert not feed_errors, feed_errors
        ids = {rec["transaction_id"] for _, _, _, rec in txs}
        # read while the workers still run: they must get there without a restart
        alo = flag_counts(client, prefixes["alo"] + T.FRAUD_FLAGS, ids, read_committed=False)
        eos = flag_counts(client, prefixes["eos"] + T.FRAUD_FLAGS, ids, read_committed=True)
        deadline = time.monotonic() + 3 * GRACE_S + 5
        while time.monotonic() < deadline and any(
            w.health()["status"] != "ok" for w in workers.values()
        ):
            time.sleep(0.1)
        final = {k: w.health() for k, w in workers.items()}
        print(f"\n  disruption from {disrupt_at:.1f} s to {disrupted:.1f} s")
        for k in workers:
            bad = health.unhealthy(k)
            span = f"{bad[0][0]:.1f}-{bad[-1][0]:.1f} s, e.g. {bad[-1][2]}" if bad else "never"
            print(f"  {k}: unhealthy {span}; delivery failures {final[k]['delivery_failures']}")
        if any(h["status"] != "ok" for h in final.values()):
            print(thread_stacks())  # where a stuck worker waits
        for k, h in final.items():
            assert h["status"] == "ok", f"{k} worker did not recover by itself: {h['problems']}"
    assert set(alo) == ids, f"at-least-once lost {len(ids - set(alo))} transactions"
    assert set(eos) == ids, f"exactly-once lost {len(ids - set(eos))} transactions"
    dups = {i: n for i, n in eos.items() if n > 1}
    assert not dups, f"exactly-once duplicated {len(dups)} transactions"
    print(
        f"  {n_tx} tx: at-least-once {sum(alo.values()) - n_tx} duplicate flag(s), exactly-once 0;"
        f" {time.monotonic() - t_start:.1f} s"
    )


def eos_coordinator(cluster: KafkaCluster, group: str) -> int:
    """Node coordinating ``group`` (its offsets; the transaction coordinator may differ)."""
    adm = AdminClient({"bootstrap.servers": cluster.bootstrap})
    desc = adm.describe_consumer_groups([group])[group].result(10)
    return int(desc.coordinator.id)


def test_the_state_changelog_is_replicated_like_the_input(cluster: KafkaCluster) -> None:
    """A worker creates its state changelog with its input's replication factor: an
    unreplicated changelog (RF 1) on a lost broker stalls exactly-once commits and fails
    every state restore after a rebalance."""
    heal(cluster)
    client = {"bootstrap.servers": cluster.bootstrap}
    prefix = f"r{int(time.time() * 1000) % 10**8}-"
    ensure_topics(client, T.catalog(PARTITIONS, prefix), replication_factor=3)
    publish(client, prefix, artifact("fraud", "1"))
    with running(worker_config(client, prefix), ready_timeout=60) as w:
        changelog = w.stream.changelog_topic  # type: ignore[attr-defined]
        assert changelog
    md = AdminClient(client).list_topics(timeout=10).topics[changelog]
    assert [len(p.replicas) for p in md.partitions.values()] == [3] * PARTITIONS


# librdkafka (2.16 here) can block in send_offsets_to_transaction past its timeout, for
# minutes, when the group coordinator it cached is a broker that died and left the metadata
# (confluentinc/librdkafka#5511, #5456; seen here in 2 of 8 runs): the exactly-once worker
# then stalls, /health says so ("delivery stalled"), and it only goes on once librdkafka
# finds the new coordinator. The default run kills a node that leads partitions of every
# input and output topic but does not coordinate the exactly-once group; the slow run kills
# that coordinator too and may hit the client bug.
@pytest.mark.parametrize(
    "kill_coordinator",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["partition-leader", "eos-group-coordinator"],
)
def test_sigkill_of_a_leading_broker_loses_nothing_and_duplicates_nothing(
    cluster: KafkaCluster, kill_coordinator: bool
) -> None:
    heal(cluster)

    def kill_leader(workers: dict[str, Worker]) -> None:
        topics = [w.cfg.topic(n) for w in workers.values() for n in (T.TRANSACTIONS,
                  T.FRAUD_FLAGS)]  # fmt: skip
        leads = {
            node: {t for t in topics for p in range(PARTITIONS) if cluster.leader(t, p) == node}
            for node in cluster.node_ids
        }
        coord = eos_coordinator(cluster, workers["eos"].cfg.group)
        # 3 partitions over 3 nodes: every node usually leads a partition of every topic
        fits = [n for n in cluster.node_ids if leads[n] == set(topics)]
        fits = [n for n in fits if (n == coord) == kill_coordinator]
        assert fits, f"no node leads all of {topics} (coordinator {coord}): {leads}"
        victim = fits[0]
        print(f"\n  SIGKILL node {victim} (group coordinator of eos: {coord})")
        cluster.kill(victim)

    run_failover(cluster, n_tx=3000, rate=1000, disrupt=kill_leader)


@pytest.mark.slow
def test_rolling_restart_of_all_brokers_loses_nothing_and_duplicates_nothing(
    cluster: KafkaCluster,
) -> None:
    heal(cluster)

    def roll(_workers: dict[str, Worker]) -> None:
        for node in cluster.node_ids:
            t = time.monotonic()
            cluster.stop_node(node)
            cluster.start_node(node)
            wait_full_isr(cluster)
            print(f"  node {node} restarted, ISR full in {time.monotonic() - t:.1f} s")

    run_failover(cluster, n_tx=6000, rate=80, disrupt=roll)

"""SIGKILL a worker mid-stream, restart it: every input scored, restored state == uninterrupted.

At-least-once: every transaction has a flag (duplicates allowed). Exactly-once: exactly one
flag per transaction, read with read_committed. In both modes every flag's score equals the
score of an uninterrupted offline run over the same events, so the customer state restored
from the changelog equals the state the killed worker had built.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

from finscore.app.console.produce import produce, transaction_events
from finscore.features.fraud import FraudFeatureConfig, FraudFeatures
from finscore.schemas import topics as T
from finscore.streams.scoring import Scorer
from tests.artifacts import TEST_VERIFY_KEY, artifact
from tests.streams.kit import ROOT, consume_all, decode_all, make_topics, publish

pytestmark = pytest.mark.broker


def spawn_worker(client: dict, prefix: str, eos: bool, tmp_path) -> subprocess.Popen:  # noqa: ANN001
    env = {
        **os.environ,
        "FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"],
        "FINSCORE_TOPIC_PREFIX": prefix,
        "FINSCORE_REGISTRY_DIR": str(tmp_path / "registry"),
        "FINSCORE_LOG_FORMAT": "json",
        "FINSCORE_VERIFY_KEY": TEST_VERIFY_KEY,  # workers refuse unsigned models
    }
    args = ["worker", "fraud", "--batch-size", "200", "--instance-id", "w1"]
    if eos:
        args.append("--exactly-once")
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "finscore.app.cli", *args], env=env, cwd=ROOT, stderr=log
    )


def wait_for_flags(client: dict, topic: str, n: int, timeout: float = 60) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client, "group.id": "count"})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=5)
            total = sum(
                c.get_watermark_offsets(TopicPartition(topic, p), 5)[1]
                for p in md.topics[topic].partitions
            )
            if total >= n:
                return
            time.sleep(0.2)
    finally:
        c.close()
    raise TimeoutError(f"fewer than {n} records on {topic}")


def reference_scores(client: dict, prefix: str, n_tx: int, n_labels: int, art) -> dict:  # noqa: ANN001
    """Scores of an uninterrupted offline run: all labels known, txs in partition order."""
    feats = FraudFeatures(FraudFeatureConfig())
    labels = decode_all(consume_all(client, prefix + T.FRAUD_LABELS, n_labels), "fraud_label")
    feats.apply_labels(labels)
    msgs = consume_all(client, prefix + T.TRANSACTIONS, n_tx)
    msgs.sort(key=lambda m: (m.partition(), m.offset()))
    txs = decode_all(msgs, "transaction")
    scores = Scorer(art).score_batch(feats.transform(txs))
    return {tx["transaction_id"]: float(s) for tx, s in zip(txs, scores, strict=True)}


@pytest.mark.parametrize("eos", [False, True], ids=["at-least-once", "exactly-once"])
def test_sigkill_and_restart(client, prefix, tmp_path, eos: bool) -> None:  # noqa: ANN001
    make_topics(client, prefix, partitions=3)
    art = artifact("fraud", "1")
    publish(client, prefix, art)
    events = list(itertools.islice(transaction_events(prefix, seed=5), 13000))
    labels = [e for e in events if e[0] == prefix + T.FRAUD_LABELS]
    txs = [e for e in events if e[0] == prefix + T.TRANSACTIONS]
    # Labels are a side input every worker reads in full; publish them first so the features
    # of each transaction do not depend on how fast the labels consumer happens to be.
    produce(client, iter(labels))
    produce(client, iter(txs[:3000]))
    stop = threading.Event()

    def feed() -> None:
        produce(client, iter(txs[3000:]), rate=1500, stop=stop)

    w = spawn_worker(client, prefix, eos, tmp_path)
    try:
        wait_for_flags(client, prefix + T.FRAUD_FLAGS, 500)
        feeder = threading.Thread(target=feed)
        feeder.start()
        time.sleep(2.5)
        w.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
        w.wait(10)
        w = spawn_worker(client, prefix, eos, tmp_path)
        feeder.join(60)
    finally:
        stop.set()
    n_tx, n_labels = len(txs), len(labels)
    try:
        flags = decode_all(
            consume_all(client, prefix + T.FRAUD_FLAGS, n_tx, timeout=90, read_committed=eos,
                        settle=2.0),
            "fraud_flag",
        )  # fmt: skip
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
    counts = Counter(f["transaction_id"] for f in flags)
    ref = reference_scores(client, prefix, n_tx, n_labels, art)
    assert set(counts) == set(ref), f"missing {len(set(ref) - set(counts))} flags"
    # Accounting by input record (partition, offset): every input has an output ...
    inputs = {
        (m.partition(), m.offset()) for m in consume_all(client, prefix + T.TRANSACTIONS, n_tx)
    }
    per_input = Counter((f["source_partition"], f["source_offset"]) for f in flags)
    assert set(per_input) == inputs
    if eos:  # ... and exactly one in exactly-once mode
        assert max(per_input.values()) == 1, "an input record was scored twice in exactly-once mode"
    got = np.array([f["score"] for f in flags])
    want = np.array([ref[f["transaction_id"]] for f in flags])
    off = [f for f, g, r in zip(flags, got, want, strict=True) if abs(g - r) > 1e-6]
    where = [(f["source_partition"], f["source_offset"], f["customer_id"]) for f in off[:8]]
    assert not off, (
        f"restored features differ from an uninterrupted run for {len(off)} of {len(flags)} flags,"
        f" first (partition, offset, customer) {where}; worker log {tmp_path / 'worker.log'}"
    )


def test_exactly_once_resumes_after_outputs_already_committed(client, prefix) -> None:  # noqa: ANN001
    """The recovery guard: when the group's committed offset lags behind outputs that are
    already committed (a broker can serve the previous offsets for a moment after a crash), an
    exactly-once worker starts after the last input its outputs name, never re-scoring it."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka import TopicPartition as KTP

    from finscore.schemas.codec import Codec
    from finscore.schemas.samples import sample
    from finscore.streams.kafka import KafkaOptions, KafkaTransport

    make_topics(client, prefix, partitions=1)
    src, out = prefix + T.TRANSACTIONS, prefix + T.FRAUD_FLAGS
    p = Producer(client)
    tx, flag = Codec("transaction"), Codec("fraud_flag")
    for i in range(100):
        p.produce(src, tx.encode(sample("transaction", i)), b"k")
    for i in range(60):  # outputs for inputs 0..59 are already on the output topic
        rec = sample("fraud_flag", i) | {
            "source_topic": src,
            "source_partition": 0,
            "source_offset": i,
        }
        p.produce(out, flag.encode(rec), b"k")
    p.flush(10)
    group = prefix + "g"
    c = Consumer({**client, "group.id": group})
    c.commit(offsets=[KTP(src, 0, 40)], asynchronous=False)  # the group lags: says 40
    c.close()
    t = KafkaTransport(KafkaOptions(client=client, group_id=group, topics=(src,), exactly_once=True,
                                    resume_from=(out, "fraud_flag")))  # fmt: skip
    try:
        batch: list = []
        deadline = time.monotonic() + 30
        while not batch and time.monotonic() < deadline:
            batch = t.poll_batch(1000, 0.2)
        assert batch and batch[0].offset == 60  # not 40: inputs 40..59 were already scored
        t.commit(batch)
    finally:
        t.close()


def test_exactly_once_inputs_skipped_by_the_recovery_guard_still_build_state(
    client,
    prefix,
    tmp_path,  # noqa: ANN001
) -> None:
    """A crashed worker's outputs can be visible although its transaction never committed: the
    embedded broker shows aborted records to ``read_committed`` readers. The recovery guard
    then starts after them, but the state those inputs built may not be on the changelog (it is
    written last in a transaction). The skipped inputs must still build the state: the later
    scores equal an uninterrupted run's."""
    from confluent_kafka import Producer

    from finscore.schemas.codec import Codec
    from finscore.schemas.samples import sample
    from tests.streams.kit import running, worker_config

    make_topics(client, prefix, partitions=1)
    art = artifact("fraud", "1")
    publish(client, prefix, art)
    txs = [e[3] for e in itertools.islice(transaction_events(prefix, seed=5), 6000)
           if e[0] == prefix + T.TRANSACTIONS][:3000]  # fmt: skip
    skipped = 2000  # outputs of inputs 0..1999 are on the output topic; nothing committed
    src, out = prefix + T.TRANSACTIONS, prefix + T.FRAUD_FLAGS
    tx_codec, flag_codec = Codec("transaction"), Codec("fraud_flag")
    p = Producer(client)
    for tx in txs:
        p.produce(src, tx_codec.encode(tx), tx["customer_id"].encode())
    for i, tx in enumerate(txs[:skipped]):
        flag = sample("fraud_flag", i) | {
            "transaction_id": tx["transaction_id"], "customer_id": tx["customer_id"],
            "source_topic": src, "source_partition": 0, "source_offset": i,
        }  # fmt: skip
        p.produce(out, flag_codec.encode(flag), tx["customer_id"].encode())
    p.flush(10)
    full = Scorer(art).score_batch(FraudFeatures(FraudFeatureConfig()).transform(txs))[skipped:]
    alone = Scorer(art).score_batch(FraudFeatures(FraudFeatureConfig()).transform(txs[skipped:]))
    assert not np.allclose(full, alone, atol=1e-6)  # the later scores depend on the skipped
    with running(worker_config(client, prefix, exactly_once=True, instance_id="w1")):
        flags = decode_all(consume_all(client, out, len(txs), timeout=60, read_committed=True),
                           "fraud_flag")  # fmt: skip
    new = sorted((f for f in flags if f["source_offset"] >= skipped),
                 key=lambda f: f["source_offset"])  # fmt: skip
    assert [f["source_offset"] for f in new] == list(range(skipped, len(txs)))  # none re-scored
    got = np.array([f["score"] for f in new])
    assert np.allclose(got, full, atol=1e-6), "the skipped inputs did not build the state"

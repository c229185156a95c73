"""Hot swap in running workers: exact accounting by key and version, refusals, rollback.

The tests observe a worker only through what it publishes: its Prometheus metrics (the
``/metrics`` text, :meth:`WorkerMetrics.exposition`) and :meth:`Worker.health` (``/health``).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter, defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from finscore.app.console.produce import produce, transaction_events
from finscore.schemas import topics as T
from tests.artifacts import TEST_SIGNING_KEY, TEST_VERIFY_KEY, artifact
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    publish,
    running,
    wait_assigned,
    worker_config,
)

pytestmark = pytest.mark.broker


def metric(w, name: str) -> float:  # noqa: ANN001
    """The sum of the worker's ``name`` samples over every label, as ``/metrics`` serves them
    (0 before the first one)."""
    text = w.metrics.exposition().decode()
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def live_version(w) -> str | None:  # noqa: ANN001
    """The live model's version, as ``/health`` reports it."""
    model = w.health()["model"]
    return model["version"] if model else None


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return TEST_SIGNING_KEY, TEST_VERIFY_KEY


def txs_for(prefix: str, n: int, seed: int = 4) -> list:
    events = itertools.islice(transaction_events(prefix, seed=seed), n * 2)
    return [e for e in events if e[0] == prefix + T.TRANSACTIONS][:n]


def test_swap_under_load_loses_nothing_duplicates_nothing_and_is_monotonic(
    client, prefix, keys
) -> None:
    private, public = keys
    make_topics(client, prefix, partitions=3)
    publish(client, prefix, artifact("fraud", "1", seed=1).sign(private))
    txs = txs_for(prefix, 12000)
    cfg = worker_config(client, prefix, exactly_once=True, verify_key=public)
    with running(cfg) as w:
        wait_assigned(w)
        stop = threading.Event()
        feeder = threading.Thread(
            target=lambda: produce(client, iter(txs), rate=3000, stop=stop), daemon=True
        )
        feeder.start()
        while metric(w, "finscore_events_in_total") < 3000:  # v1 is scoring under load
            time.sleep(0.05)
        announced = time.time()
        publish(client, prefix, artifact("fraud", "2", seed=2).sign(private))
        feeder.join(60)
        msgs = consume_all(client, prefix + T.FRAUD_FLAGS, len(txs), read_committed=True, settle=2)
        swaps = w.health()["swaps"]
    flags = decode_all(msgs, "fraud_flag")
    counts = Counter(f["transaction_id"] for f in flags)
    assert len(counts) == len(txs) and max(counts.values()) == 1  # none lost, none twice
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for f in flags:
        by_partition[f["source_partition"]].append((f["source_offset"], f["model_version"]))
    for rows in by_partition.values():
        versions = [int(v) for _, v in sorted(rows)]
        assert versions == sorted(versions), "a partition went back to an older version"
    assert {f["model_version"] for f in flags} == {"1", "2"}
    swap_time = [s["at"] for s in swaps if s["to"] == "2"][0]
    assert swap_time - announced <= 2.0


def test_tampered_and_unsigned_artifacts_are_refused_while_scoring_continues(
    client, prefix, keys
) -> None:
    private, public = keys
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "1").sign(private))
    good = artifact("fraud", "2", seed=5).sign(private)
    tampered = dataclasses.replace(good, onnx=good.onnx[:-1] + bytes([good.onnx[-1] ^ 1]))
    unsigned = artifact("fraud", "3", seed=6)
    txs = txs_for(prefix, 600)
    with running(worker_config(client, prefix, verify_key=public)) as w:
        publish(client, prefix, tampered)
        publish(client, prefix, unsigned, sign=False)
        produce(client, iter(txs))
        flags = decode_all(
            consume_all(client, prefix + T.FRAUD_FLAGS, len(txs), settle=1), "fraud_flag"
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and metric(w, "finscore_model_rejections_total") < 2:
            time.sleep(0.1)
        rejections = metric(w, "finscore_model_rejections_total")
        live = live_version(w)
    assert len(flags) == len(txs)
    assert {f["model_version"] for f in flags} == {"1"}
    assert rejections == 2 and live == "1"


def test_rollback_is_an_announcement_and_late_workers_start_on_the_latest(client, prefix) -> None:
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "1"))
    publish(client, prefix, artifact("fraud", "2", seed=3))
    with running(worker_config(client, prefix)) as w:  # starts late: v2 already announced
        assert live_version(w) == "2"
        publish(client, prefix, artifact("fraud", "1"), action="ROLLBACK")
        deadline = time.monotonic() + 10
        while live_version(w) != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        txs = txs_for(prefix, 200)
        produce(client, iter(txs))
        flags = decode_all(consume_all(client, prefix + T.FRAUD_FLAGS, len(txs)), "fraud_flag")
    assert {f["model_version"] for f in flags} == {"1"}


def test_shadow_challenger_writes_to_the_shadow_topic_only(client, prefix) -> None:
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "1"))
    with running(worker_config(client, prefix)) as w:
        publish(client, prefix, artifact("fraud", "2", seed=8), action="SHADOW")
        deadline = time.monotonic() + 10
        while w.health()["challenger"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        txs = txs_for(prefix, 300)
        produce(client, iter(txs))
        live = decode_all(consume_all(client, prefix + T.FRAUD_FLAGS, len(txs)), "fraud_flag")
        shadow = decode_all(
            consume_all(client, prefix + T.shadow(T.FRAUD_FLAGS), len(txs)), "fraud_flag"
        )
    assert {f["model_version"] for f in live} == {"1"}
    assert {f["model_version"] for f in shadow} == {"2"}
    assert {f["transaction_id"] for f in live} == {f["transaction_id"] for f in shadow}


def test_compare_reports_live_versus_shadow_on_the_same_transactions(client, prefix) -> None:
    from finscore.app.sidecar.compare import compare

    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "1"))
    events = list(itertools.islice(transaction_events(prefix, seed=12), 3000))
    labels = [e for e in events if e[0] == prefix + T.FRAUD_LABELS]
    txs = [e for e in events if e[0] == prefix + T.TRANSACTIONS]
    with running(worker_config(client, prefix)) as w:
        publish(client, prefix, artifact("fraud", "2", seed=8), action="SHADOW")
        deadline = time.monotonic() + 10
        while w.health()["challenger"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        produce(client, iter(txs))
        consume_all(client, prefix + T.shadow(T.FRAUD_FLAGS), len(txs))
    produce(client, iter(labels))
    c = compare(client, prefix)
    assert (c.live_version, c.challenger_version) == ("1", "2")
    assert c.compared == len(txs) and c.labelled == len(labels)
    assert 0 <= c.decision_agreement <= 1 and c.mean_abs_score_diff > 0

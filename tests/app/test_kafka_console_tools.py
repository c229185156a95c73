"""Apache Kafka's own console tools, run from the jars `make setup` fetched, against a worker.

kafka-console-producer types transactions by hand (the README's kcat recipe, with Kafka's
tool), kafka-console-consumer reads the worker's JSON fraud flags, and kafka-consumer-groups
--describe shows the worker group's committed offsets and lag.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from finscore.app.broker import QUICK_START_JVM, java_binary, kafka_lib_dir, kafka_unavailable
from finscore.schemas import topics as T
from tests.artifacts import artifact
from tests.streams.kit import consume_all, make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker

PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def kafka_tool(main: str, *args: str, stdin: str | None = None, timeout: float = 90) -> str:
    """Run one of Kafka's console tools (the class its kafka-*.sh script runs); its stdout."""
    java = java_binary()
    assert java is not None
    cmd = [java, "-Xmx256m", *QUICK_START_JVM, "-cp", f"{kafka_lib_dir()}/*", main, *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{main} failed ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout


def tx_line(i: int) -> str:
    """A transaction typed by hand: key|JSON value, as in the README's kcat recipe."""
    doc = {
        "transaction_id": f"hand-{i}",
        "event_time": "2026-11-22T10:15:00Z",
        "customer_id": f"c{i % 7}",
        "terminal_id": f"t{i % 5}",
        "amount": "129.90",
    }
    return f"c{i % 7}|{json.dumps(doc)}"


def test_console_tools_read_json_flags_and_show_the_group_lag(client, prefix, backend) -> None:  # noqa: ANN001
    if backend == "tansu":
        pytest.skip(
            "Apache Kafka 4.4's Java console tools cannot talk to Tansu (the producer hangs, the "
            "consumer times out): see docs/ARCHITECTURE.md, Backends"
        )
    reason = kafka_unavailable()
    if reason is not None:
        pytest.skip(f"Apache Kafka's console tools: {reason}")
    boot = str(client["bootstrap.servers"])
    make_topics(client, prefix, partitions=3)
    publish(client, prefix, artifact("fraud", "3"))
    tx_topic, flags_topic = prefix + T.TRANSACTIONS, prefix + T.FRAUD_FLAGS
    produce_args = ["--bootstrap-server", boot, "--topic", tx_topic, "--reader-property",
                    "parse.key=true", "--reader-property", "key.separator=|"]  # fmt: skip
    n = 30
    kafka_tool(PRODUCER, *produce_args, stdin="".join(tx_line(i) + "\n" for i in range(n)))
    cfg = worker_config(client, prefix, json_topics=frozenset({flags_topic}))
    with running(cfg):
        consume_all(client, flags_topic, n, timeout=60)
    # The worker stopped (drained, committed); its flags are JSON any tool can read.
    out = kafka_tool(CONSUMER, "--bootstrap-server", boot, "--topic", flags_topic,
                     "--from-beginning", "--max-messages", str(n), "--timeout-ms", "30000",
                     "--formatter-property", "print.key=true",
                     "--formatter-property", "key.separator=|")  # fmt: skip
    flags = [json.loads(line.split("|", 1)[1]) for line in out.splitlines() if "|" in line]
    assert sorted(f["transaction_id"] for f in flags) == sorted(f"hand-{i}" for i in range(n))
    assert all(0.0 <= f["score"] <= 1.0 and f["model_version"] == "3" for f in flags)
    # 12 more while no worker runs: the group's lag on the input topic is exactly those.
    kafka_tool(PRODUCER, *produce_args, stdin="".join(tx_line(i) + "\n" for i in range(n, n + 12)))
    out = kafka_tool(GROUPS, "--bootstrap-server", boot, "--describe", "--group", cfg.group)
    rows = [line.split() for line in out.splitlines()]
    header = next(r for r in rows if r[:2] == ["GROUP", "TOPIC"])
    col = {name: header.index(name) for name in ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LAG")}
    tx_rows = [r for r in rows if len(r) >= len(header) - 3 and r[col["TOPIC"]] == tx_topic]
    assert sorted(int(r[col["PARTITION"]]) for r in tx_rows) == [0, 1, 2]
    assert sum(int(r[col["CURRENT-OFFSET"]]) for r in tx_rows) == n
    assert sum(int(r[col["LAG"]]) for r in tx_rows) == 12

"""The console against the real embedded broker: produce → tail, independent Avro reader,
one-sentence errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import fastavro
import pytest

from finscore.schemas import topics as T
from finscore.schemas.codec import load_schema
from finscore.streams.admin import ensure_topics
from tests.streams.kit import ROOT, consume_all

pytestmark = pytest.mark.broker


def finscore(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finscore.app.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_produce_then_tail_10000_events_nothing_missing(client, prefix) -> None:
    env = {"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"], "FINSCORE_TOPIC_PREFIX": prefix,
           "FINSCORE_PARTITIONS": "3"}  # fmt: skip
    r = finscore("topics", "--create", env=env)
    assert r.returncode == 0, r.stderr
    r = finscore("produce", "ticks", "--count", "10000", "--rate", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert "sent 10,000 events" in r.stderr
    r = finscore("tail", prefix + T.MARKET_TICKS, "--from-beginning", "--no-follow", env=env)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]  # piped: one record per line
    assert len(docs) == 10000
    seen = {(d["instrument"], d["sequence"]) for d in docs}
    assert len(seen) == 10000  # every event, once
    per_instrument: dict[str, list[int]] = {}
    for inst, seq in seen:
        per_instrument.setdefault(inst, []).append(seq)
    for seqs in per_instrument.values():  # no gaps
        assert sorted(seqs) == list(range(min(seqs), min(seqs) + len(seqs)))


def test_an_independent_avro_reader_decodes_what_produce_writes(client, prefix) -> None:
    env = {"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"], "FINSCORE_TOPIC_PREFIX": prefix,
           "FINSCORE_PARTITIONS": "1"}  # fmt: skip
    assert finscore("topics", "--create", env=env).returncode == 0
    r = finscore("produce", "transactions", "--count", "300", "--rate", "0", env=env)
    assert r.returncode == 0, r.stderr
    schemas = {T.TRANSACTIONS: "transaction", T.FRAUD_LABELS: "fraud_label"}
    total = 0
    for topic, name in schemas.items():
        parsed = fastavro.parse_schema(load_schema(name))  # the .avsc alone
        msgs = consume_all(client, prefix + topic, 1, timeout=10, settle=1.0)
        for m in msgs:
            v = m.value()
            assert v[:2] == b"\xc3\x01"  # Avro single-object encoding
            rec = fastavro.schemaless_reader(io.BytesIO(v[10:]), parsed)
            assert rec["transaction_id"]
            total += 1
    assert total >= 300


def test_no_broker_is_one_sentence_and_a_hint_not_a_traceback() -> None:
    r = finscore("topics", env={"FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=60)
    assert r.returncode == 1
    assert "no Kafka broker answers at 127.0.0.1:1" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr


def test_unknown_topic_is_a_clear_error(client) -> None:
    r = finscore("tail", "no-such-topic", "--no-follow",
                 env={"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"]})  # fmt: skip
    assert r.returncode == 1
    assert "topic 'no-such-topic' does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bad_model_path_is_a_clear_error(client, prefix, tmp_path) -> None:
    env = {"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"], "FINSCORE_TOPIC_PREFIX": prefix,
           "FINSCORE_REGISTRY_DIR": str(tmp_path / "nowhere")}  # fmt: skip
    ensure_topics(client, T.catalog(1, prefix))
    r = finscore("worker", "fraud", env=env)
    assert r.returncode == 1
    assert "no usable fraud model" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr

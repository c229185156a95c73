"""The console as kcat/rpk users expect it: a fast `--help` (nothing heavy imported), produce
from a file or stdin, tail as JSON lines, offsets, clean errors (issue 16)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "confluent_kafka", "finscore.compression", "numpy")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 - our own list literal


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _loaded_after("import finscore.app.cli.group") == []


def test_help_loads_no_heavy_module_and_lists_every_command() -> None:
    code = (
        "from finscore.app.cli.group import cli\n"
        "try:\n    cli.main(['--help'], prog_name='finscore')\n"
        "except SystemExit:\n    pass\n"
    )
    assert _loaded_after(code) == []
    r = subprocess.run(
        [sys.executable, "-m", "finscore.app.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for name in ("broker", "topics", "produce", "tail", "worker", "models", "status", "demo",
                 "compress", "dashboard", "sidecar", "bench"):  # fmt: skip
        assert f"  {name} " in r.stdout, r.stdout


# -- produce and tail against the embedded broker ------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import pytest  # noqa: E402

from tests.artifacts import artifact  # noqa: E402
from tests.streams.kit import ROOT, make_topics, publish, running, worker_config  # noqa: E402


def finscore(*args: str, env: dict, stdin: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "finscore.app.cli", *args], input=stdin, env={**os.environ, **env},
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _env(client: dict, prefix: str) -> dict[str, str]:
    return {"FINSCORE_BOOTSTRAP_SERVERS": str(client["bootstrap.servers"]),
            "FINSCORE_TOPIC_PREFIX": prefix, "FINSCORE_PARTITIONS": "2"}  # fmt: skip


def _tx(i: int) -> dict:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"transaction_id": f"console-{i}", "event_time": now, "customer_id": f"c{i}",
            "terminal_id": f"t{i}", "amount": f"{10 + i}.50"}  # fmt: skip


@pytest.mark.broker
def test_produce_from_stdin_then_tail_shows_one_json_line_per_flag(client, prefix) -> None:  # noqa: ANN001
    make_topics(client, prefix, partitions=2)
    publish(client, prefix, artifact("fraud", "3"))
    env = _env(client, prefix)
    lines = [json.dumps(_tx(1)), json.dumps(_tx(2)), '{"transaction_id": "no-time"}', "not json"]
    with running(worker_config(client, prefix)):
        r = finscore("produce", "transactions", "-", env=env, stdin="\n".join(lines) + "\n")
        assert r.returncode == 3, r.stderr  # two lines rejected, the valid two sent
        assert "line 3: rejected" in r.stderr and "line 4: rejected" in r.stderr, r.stderr
        assert "sent 2 events" in r.stderr and "rejected 2 line(s)" in r.stderr, r.stderr
        deadline, ids = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            t = finscore("tail", "fraud-flags", "-o", "beginning", "-e", env=env)
            assert t.returncode == 0, t.stderr
            out = t.stdout.splitlines()
            docs = [json.loads(line) for line in out]  # every line is one JSON object
            ids = sorted(d["transaction_id"] for d in docs)
            if len(ids) >= 2:
                break
            time.sleep(0.5)
    assert ids == ["console-1", "console-2"], t.stdout
    assert len(out) == 2  # `| wc -l` counts records
    assert all(d["model_version"] == "3" for d in docs)


@pytest.mark.broker
def test_tail_offsets_partition_and_envelope(client, prefix) -> None:  # noqa: ANN001
    make_topics(client, prefix, partitions=2)
    env = _env(client, prefix)
    csv_text = "transaction_id,event_time,customer_id,terminal_id,amount\n" + "".join(
        f"csv-{i},{1_760_000_000_000 + i},c{i % 3},t1,{i}.25\n" for i in range(10)
    )
    r = finscore("produce", "transactions", "-", "-k", "same-key", env=env, stdin=csv_text)
    assert r.returncode == 0, r.stderr
    t = finscore("tail", "transactions", "-e", env=env)  # default: the end, nothing replayed
    assert t.returncode == 0 and t.stdout == "", t.stdout
    t = finscore("tail", "transactions", "-o", "-3", "-e", "--envelope", env=env)
    docs = [json.loads(line) for line in t.stdout.splitlines()]
    assert [d["value"]["transaction_id"] for d in docs] == ["csv-7", "csv-8", "csv-9"]
    assert {d["key"] for d in docs} == {"same-key"} and all(d["timestamp"] > 0 for d in docs)
    part = docs[0]["partition"]
    t = finscore("tail", "transactions", "-o", "4", "-p", str(part), "-e", env=env)
    assert [json.loads(x)["transaction_id"] for x in t.stdout.splitlines()] == [
        f"csv-{i}" for i in range(4, 10)
    ]
    t = finscore("tail", "transactions", "-o", "beginning", "-e", "--format", "avro-json",
                 env=env)  # fmt: skip
    first = json.loads(t.stdout.splitlines()[0])
    assert first["transaction_id"] == "csv-0" and first["event_time"] == 1_760_000_000_000


@pytest.mark.broker
def test_produce_count_counts_transactions_not_labels(client, prefix) -> None:  # noqa: ANN001
    from finscore.app.console.produce import produce
    from finscore.schemas import topics as T

    make_topics(client, prefix, partitions=1)
    tx, labels = prefix + T.TRANSACTIONS, prefix + T.FRAUD_LABELS
    events = ((tx if i % 3 else labels, "k", "transaction", b"{}") for i in range(1000))
    stats = produce(client, events, count=50, count_topic=tx)
    assert stats.by_topic == {tx: 50, labels: 25}, stats.by_topic


def test_tail_on_an_unreachable_broker_is_one_sentence() -> None:
    r = finscore("tail", "fraud-flags", env={"FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no Kafka broker answers at 127.0.0.1:1" in r.stderr, r.stderr


def test_bootstrap_servers_option_overrides_the_environment() -> None:
    r = finscore("-b", "127.0.0.1:1", "topics",
                 env={"FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:2"})  # fmt: skip
    assert r.returncode == 1 and "127.0.0.1:1" in r.stderr, r.stderr


@pytest.mark.broker
def test_ctrl_c_on_produce_flushes_and_summarises(client, prefix) -> None:  # noqa: ANN001
    import re
    import signal

    from tests.streams.kit import consume_all

    make_topics(client, prefix, partitions=1)
    from finscore.streams.admin import offsets
    from tests.signals import interruptible

    proc = subprocess.Popen(
        [sys.executable, "-m", "finscore.app.cli", "produce", "ticks", "--rate", "2000"],
        env={**os.environ, **_env(client, prefix)}, cwd=ROOT, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible,
    )  # fmt: skip
    try:
        deadline, flowing = time.monotonic() + 90, False  # a loaded CI machine starts slowly
        while time.monotonic() < deadline and not flowing:  # mid-stream, not at start-up
            flowing = sum(o.high for o in offsets(client, [prefix + "market-ticks"])) > 500
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert flowing, "no ticks within 90 s: the interrupt would have hit start-up"
        _, err = proc.communicate(timeout=60)
    finally:  # never leave a producer running past its test
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "still in queue" not in err and "Traceback" not in err, err
    sent = int(re.search(r"sent ([\d,]+) events", err).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert sent > 0
    got = consume_all(client, prefix + "market-ticks", sent, timeout=20, settle=0.5)
    assert len(got) == sent  # everything counted was delivered, nothing lost


@pytest.mark.broker
def test_a_confluent_wire_format_transaction_is_scored_with_the_registry_set(
    client, prefix, schema_registry_url
):  # noqa: ANN001, ANN201
    from finscore.app.cli.worker import worker_config as cli_worker_config
    from finscore.settings import Settings

    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "4"))
    url = schema_registry_url
    env = {**_env(client, prefix), "FINSCORE_SCHEMA_REGISTRY_URL": url}
    cfg = cli_worker_config(Settings(schema_registry_url=url), "fraud")
    assert cfg.schema_registry == {"url": url}  # the setting reaches workers
    r = finscore("produce", "transactions", "-", "--encoding", "confluent", env=env,
                 stdin=json.dumps(_tx(7)) + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    raw = finscore("tail", "transactions", "-o", "beginning", "-e", "--envelope", env=env)
    assert json.loads(raw.stdout)["value"]["transaction_id"] == "console-7", raw.stdout
    assert "DeprecationWarning" not in r.stderr + raw.stderr  # authlib's, on import
    with running(worker_config(client, prefix, schema_registry={"url": url})):
        deadline, flags = time.monotonic() + 30, ""
        while time.monotonic() < deadline and not flags:
            flags = finscore("tail", "fraud-flags", "-o", "beginning", "-e", env=env).stdout
            time.sleep(0.3)
    dlq = finscore("tail", "transactions-dlq", "-o", "beginning", "-e", env=env).stdout
    assert dlq == "", dlq
    assert json.loads(flags)["transaction_id"] == "console-7"


@pytest.mark.broker
def test_status_never_shows_a_negative_lag(client, prefix, tmp_path) -> None:  # noqa: ANN001
    import re

    from confluent_kafka import Consumer, TopicPartition

    from tests.streams.kit import produce_records

    make_topics(client, prefix, partitions=1)
    topic = prefix + "transactions"
    produce_records(client, topic, [(b"k", b"{}")] * 5)
    c = Consumer({**client, "group.id": f"{prefix}finscore-fraud", "enable.auto.commit": False})
    try:  # what a stale high watermark looks like: committed past the reported end
        c.commit(offsets=[TopicPartition(topic, 0, 500)], asynchronous=False)
    finally:
        c.close()
    env = {**_env(client, prefix), "FINSCORE_PARTITIONS": "1", "COLUMNS": "200",
           "FINSCORE_REGISTRY_DIR": str(tmp_path)}  # fmt: skip
    r = finscore("status", env=env)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if f"{topic} " in line)
    assert not re.search(r"│ *-\d", row) and " 0*" in row, row  # clamped and marked
    assert "* the broker reports" in r.stdout, r.stdout


def test_the_dashboard_serves_each_registered_versions_own_report(tmp_path) -> None:  # noqa: ANN001
    import urllib.error
    import urllib.request

    from finscore.app.dashboard.server import Dashboard

    class NoState:  # the report route reads no state
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def snapshot(self) -> dict:
            return {}

    for v in ("1", "2"):
        (tmp_path / "fraud" / f"v{v}").mkdir(parents=True)
        (tmp_path / "fraud" / f"v{v}" / "size.svg").write_text(f"<svg>v{v}</svg>")
    dash = Dashboard(NoState(), port=0, reports_dir=tmp_path).start()  # type: ignore[arg-type]
    try:
        body = urllib.request.urlopen(f"{dash.url}report/fraud/v2/size.svg", timeout=5).read()
        assert body == b"<svg>v2</svg>"
        for bad in ("report/fraud/x2/size.svg", "report/fraud/v2/../../etc.svg"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(dash.url + bad, timeout=5)
    finally:
        dash.stop()


def test_models_list_fits_80_columns_and_has_json(tmp_path) -> None:  # noqa: ANN001
    import dataclasses

    from finscore.models.registry import Artifact, Registry

    reg = Registry(tmp_path)
    for seed in (0, 1):
        a = artifact("fraud", "", seed=seed)
        metrics = {"ap": 0.61 + seed / 100, "auc": 0.9, "cp100": 0.2, "teacher_ap": 0.63,
                   "teacher_auc": 0.91}  # fmt: skip
        steps = [{"step": s} for s in ("distill", "prune_structured", "weight_share")]
        reg.publish(Artifact(dataclasses.replace(a.manifest, metrics=metrics, steps=steps), a.onnx))
    reg.promote("fraud", "2")
    env = {"FINSCORE_REGISTRY_DIR": str(tmp_path), "COLUMNS": "80"}
    r = finscore("models", "list", env=env)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    assert "ap 0.6200 (0.6300)" in r.stdout and "2 ★" in r.stdout, r.stdout
    j = json.loads(finscore("models", "list", "--json", env=env).stdout)
    assert [(m["version"], m["champion"]) for m in j] == [("1", False), ("2", True)]
    assert j[1]["steps"] == ["distill", "prune_structured", "weight_share"]


@pytest.mark.broker
def test_status_group_shows_each_partitions_lag_and_owner(
    client, prefix, tmp_path, backend
) -> None:  # noqa: ANN001
    """`status --group G` is `kafka-consumer-groups --describe`: a row per partition with the
    committed offset, the end, the lag (never negative) and the member that owns it; piped, the
    long topic names are whole, not cut to `transactions-d…`."""
    import re

    from confluent_kafka import Consumer

    from tests.streams.kit import produce_records

    make_topics(client, prefix, partitions=2)
    topic = prefix + "transactions"
    produce_records(client, topic, [(f"k{i}".encode(), b"{}") for i in range(40)])
    group = f"{prefix}console-group"
    c = Consumer({**client, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "client.id": "lag-probe",
                  "session.timeout.ms": 6000})  # fmt: skip
    try:
        c.subscribe([topic])
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 40 and time.monotonic() < deadline:
            got += [m for m in c.consume(40, 0.5) if m.error() is None]
        assert len(got) == 40
        part, off = got[0].partition(), got[0].offset()
        from confluent_kafka import TopicPartition

        c.commit(offsets=[TopicPartition(topic, part, off + 1)], asynchronous=False)
        env = {**_env(client, prefix), "FINSCORE_REGISTRY_DIR": str(tmp_path)}
        r = finscore("status", "--group", group, env=env)
    finally:
        c.close()
    assert r.returncode == 0, r.stderr
    section = r.stdout[r.stdout.index(f"group {group}") :]
    rows = [line for line in section.splitlines() if topic in line]
    assert rows, r.stdout  # the whole name, although piped (80 columns)
    row = next(line for line in rows if re.search(rf"│ *{part} *│", line))
    cells = [x.strip() for x in row.split("│")[1:-1]]
    committed, end, lag = (int(x.replace(",", "").rstrip("*")) for x in cells[2:5])
    assert committed == off + 1 and lag == end - committed >= 0
    in_part = sum(1 for m in got if m.partition() == part)
    assert end == in_part  # the true end, even where the broker's high watermark is stale
    if backend == "kafka":  # Tansu describes groups without their members
        assert "lag-probe" in r.stdout
    assert not re.search(r"│ *-\d", r.stdout)

"""Every sidecar input is untrusted (issue 14, observation 6): a bad command, label, flag, tick
or signal is logged, counted and dead-lettered, never fatal; commands obey the cooldown.

Real embedded broker, real sidecar consumer; the recompression itself (minutes of training) is
replaced by a recorder in the cooldown test, which is about *whether* a run starts.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.app.sidecar.inputs import BadInput, check_label, parse_command
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from tests.streams.kit import consume_all, make_topics, produce_records

pytestmark = pytest.mark.broker

NOW_MS = int(time.time() * 1000)


def _label(**kw: object) -> dict:
    rec = {"transaction_id": "tx-1", "customer_id": "c1", "terminal_id": "t1",
           "tx_time": NOW_MS - 86_400_000, "label_time": NOW_MS, "is_fraud": False,
           "amount": 12.5, "scenario": None}  # fmt: skip
    rec.update(kw)
    return rec


def _config(client: dict, prefix: str, tmp_path, **kw) -> SidecarConfig:  # noqa: ANN001
    return SidecarConfig(client=client, topic_prefix=prefix, registry_dir=tmp_path / "registry",
                         reports_dir=tmp_path / "reports", **kw)  # fmt: skip


def _poll_until(sc: Sidecar, cond, timeout: float = 20.0) -> list:  # noqa: ANN001
    commands: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        commands += sc.poll(0.2)
    return commands


def test_bad_records_on_every_sidecar_input_are_dead_lettered_and_never_fatal(
    client, prefix, tmp_path
) -> None:
    make_topics(client, prefix, partitions=1)
    sc = Sidecar(_config(client, prefix, tmp_path))
    try:
        cmd = prefix + T.SIDECAR_COMMANDS
        bad_commands = [b"123", b"\xff\xfe\x00", b"null", b"[]", b'{"model": "nope"}',
                        b'{"command": "rm -rf", "model": "fraud"}']  # fmt: skip
        produce_records(client, cmd, [(None, v) for v in bad_commands])
        produce_records(client, cmd, [(b"fraud", b'{"command": "recompress", "model": "fraud"}')])
        labels = Codec("fraud_label")
        bad_labels = [
            b"\x00garbage",
            labels.encode(_label(tx_time=7_258_118_400_000)),  # the year 2200
            labels.encode(_label(amount=-99_999)),
            labels.encode(_label(transaction_id="")),
        ]
        good_label = labels.encode(_label(transaction_id="tx-ok"))
        produce_records(
            client, prefix + T.FRAUD_LABELS, [(b"t1", v) for v in [*bad_labels, good_label]]
        )
        flags = Codec("fraud_flag")
        flag = {"transaction_id": "tx-1", "customer_id": "c1", "terminal_id": "t1", "score": 0.5,
                "flagged": False, "threshold": 0.5, "model_name": "fraud", "model_version": "1",
                "event_time": NOW_MS, "processing_time": NOW_MS, "source_topic": "transactions",
                "source_partition": 0, "source_offset": 1, "top_features": []}  # fmt: skip
        produce_records(client, prefix + T.FRAUD_FLAGS,
                        [(b"c1", flags.encode({**flag, "score": float("nan")})), (b"c1", b"xx")])  # fmt: skip
        ticks = Codec("market_tick")
        tick = {"instrument": "GOOG", "event_time": NOW_MS * 1000, "sequence": 1, "bids": [],
                "asks": [{"price": 10.0, "size": 5}], "trades": []}  # fmt: skip
        produce_records(
            client, prefix + T.MARKET_TICKS, [(b"GOOG", ticks.encode(tick)), (b"G", b"?")]
        )

        total_bad = len(bad_commands) + len(bad_labels) + 2 + 2
        commands = _poll_until(sc, lambda: sum(sc.state.bad_records.values()) >= total_bad)
        assert sum(sc.state.bad_records.values()) == total_bad, sc.state.bad_records
        assert [c.model for c in commands] == ["fraud"]  # the one valid command
        assert len(sc.buffer) == 1  # only the valid label joined the training buffer
        # Dead letters where the catalog has a dead-letter topic (commands, labels, ticks);
        # flags are a worker's output and have none: logged and counted only.
        dead = consume_all(client, prefix + T.dlq(T.SIDECAR_COMMANDS), len(bad_commands), 20)
        assert sorted(Codec("dead_letter").decode(m.value())["value"] for m in dead) == sorted(
            bad_commands
        )
        dead_labels = consume_all(client, prefix + T.dlq(T.FRAUD_LABELS), len(bad_labels), 20)
        reasons = [Codec("dead_letter").decode(m.value())["reason"] for m in dead_labels]
        assert len(reasons) == len(bad_labels), reasons
        assert len(consume_all(client, prefix + T.dlq(T.MARKET_TICKS), 2, 20)) == 2
    finally:
        sc.consumer.close()


def test_commands_obey_the_recompression_cooldown(client, prefix, tmp_path) -> None:
    """Three commands in a few seconds start one recompression; the others are refused with
    a reason (was: one recompression per command, cooldown bypassed)."""
    make_topics(client, prefix, partitions=1)
    sc = Sidecar(_config(client, prefix, tmp_path, cooldown_s=60.0, markets=False))
    started: list[tuple[str, str]] = []

    def record(reason: str, model: str = "fraud") -> None:  # an instant, finished run
        started.append((model, reason))
        sc.state.last_run = time.time()

    sc._recompress_async = record  # type: ignore[method-assign]
    thread = threading.Thread(target=sc.run, daemon=True)
    thread.start()
    try:
        cmd = json.dumps({"command": "recompress", "model": "fraud"}).encode()
        for i in range(3):
            produce_records(client, prefix + T.SIDECAR_COMMANDS, [(b"fraud", cmd)])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(started) + len(sc.state.refused) <= i:
                time.sleep(0.05)
        assert len(started) == 1, started
        assert started[0][1].startswith("command")
        assert len(sc.state.refused) == 2
        assert all("cooldown" in r["why"] for r in sc.state.refused), sc.state.refused
    finally:
        sc.stop()
        thread.join(30)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"123",
        b"\x80",
        b'"fraud"',
        b"null",
        b"{}",
        b'{"model": 1}',
        b'{"model": "x"}',
        b'{"model": "fraud", "command": "delete"}',
        b"{" * 10_000,
    ],  # fmt: skip
)
def test_parse_command_refuses_anything_but_a_known_command(value: bytes) -> None:
    if value == b"{}":  # no fields: the default command (recompress fraud), as the CLI sent
        assert parse_command(value).model == "fraud"
        return
    with pytest.raises(BadInput):
        parse_command(value)


def test_check_label_bounds() -> None:
    check_label(_label(), newest_ms=None)
    for bad in (_label(tx_time=0), _label(amount=float("inf")), _label(customer_id="x" * 300)):
        with pytest.raises(BadInput):
            check_label(bad, newest_ms=None)
    with pytest.raises(BadInput, match="ahead"):
        check_label(_label(tx_time=NOW_MS), newest_ms=NOW_MS - 400 * 86_400_000)

"""The sidecar's loop without a broker: its inputs come from the in-memory bus
(:class:`finscore.streams.testing.InMemoryBus`, through :class:`ReaderInputs`) and its dead
letters go back to it. Bad records are counted and dead-lettered, good ones reach their half,
commands obey the cooldown, a missing input topic is refused at start."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from finscore.app.sidecar import ReaderInputs, Sidecar, SidecarConfig
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.exceptions import TopicMissing
from finscore.streams.testing import InMemoryBus

NOW_MS = int(time.time() * 1000)
RECOMPRESS = json.dumps({"command": "recompress", "model": "fraud"}).encode()


class BusDeadLetters:
    """A :class:`~finscore.app.sidecar.loop.DeadLetterProducer` writing to the bus."""

    def __init__(self, bus: InMemoryBus) -> None:
        self.bus = bus

    def produce(
        self, topic: str, value: bytes, key: bytes | None, *, on_delivery: Callable[..., None]
    ) -> None:
        self.bus.produce(topic, value, key)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _label(**kw: Any) -> dict:
    rec = {"transaction_id": "tx-1", "customer_id": "c1", "terminal_id": "t1",
           "tx_time": NOW_MS - 86_400_000, "label_time": NOW_MS, "is_fraud": False,
           "amount": 12.5, "scenario": None}  # fmt: skip
    rec.update(kw)
    return rec


def _sidecar(bus: InMemoryBus, tmp_path: Path, **kw: Any) -> Sidecar:
    cfg = SidecarConfig(client={"bootstrap.servers": "127.0.0.1:9"}, registry_dir=tmp_path / "r",
                        reports_dir=tmp_path / "reports", **kw)  # fmt: skip
    return Sidecar(
        cfg, consumer=ReaderInputs(bus, "finscore-sidecar"), producer=BusDeadLetters(bus)
    )


def test_bad_records_are_dead_lettered_and_good_ones_reach_their_half(tmp_path: Path) -> None:
    bus = InMemoryBus()
    bus.create_catalog(partitions=1)
    sc = _sidecar(bus, tmp_path)
    labels = Codec("fraud_label")
    bus.produce(T.FRAUD_LABELS, labels.encode(_label()))
    bus.produce(T.FRAUD_LABELS, labels.encode(_label(transaction_id="tx-2", amount=-5.0)))
    bus.produce(T.FRAUD_LABELS, b"\x00garbage")
    bus.produce(T.FRAUD_FLAGS, b"{")  # a worker output: counted, no dead-letter topic
    bus.produce(T.MARKET_TICKS, None)
    bus.produce(T.SIDECAR_COMMANDS, b"123")
    bus.produce(T.SIDECAR_COMMANDS, RECOMPRESS, b"fraud")
    commands = sc.poll(0)
    assert [c.model for c in commands] == ["fraud"]
    assert len(sc.buffer) == 1 and sc.fraud.buffer is sc.buffer
    assert sum(sc.state.bad_records.values()) == 5, sc.state.bad_records
    assert sc.state.bad_records[f"{T.FRAUD_FLAGS}:DecodeError"] == 1
    assert len(bus.messages(T.dlq(T.FRAUD_LABELS))) == 2
    assert len(bus.messages(T.dlq(T.MARKET_TICKS))) == 1
    assert len(bus.messages(T.dlq(T.SIDECAR_COMMANDS))) == 1


def test_commands_obey_the_cooldown(tmp_path: Path) -> None:
    bus = InMemoryBus()
    bus.create_catalog(partitions=1)
    sc = _sidecar(bus, tmp_path, cooldown_s=60.0, markets=False)
    started: list[tuple[str, str]] = []

    def record(reason: str, model: str = "fraud") -> None:  # an instant, finished run
        started.append((model, reason))
        sc.state.last_run = time.time()

    sc._recompress_async = record  # type: ignore[method-assign]
    sc.state.last_run = time.time() - 60.0  # eligible at once, as run() starts
    for _ in range(3):
        bus.produce(T.SIDECAR_COMMANDS, RECOMPRESS, b"fraud")
        sc.step(0)
    assert started == [("fraud", "command: fraud")]
    assert len(sc.state.refused) == 2
    assert all("cooldown" in r["why"] for r in sc.state.refused), sc.state.refused
    assert sc.status()["refused_commands"] == 2


def test_a_missing_input_topic_is_refused_at_start(tmp_path: Path) -> None:
    bus = InMemoryBus()
    bus.create_topic(T.FRAUD_LABELS)
    with pytest.raises(TopicMissing, match=T.FRAUD_FLAGS):
        _sidecar(bus, tmp_path, markets=False)

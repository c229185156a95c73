"""The worker loop on the in-memory bus (:mod:`finscore.streams.testing`): no broker, real ONNX.

Fraud and market workers score batches end to end; garbage records become dead letters with
reasons; offsets are committed only after the records produced for them are delivered; a hot
swap is applied between batches and every output names its model version; a restarted worker
resumes from the committed offsets without loss or duplicates. The fraud worker's side input
(labels) comes from the same bus.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from finscore.app.console.produce import transaction_events
from finscore.models.registry import Artifact, Registry
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.samples import sample
from finscore.streams.exceptions import TransportError
from finscore.streams.hot_swap import encode_announcement
from finscore.streams.testing import Commit, Delivery, InMemoryBus
from finscore.streams.worker import Worker, WorkerConfig
from tests.artifacts import TEST_SIGNING_KEY, artifact, signed
from tests.streams.kit import worker_config
from tests.streams.test_market_pipeline import sim_ticks

TX, FLAG, DEAD = Codec("transaction"), Codec("fraud_flag"), Codec("dead_letter")
TICK, SIGNAL, LABEL = Codec("market_tick"), Codec("price_signal"), Codec("fraud_label")
WINDOW = 20


def _bus(partitions: int = 2) -> InMemoryBus:
    bus = InMemoryBus()
    bus.create_catalog(partitions)
    return bus


def _announce(bus: InMemoryBus, art: Artifact, action: str = "PROMOTE", **kw: object) -> None:
    key, value = encode_announcement(signed(art), action, signing_key=TEST_SIGNING_KEY, **kw)  # type: ignore[arg-type]
    bus.produce(T.MODEL_UPDATES, value, key, partition=0)


def _transactions(bus: InMemoryBus, n: int, seed: int = 3, skip: int = 0) -> list[dict]:
    """Produce the ``skip``-th to ``skip + n``-th simulated transactions (keyed by customer)."""
    out: list[dict] = []
    for _, key, schema, rec in transaction_events("", seed=seed):
        if schema != "transaction":
            continue
        if skip:
            skip -= 1
            continue
        bus.produce(T.TRANSACTIONS, TX.encode(rec, "avro"), key.encode())
        out.append(rec)
        if len(out) == n:
            break
    return out


def _ticks(bus: InMemoryBus, records: list[dict]) -> None:
    for r in records:
        bus.produce(T.MARKET_TICKS, TICK.encode(r, "avro"), r["instrument"].encode())


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


@contextmanager
def _running(bus: InMemoryBus, cfg: WorkerConfig) -> Iterator[Worker]:
    """A worker on ``bus`` in a thread, stopped (committed) on exit; its error is raised."""
    w = Worker(cfg, transports=bus)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    _wait(lambda: w.health()["status"] == "ok" or bool(errors))
    try:
        yield w
    finally:
        w.stop()
        t.join(30)
        if errors:
            raise errors[0]


def _cfg(stream: str = "fraud", **kw: object) -> WorkerConfig:
    kw.setdefault("commit_interval", 0.05)
    return worker_config({}, "", stream, **kw)


def _decoded(bus: InMemoryBus, topic: str, codec: Codec) -> list[dict]:
    return [codec.decode(m.value) for m in bus.messages(topic) if m.value is not None]


# -- scoring end to end ---------------------------------------------------------------------


def test_a_fraud_worker_scores_every_transaction_once_with_its_model() -> None:
    bus = _bus()
    _announce(bus, artifact("fraud", "7"))
    sent = _transactions(bus, 1500)
    with _running(bus, _cfg()):
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= len(sent))
    flags = _decoded(bus, T.FRAUD_FLAGS, FLAG)
    assert sorted(f["transaction_id"] for f in flags) == sorted(r["transaction_id"] for r in sent)
    assert {f["model_version"] for f in flags} == {"7"}
    assert all(0.0 <= f["score"] <= 1.0 for f in flags)
    assert bus.committed("finscore-fraud") == {
        (T.TRANSACTIONS, p): end for p, end in bus.end_offsets(T.TRANSACTIONS).items()
    }


def test_a_market_worker_signals_every_full_window_with_its_model() -> None:
    bus = _bus()
    _announce(bus, artifact("market", "4", window=WINDOW))
    records = sim_ticks(600)
    _ticks(bus, records)
    n_instruments = len({r["instrument"] for r in records})
    want = len(records) - n_instruments * (WINDOW - 1)
    with _running(bus, _cfg("market", bounds=_far_past_bounds())):
        _wait(lambda: len(bus.messages(T.PRICE_SIGNALS)) >= want)
    signals = _decoded(bus, T.PRICE_SIGNALS, SIGNAL)
    assert len(signals) == want
    assert {s["model_version"] for s in signals} == {"4"}
    assert bus.messages(T.dlq(T.MARKET_TICKS)) == []


def _far_past_bounds():  # noqa: ANN202 - the simulated ticks' clock starts far in the past
    import dataclasses

    from finscore.streams.bounds import DEFAULT_BOUNDS

    return dataclasses.replace(DEFAULT_BOUNDS, min_event_time_ms=0)


@pytest.mark.parametrize("stream", ["fraud", "market"])
def test_garbage_records_become_dead_letters_with_reasons_and_scoring_goes_on(stream: str) -> None:
    bus = _bus(1)
    if stream == "fraud":
        _announce(bus, artifact("fraud", "1"))
        good = _transactions(bus, 50)
        topic, out_topic, want = T.TRANSACTIONS, T.FRAUD_FLAGS, len(good)
        impossible = TX.encode({**sample("transaction", 10), "amount": "-12.50"}, "avro")
        cfg = _cfg()
    else:
        _announce(bus, artifact("market", "1", window=WINDOW))
        records = sim_ticks(200)
        _ticks(bus, records)
        topic, out_topic = T.MARKET_TICKS, T.PRICE_SIGNALS
        want = len(records) - len({r["instrument"] for r in records}) * (WINDOW - 1)
        impossible = TICK.encode({**records[-1], "sequence": -1}, "avro")
        cfg = _cfg("market", bounds=_far_past_bounds())
    garbage = [b"\x00\x01garbage", b"not json at all", None, impossible]
    for value in garbage:
        bus.produce(topic, value, b"k")
    with _running(bus, cfg):
        _wait(lambda: len(bus.messages(T.dlq(topic))) >= len(garbage))
        _wait(lambda: len(bus.messages(out_topic)) >= want)
    dead = _decoded(bus, T.dlq(topic), DEAD)
    assert [d["error_type"] for d in dead] == [
        "DecodeError",
        "DecodeError",
        "EmptyValue",
        "ImpossibleValue",
    ]
    assert all(d["reason"] and d["source_topic"] == topic for d in dead)
    assert len(bus.messages(out_topic)) == want


def test_the_fraud_workers_labels_come_from_the_same_bus() -> None:
    """Labels read at start-up and while running are side inputs from the injected bus: a bad
    label of either is a dead letter on the labels' dead-letter topic."""
    bus = _bus(1)
    _announce(bus, artifact("fraud", "1"))
    bus.produce(T.FRAUD_LABELS, LABEL.encode(sample("fraud_label", 1), "avro"), b"t1")
    bus.produce(T.FRAUD_LABELS, b"garbage before start", b"t1")
    with _running(bus, _cfg()) as w:
        _transactions(bus, 10)
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= 10)
        bus.produce(T.FRAUD_LABELS, b"garbage while running", b"t1")
        _wait(lambda: len(bus.messages(T.dlq(T.FRAUD_LABELS))) >= 2)
        assert w.stream.labels.features is w.stream.features  # type: ignore[attr-defined]
    dead = _decoded(bus, T.dlq(T.FRAUD_LABELS), DEAD)
    assert [d["value"] for d in dead] == [b"garbage before start", b"garbage while running"]


# -- delivery and commits -------------------------------------------------------------------


def _outputs_by_source(bus: InMemoryBus) -> dict[tuple[int, int], int]:
    """(partition, offset) of each input -> journal position of its first flag/dead letter."""
    first: dict[tuple[int, int], int] = {}
    for e in bus.journal:
        if isinstance(e, Delivery) and e.record.topic in (T.FRAUD_FLAGS, T.dlq(T.TRANSACTIONS)):
            codec = FLAG if e.record.topic == T.FRAUD_FLAGS else DEAD
            rec = codec.decode(e.record.value)
            first.setdefault((rec["source_partition"], rec["source_offset"]), e.seq)
    return first


def test_offsets_are_committed_only_after_the_records_produced_for_them() -> None:
    bus = _bus()
    _announce(bus, artifact("fraud", "1"))
    with _running(bus, _cfg(batch_size=100)):
        for i in range(5):  # several batches and commits
            _transactions(bus, 200, skip=200 * i)
            _wait(lambda i=i: len(bus.messages(T.FRAUD_FLAGS)) >= 200 * (i + 1))
    done = _outputs_by_source(bus)
    commits = [e for e in bus.journal if isinstance(e, Commit) and e.group == "finscore-fraud"]
    assert len(commits) > 1
    for c in commits:
        for (_, p), nxt in c.offsets.items():
            assert all(done[(p, o)] < c.seq for o in range(nxt)), f"committed {p}@{nxt} early"


def test_a_failed_delivery_leaves_its_batch_uncommitted_and_a_restart_scores_it() -> None:
    bus = _bus(1)
    _announce(bus, artifact("fraud", "1"))
    sent = _transactions(bus, 100)
    bus.fail_deliveries(T.FRAUD_FLAGS, 1)
    with (
        pytest.raises(TransportError, match="offsets not committed"),
        _running(bus, _cfg()) as w,
    ):
        _wait(lambda: w._status != "ok", timeout=10)
    assert bus.committed("finscore-fraud").get((T.TRANSACTIONS, 0), 0) < len(sent)
    with _running(bus, _cfg()):
        _wait(lambda: bus.committed("finscore-fraud").get((T.TRANSACTIONS, 0)) == len(sent))
    ids = {f["transaction_id"] for f in _decoded(bus, T.FRAUD_FLAGS, FLAG)}
    assert ids == {r["transaction_id"] for r in sent}  # at least once: none lost


def test_a_restart_resumes_from_the_committed_offsets_without_loss_or_duplicates() -> None:
    bus = _bus()
    _announce(bus, artifact("fraud", "1"))
    first = _transactions(bus, 400)
    with _running(bus, _cfg()):
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= len(first))
    second = _transactions(bus, 400, skip=400)
    with _running(bus, _cfg()) as w:
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= len(first) + len(second))
        assert w.metrics.events_in._value.get() == len(second)
    ids = [f["transaction_id"] for f in _decoded(bus, T.FRAUD_FLAGS, FLAG)]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r["transaction_id"] for r in first + second}


# -- the hot swap ---------------------------------------------------------------------------


def test_a_hot_swap_is_applied_between_batches_and_every_output_names_its_version() -> None:
    bus = _bus(1)
    _announce(bus, artifact("fraud", "1"))
    with _running(bus, _cfg()) as w:
        before = _transactions(bus, 300)
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= len(before))
        time.sleep(0.002)  # a later issue time
        _announce(bus, artifact("fraud", "2", seed=5))
        _wait(lambda: w.slot.live is not None and w.slot.live.version == "2")
        after = _transactions(bus, 300, skip=300)
        _wait(lambda: len(bus.messages(T.FRAUD_FLAGS)) >= len(before) + len(after))
        assert [s[1:] for s in w.slot.swaps][-1] == ("1", "2")
    flags = _decoded(bus, T.FRAUD_FLAGS, FLAG)  # one partition: in input order
    versions = [f["model_version"] for f in flags]
    assert versions == ["1"] * len(before) + ["2"] * len(after)


def test_a_registry_champion_is_loaded_in_one_session_with_one_smoke_test(
    tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    """Each model load opens one ONNX session (the scorer's) and runs its smoke test once."""
    import finscore.providers
    import finscore.streams.scoring as scoring

    registry = Registry(tmp_path)
    version = registry.publish(artifact("fraud"), TEST_SIGNING_KEY).manifest.version
    registry.promote("fraud", version)
    sessions: list[object] = []
    real = finscore.providers.create_session

    def counting(*a: object, **kw: object) -> object:
        sessions.append(a)
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(finscore.providers, "create_session", counting)
    monkeypatch.setattr(scoring, "create_session", counting)
    w = Worker(_cfg(registry_dir=tmp_path), transports=_bus())
    try:
        scorer = w._registry_champion()
    finally:
        w.watcher.close()
    assert scorer is not None and scorer.version == version
    assert len(sessions) == 1

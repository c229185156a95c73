"""A declared family's stream rebuilds its windows over the topic's key from its changelog
on assignment (no broker: the in-memory bus), and restores only what its own declaration
could have written: a changelog of another window layout (an edited declaration) is never
read; rows whose values the pipeline would never have let into the state (a summed value
beyond its bound, a square that is not its field's square, a ``seen`` column other than 1, a
tag beyond 32 bits) are dropped; a record that is not a window record, or a corrupt one, is
skipped with a warning and the others restored; rows out of the time bounds are dropped."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

import finscore.streams.changelog as changelog_module
import finscore.streams.declared.stream as stream_module
from finscore.features.timestore import ROWS_MAGIC, _decode_rows, _encode_rows
from finscore.streams.declared import DeclaredStream
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.testing import InMemoryBus
from finscore.streams.worker import WorkerConfig
from tests.streams.test_declared_pipeline import DAY, FAMILY, payment_events, write_family

PARTS = 2


@pytest.fixture(autouse=True)
def fresh_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh loggers for the modules under test: structlog caches a module's logger on first
    use, and one cached by an earlier test (real processors) would bypass capture_logs."""
    for module in (changelog_module, stream_module):
        monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))


COUNT = """
[[features]]
name = "CUSTOMER_NB_1D"
kind = "window"
key = "customer_id"
days = 1
stat = "count"
"""
MEAN = """
[[features]]
name = "CUSTOMER_AMOUNT_MEAN_1D"
kind = "window"
key = "customer_id"
days = 1
stat = "mean"
field = "amount"
"""
ZSCORE = """
[[features]]
name = "CUSTOMER_AMOUNT_Z_7D"
kind = "window"
key = "customer_id"
days = 7
stat = "zscore"
field = "amount"
"""
assert COUNT in FAMILY  # the base declaration: a count over the topic's key


def _declared(folder: Path, windows: str) -> Path:
    """The test family with its window over the topic's key replaced by ``windows``."""
    path = write_family(folder)
    path.write_text(FAMILY.replace(COUNT, windows))
    return path


def _bus() -> InMemoryBus:
    bus = InMemoryBus()
    for topic in ("card-payments", "card-chargebacks", "card-chargebacks-dlq"):
        bus.create_topic(topic, PARTS)
    return bus


def _stream(bus: InMemoryBus, path: Path) -> DeclaredStream:
    """A started stream of the family at ``path`` on ``bus`` (no partitions assigned yet)."""
    stream = DeclaredStream(WorkerConfig(stream="family", client={}, family_path=path),
                            ModelSlot(), transports=bus)  # fmt: skip
    stream.start()
    return stream


def _events(n: int = 300, seed: int = 5) -> list[dict]:
    return payment_events(n, end_ms=int(time.time() * 1000) - DAY, seed=seed)


def _records(stream: DeclaredStream, events: list[dict]) -> list[tuple[int, bytes]]:
    """The changelog records of ``events`` in ``stream``'s windows: (partition, record);
    then ``stream`` forgets what no feature sees any more, as a restore does."""
    stream.features.transform(events)
    keys = {e["customer_id"] for e in events}
    records = stream.features.take_changes({k: zlib.crc32(k.encode()) % PARTS for k in keys})
    stream.features.evict()
    return records


def _write(bus: InMemoryBus, stream: DeclaredStream, records: list[tuple[int, bytes]]) -> None:
    for p, value in records:
        bus.produce(stream.changelog_topic, value, key=b"p%d" % p, partition=p)


def _assign(stream: DeclaredStream) -> None:
    stream.on_assign([(stream.input_topic, p) for p in range(PARTS)])


def _held(stream: DeclaredStream) -> int:
    return stream.features.held()["window:customer_id"]


def _snapshots(stream: DeclaredStream, keys: list[str]) -> list[bytes]:
    return stream.features.snapshot_keys(keys)


def _assert_same_state(restored: DeclaredStream, want: DeclaredStream) -> None:
    """``restored`` holds exactly ``want``'s window state, and it is not empty."""
    keys = want.features.keys()
    assert _held(restored) == _held(want) > 0
    assert _snapshots(restored, keys) == _snapshots(want, keys)


# -- an edited declaration ---------------------------------------------------------------------
def test_a_changelog_of_another_window_layout_is_never_restored(tmp_path: Path) -> None:
    bus = _bus()
    counts = _declared(tmp_path / "counts", COUNT)
    writer = _stream(bus, counts)
    _write(bus, writer, _records(writer, _events()))
    same = _stream(bus, counts)  # the same declaration: its state comes back
    _assign(same)
    assert same.changelog_topic == writer.changelog_topic
    assert sorted(same.features.keys()) == sorted(writer.features.keys())
    assert _held(same) == _held(writer) > 0

    # The count's "seen" column (1 per entry) would read as an amount of 1 cent per entry.
    legacy = "finscore-family-card_payments-window-entries-changelog"  # before digests
    bus.create_topic(legacy, PARTS)
    with capture_logs() as logs:
        means = _stream(bus, _declared(tmp_path / "means", MEAN))
    assert means.changelog_topic != writer.changelog_topic
    _assign(means)
    assert means.features.keys() == [] and _held(means) == 0
    not_read = [e for e in logs if e["event"] == "state.changelog_not_read"]
    assert len(not_read) == 1 and not_read[0]["others"] == sorted([legacy, writer.changelog_topic])
    assert not_read[0]["log_level"] == "warning"


def test_the_layout_names_the_columns_their_units_and_the_spans(tmp_path: Path) -> None:
    bus = _bus()
    digests = {
        name: _stream(bus, _declared(tmp_path / name, text)).changelog_topic
        for name, text in [("count", COUNT), ("mean", MEAN), ("zscore", ZSCORE),
                           ("count_again", COUNT), ("count_7d", COUNT.replace("1\n", "7\n"))]
    }  # fmt: skip
    assert digests["count"] == digests["count_again"]
    assert len(set(digests.values())) == 4
    for topic in digests.values():
        assert topic.startswith("finscore-family-card_payments-window-entries-")
        assert topic.endswith("-changelog")


# -- rows the pipeline would never have let in -------------------------------------------------
def _poisoned(records: list[tuple[int, bytes]], width: int,
              edit: dict[int, tuple[int, int]]) -> list[tuple[int, bytes]]:  # fmt: skip
    """``records`` with, in the first record, row ``r``'s column ``c`` set to ``v`` for each
    ``r: (c, v)`` of ``edit`` (columns: key index, time, tag, the store's columns)."""
    (p, first), *rest = records
    names, rows = _decode_rows(first, width)
    rows = rows.copy()
    for r, (c, v) in edit.items():
        rows[r, c] = v
    return [(p, _encode_rows(names, rows)), *rest]


def _without(path: Path, records: list[tuple[int, bytes]], width: int, n: int) -> DeclaredStream:
    """A stream of ``path`` restored from ``records`` less the first ``n`` rows of the first."""
    (p, first), *rest = records
    names, rows = _decode_rows(first, width)
    stream = _stream(_bus(), path)
    stream.features.add_changes([(f"p{p}", _encode_rows(names, rows[n:])),
                                 *((f"p{q}", r) for q, r in rest)])  # fmt: skip
    return stream


def test_rows_beyond_the_pipelines_bounds_are_never_restored(tmp_path: Path) -> None:
    bus = _bus()
    path = _declared(tmp_path / "z", ZSCORE)
    writer = _stream(bus, path)
    records = _records(writer, _events())
    assert writer.features._own is not None
    assert writer.features._own.store.value_names == ("amount", "amount^2")
    # key index, time, tag, amount (cents), amount^2
    poisoned = _poisoned(records, 5, {0: (3, 2**62),  # far beyond MAX_SQUARED_UNITS
                                      1: (3, -(10**8) - 1),
                                      2: (4, 7),  # not the amount's square
                                      3: (2, 2**32)})  # not a 32-bit tag  # fmt: skip
    _write(bus, writer, poisoned)
    with capture_logs() as logs:
        restored = _stream(bus, path)
        _assign(restored)
    dropped = [e for e in logs if e["event"] == "state.rows_out_of_bounds_dropped"]
    assert [e["rows"] for e in dropped] == [4]
    # the rest is restored exactly
    _assert_same_state(restored, _without(path, records, 5, 4))


def test_a_seen_column_other_than_one_is_never_restored(tmp_path: Path) -> None:
    bus = _bus()
    path = _declared(tmp_path / "counts", COUNT)
    writer = _stream(bus, path)
    records = _records(writer, _events())
    # key index, time, tag, seen
    _write(bus, writer, _poisoned(records, 4, {0: (3, 7), 1: (3, 0)}))
    restored = _stream(bus, path)
    _assign(restored)
    _assert_same_state(restored, _without(path, records, 4, 2))


# -- records skipped, rows out of the time bounds ----------------------------------------------
def test_foreign_and_corrupt_records_are_skipped_and_the_rest_restored(tmp_path: Path) -> None:
    bus = _bus()
    path = _declared(tmp_path / "z", ZSCORE)
    writer = _stream(bus, path)
    records = _records(writer, _events())
    _write(bus, writer, records[:1])
    bus.produce(writer.changelog_topic, b"not a window record", key=b"p0", partition=0)
    bus.produce(writer.changelog_topic, ROWS_MAGIC + b"\xff" * 20, key=b"p1", partition=1)
    _write(bus, writer, records[1:])
    with capture_logs() as logs:
        restored = _stream(bus, path)
        _assign(restored)
    keys = writer.features.keys()
    assert sorted(restored.features.keys()) == sorted(keys)
    assert _snapshots(restored, keys) == _snapshots(writer, keys)
    skipped = [e for e in logs if e["event"] == "state.record_skipped"]
    assert [e["key"] for e in skipped] == ["p0", "p1"]
    assert "reason" not in skipped[0] and "corrupt" in skipped[1]["reason"]
    assert all(e["log_level"] == "warning" for e in skipped)


def test_rows_out_of_the_time_bounds_are_dropped(tmp_path: Path) -> None:
    bus = _bus()
    path = _declared(tmp_path / "z", ZSCORE)
    writer = _stream(bus, path)
    records = _records(writer, _events())
    future = int(time.time() * 1000) + 10 * DAY
    old = writer.cfg.bounds.min_event_time_ms - 1
    _write(bus, writer, _poisoned(records, 5, {0: (1, future), 1: (1, old)}))
    with capture_logs() as logs:
        restored = _stream(bus, path)
        _assign(restored)
    dropped = [e for e in logs if e["event"] == "state.rows_out_of_bounds_dropped"]
    assert [e["rows"] for e in dropped] == [2]
    assert _held(restored) == _held(_without(path, records, 5, 2))


@pytest.mark.parametrize("windows", [COUNT, ZSCORE], ids=["count", "zscore"])
def test_valid_rows_accepts_every_row_the_engine_writes(tmp_path: Path, windows: str) -> None:
    stream = _stream(_bus(), _declared(tmp_path / "f", windows))
    records = _records(stream, _events(600, seed=8))
    width = 3 + len(stream.features._own.store.value_names)  # type: ignore[union-attr]
    rows = np.concatenate([_decode_rows(r, width)[1][:, 1:] for _, r in records])
    assert stream.features.valid_rows(rows).all()

"""Reading state topics to their end (changelog restores, side-input catch-up) when the
broker's high watermark is stale: the embedded broker can report a watermark that points into
the last batch, and a restore that stops there misses the newest state (seen as "restored
features differ from an uninterrupted run" after a SIGKILL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from finscore.streams.testing import InMemoryBus, InMemoryTopicReader
from finscore.streams.transport import Message, catch_up, read_partitions


class StaleReader:
    """An in-memory reader whose watermarks lag the log by ``lag`` records and whose reads
    return at most ``per_read`` records (as a fetch returns one batch at a time)."""

    def __init__(self, inner: InMemoryTopicReader, lag: int, per_read: int) -> None:
        self.inner, self.lag, self.per_read = inner, lag, per_read
        self.topic = inner.topic

    def assign(self, starts: Mapping[int, int | None]) -> None:
        self.inner.assign(starts)

    def assigned(self) -> list[int]:
        return self.inner.assigned()

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        return self.inner.read(min(max_messages, self.per_read), timeout)

    def watermarks(self, partition: int, timeout: float = 10.0) -> tuple[int, int]:
        low, high = self.inner.watermarks(partition, timeout)
        return low, max(low, high - self.lag)

    def true_ends(self, partitions: Sequence[int], timeout: float = 10.0) -> dict[int, tuple[int, int]]:  # fmt: skip
        return self.inner.true_ends(partitions, timeout)

    def positions(self) -> dict[int, int]:
        return self.inner.positions()

    def close(self) -> None:
        self.inner.close()


def _bus(n: int) -> InMemoryBus:
    bus = InMemoryBus()
    bus.create_topic("state", 2)
    for i in range(n):
        bus.produce("state", b"v%d" % i, b"k%d" % i, partition=i % 2)
    return bus


def test_a_restore_reads_past_a_stale_watermark() -> None:
    bus = _bus(40)
    reader = StaleReader(InMemoryTopicReader(bus, "state"), lag=3, per_read=1)
    seen: list[bytes] = []
    parts = read_partitions(reader, {0: None, 1: None}, lambda m: seen.append(m.value or b""))
    assert parts == [0, 1]
    assert sorted(seen) == sorted(b"v%d" % i for i in range(40))


def test_catch_up_reads_past_a_stale_watermark() -> None:
    bus = _bus(40)
    reader = StaleReader(InMemoryTopicReader(bus, "state"), lag=3, per_read=1)
    reader.assign({0: None, 1: None})
    assert catch_up(reader, len) == 40

"""Per-key state that survives restarts: compacted changelog topics.

Before it commits (every ``commit_interval``; every batch in exactly-once mode) a worker produces
what changed in each key it touched since its last commit to ``<group>-<store>-changelog``,
into the same partition number as the input partition the key lives in (inputs and changelogs
are co-partitioned). Two kinds: *compacted* changelogs hold the latest value of each key
(market windows: :func:`read_changelog`); *append-only* ones hold each key's new entries per
commit, pruned by age (fraud customer windows: :func:`read_changelog_records`, all records).
When a partition is assigned, the worker reads that changelog partition up to its end and
rebuilds its keys: a restart costs one read of the state plus a replay of the uncommitted
tail, not a replay of the input history (:func:`restore_append_only` for the append-only
ones). In exactly-once mode changelog records are part of the batch's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import numpy as np

from finscore.features.exceptions import FeatureStateError
from finscore.features.timestore import KEY_ROWS_MAGIC, ROWS_MAGIC, SNAPSHOT_MAGIC
from finscore.logging import get_logger
from finscore.streams.transport import Message, TransportFactory, read_partitions

__all__ = [
    "AppendOnlyState",
    "Keep",
    "read_changelog",
    "read_changelog_records",
    "restore_append_only",
    "resume_offsets",
]

log = get_logger(__name__)

#: Which rows of a changelog table (int64: time, tag, then the store's columns) to keep.
Keep = Callable[[np.ndarray], np.ndarray]


class AppendOnlyState(Protocol):
    """Feature state kept in an append-only changelog (the fraud customer windows, a declared
    family's windows over its topic's key): it hands out the entries added since the last
    call, rebuilds itself from such records, forgets revoked keys' unwritten changes, and
    forgets what no feature can see any more."""

    def take_changes(self, partition_of: Mapping[str, int], /) -> list[tuple[int, bytes]]: ...

    def add_changes(self, records: Iterable[tuple[str, bytes]], keep: Keep | None = None,
                    /) -> int: ...  # fmt: skip

    def forget_changes(self, keys: Iterable[str], /) -> None: ...

    def evict(self, now_ms: int | None = None, /) -> None: ...


def _read(
    transports: TransportFactory,
    topic: str,
    starts: Mapping[int, int | None],
    handle: Callable[[Message], None],
    *,
    read_committed: bool,
    purpose: str,
    timeout: float,
) -> list[int]:
    """:func:`~finscore.streams.transport.read_partitions` on a reader of its own."""
    reader = transports.reader(topic, group=f"finscore-{purpose}-{topic}",
                               read_committed=read_committed)  # fmt: skip
    try:
        return read_partitions(reader, starts, handle, settle_committed=read_committed,
                               timeout=timeout)  # fmt: skip
    finally:
        reader.close()


def read_changelog(
    transports: TransportFactory,
    topic: str,
    partitions: Iterable[int],
    *,
    read_committed: bool = False,
    timeout: float = 30.0,
) -> dict[bytes, bytes]:
    """Latest value per key in ``partitions`` of ``topic`` (tombstones delete the key)."""
    parts = list(partitions)
    if not parts:
        return {}
    t0 = time.monotonic()
    state: dict[bytes, bytes] = {}
    _read(transports, topic, dict.fromkeys(parts), lambda m: _keep(state, m),
          read_committed=read_committed, purpose="restore", timeout=timeout)  # fmt: skip
    log.info(
        "state.restored",
        topic=topic,
        partitions=parts,
        keys=len(state),
        seconds=round(time.monotonic() - t0, 3),
    )
    return state


def read_changelog_records(
    transports: TransportFactory,
    topic: str,
    partitions: Iterable[int],
    *,
    read_committed: bool = False,
    timeout: float = 30.0,
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) record of ``partitions`` of ``topic``, in order (for append-only
    changelogs, whose records together make the state; tombstones and keyless are skipped)."""
    parts = list(partitions)
    if not parts:
        return []
    t0 = time.monotonic()
    out: list[tuple[bytes, bytes]] = []

    def keep(m: Message) -> None:
        if m.key is not None and m.value is not None:
            out.append((m.key, m.value))

    _read(transports, topic, dict.fromkeys(parts), keep, read_committed=read_committed,
          purpose="restore", timeout=timeout)  # fmt: skip
    log.info("state.restored", topic=topic, partitions=parts, records=len(out),
             seconds=round(time.monotonic() - t0, 3))  # fmt: skip
    return out


def restore_append_only(
    transports: TransportFactory,
    topic: str,
    partitions: Iterable[int],
    state: AppendOnlyState,
    keep: Keep,
    *,
    read_committed: bool = False,
) -> int:
    """Rebuild ``state`` from every record of ``partitions`` of the append-only changelog
    ``topic`` (:func:`read_changelog_records`; ``read_committed`` in exactly-once mode). A
    record that is not a window record (rows, key rows or a snapshot) is skipped with a
    warning (``state.record_skipped``; the state it would hold is rebuilt from the stream
    instead), and so is a corrupt one (the others are restored); rows the store cannot hold or
    that ``keep`` refuses are dropped (one ``state.rows_out_of_bounds_dropped`` warning).
    Returns how many rows were dropped."""
    records = read_changelog_records(transports, topic, partitions, read_committed=read_committed)
    good = []
    for key, value in records:
        if value[:4] in (ROWS_MAGIC, KEY_ROWS_MAGIC, SNAPSHOT_MAGIC):
            good.append((key.decode(errors="replace"), value))
        else:  # not ours: rebuilt from the stream instead
            log.warning("state.record_skipped", key=key.decode(errors="replace"))
    dropped = 0
    try:
        dropped = state.add_changes(good, keep)
    except FeatureStateError:  # a corrupt record: keep every other one
        for record in good:
            try:
                dropped += state.add_changes([record], keep)
            except FeatureStateError as exc:
                log.warning("state.record_skipped", key=record[0], reason=str(exc))
    if dropped:
        log.warning("state.rows_out_of_bounds_dropped", topic=topic, rows=dropped)
    return dropped


def _keep(state: dict[bytes, bytes], m: Message) -> None:
    if m.key is None:
        return
    if m.value is None:
        state.pop(m.key, None)
    else:
        state[m.key] = m.value


def resume_offsets(
    client: Mapping[str, str | int],
    output_topic: str,
    output_schema: str,
    source_topic: str,
    partitions: Iterable[int],
    *,
    lookback: int = 5000,
    timeout: float = 20.0,
    registry: object | None = None,
) -> dict[int, int]:
    """Next input offset per partition, judged from what is already committed on the output.

    Exactly-once recovery guard: when a worker dies right after committing a transaction, a
    broker may still hand out the previous committed input offsets for a moment. Reading the
    last ``lookback`` committed outputs of every output partition (read_committed) tells which
    input offsets were already scored; the worker starts after them. Returns only partitions with
    outputs in the look-back window. ``registry`` (a schema-registry client, URL or client
    config) is how outputs written in the Confluent wire format are read: a worker with a
    registry set writes them so.
    """
    from finscore.schemas.codec import Codec
    from finscore.streams.exceptions import TopicMissing
    from finscore.streams.kafka import KafkaTransportFactory

    wanted = set(partitions)
    codec = Codec(output_schema, registry=registry)
    out: dict[int, int] = {}
    transports = KafkaTransportFactory(client)
    try:
        parts = transports.partitions(output_topic)
    except TopicMissing:
        return out
    probe = transports.reader(output_topic, group=f"finscore-resume-{output_topic}")
    try:
        starts: dict[int, int | None] = {p: probe.watermarks(p, 10)[1] - lookback for p in parts}
    finally:
        probe.close()
    _read(transports, output_topic, starts,
          lambda m: _note(out, _decode_or_none(codec, m), source_topic, wanted),
          read_committed=True, purpose="resume", timeout=timeout)  # fmt: skip
    return out


def _decode_or_none(codec: object, m: Message) -> dict | None:
    try:
        return codec.decode(m.value)  # type: ignore[attr-defined, no-any-return]
    except Exception:  # noqa: BLE001
        return None


def _note(out: dict[int, int], rec: dict | None, source_topic: str, wanted: set[int]) -> None:
    if rec and rec.get("source_topic") == source_topic and rec["source_partition"] in wanted:
        p = rec["source_partition"]
        out[p] = max(out.get(p, 0), int(rec["source_offset"]) + 1)

"""Per-key state that survives restarts: compacted changelog topics.

Before it commits (every ``commit_interval``; every batch in exactly-once mode) a worker produces
what changed in each key it touched since its last commit to ``<group>-<store>-changelog``,
into the same partition number as the input partition the key lives in (inputs and changelogs
are co-partitioned). Two kinds: *compacted* changelogs hold the latest value of each key
(market windows: :func:`read_changelog`); *append-only* ones hold each key's new entries per
commit, pruned by age (fraud customer windows: :func:`read_changelog_records`, all records).
When a partition is assigned, the worker reads that changelog partition up to its end and
rebuilds its keys: a restart costs one read of the state plus a replay of the uncommitted
tail, not a replay of the input history. In exactly-once mode changelog records are part of
the batch's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from finscore.logging import get_logger

log = get_logger(__name__)


def read_to_end(
    client: Mapping[str, str | int],
    topic: str,
    starts: Mapping[int, int | None],
    handle: Callable[[Any], None],
    *,
    read_committed: bool = False,
    purpose: str = "read",
    timeout: float = 30.0,
) -> list[int]:
    """Read ``topic``'s partitions from their start offsets (None = the beginning) to the high
    watermark they had when called, handing every record to ``handle``; with
    ``read_committed`` also wait until no transaction is pending on them. Returns the
    partitions that held records; logs a warning when the deadline cut a read short."""
    conf = {**client, "group.id": f"finscore-{purpose}-{topic}", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": 10}  # fmt: skip
    if read_committed:
        conf["isolation.level"] = "read_committed"
    c = Consumer(conf)
    try:
        ends, assign = {}, []
        for p, start in starts.items():
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), 10)
            if high > low:
                ends[p] = high
                first = OFFSET_BEGINNING if start is None else max(low, start)
                assign.append(TopicPartition(topic, p, first))
        if not assign:
            return []
        c.assign(assign)
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(10000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
                handle(m)
        if read_committed:  # a just-committed transaction must be fully visible
            _settle(c, topic, list(ends), deadline + 10, handle)
        if len(done) < len(ends):
            log.warning("state.read_incomplete", topic=topic, partitions=sorted(ends))
        return sorted(ends)
    finally:
        c.close()


def read_changelog(
    client: Mapping[str, str | int],
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
    read_to_end(client, topic, dict.fromkeys(parts), lambda m: _keep(state, m),
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
    client: Mapping[str, str | int],
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

    def keep(m: Any) -> None:
        if m.key() is not None and m.value() is not None:
            out.append((m.key(), m.value()))

    read_to_end(client, topic, dict.fromkeys(parts), keep, read_committed=read_committed,
                purpose="restore", timeout=timeout)  # fmt: skip
    log.info("state.restored", topic=topic, partitions=parts, records=len(out),
             seconds=round(time.monotonic() - t0, 3))  # fmt: skip
    return out


def _keep(state: dict[bytes, bytes], m: object) -> None:
    key = m.key()  # type: ignore[attr-defined]
    if key is None:
        return
    if m.value() is None:  # type: ignore[attr-defined]
        state.pop(key, None)
    else:
        state[key] = m.value()  # type: ignore[attr-defined]


def _settle(c: Consumer, topic: str, partitions: list[int], deadline: float, handle) -> None:  # noqa: ANN001
    """Keep reading until the read_committed position reaches the high watermark on every
    partition, i.e. no transaction is pending (a just-committed one is fully visible)."""
    while time.monotonic() < deadline:
        positions = {
            tp.partition: tp.offset
            for tp in c.position([TopicPartition(topic, p) for p in partitions])
        }
        behind = [p for p in partitions
                  if positions.get(p, -1) < c.get_watermark_offsets(TopicPartition(topic, p), 5)[1]]  # fmt: skip
        if not behind:
            return
        for m in c.consume(10000, 0.1):
            if m.error() is None:
                handle(m)
    log.warning("state.transactions_pending", topic=topic, partitions=partitions)


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

    wanted = set(partitions)
    codec = Codec(output_schema, registry=registry)
    out: dict[int, int] = {}
    admin = Consumer({**client, "group.id": f"finscore-resume-{output_topic}"})
    try:
        md = admin.list_topics(timeout=10)
        if output_topic not in md.topics:
            return out
        starts = {}
        for p in md.topics[output_topic].partitions:
            _, high = admin.get_watermark_offsets(TopicPartition(output_topic, p), 10)
            starts[p] = high - lookback
    finally:
        admin.close()
    read_to_end(client, output_topic, starts,
                lambda m: _note(out, _decode_or_none(codec, m), source_topic, wanted),
                read_committed=True, purpose="resume", timeout=timeout)  # fmt: skip
    return out


def _decode_or_none(codec: object, m: object) -> dict | None:
    try:
        return codec.decode(m.value())  # type: ignore[attr-defined, no-any-return]
    except Exception:  # noqa: BLE001
        return None


def _note(out: dict[int, int], rec: dict | None, source_topic: str, wanted: set[int]) -> None:
    if rec and rec.get("source_topic") == source_topic and rec["source_partition"] in wanted:
        p = rec["source_partition"]
        out[p] = max(out.get(p, 0), int(rec["source_offset"]) + 1)

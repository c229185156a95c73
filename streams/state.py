"""Per-key state that survives restarts: compacted changelog topics.

After every batch a worker produces the new state of each key it touched to
``<group>-<store>-changelog``, into the same partition number as the input partition the key
lives in (inputs and changelogs are co-partitioned). When a partition is assigned, the worker
reads that changelog partition up to its end and restores the latest value of every key: a
restart costs one read of the (compacted) state, not a replay of the input history.
In exactly-once mode changelog records are part of the batch's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from finscore.logging import get_logger

log = get_logger(__name__)


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
    conf = {
        **client,
        "group.id": f"finscore-restore-{topic}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 10,
    }
    if read_committed:
        conf["isolation.level"] = "read_committed"
    c = Consumer(conf)
    t0 = time.monotonic()
    state: dict[bytes, bytes] = {}
    try:
        ends = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), 10)
            if high > low:
                ends[p] = high
        if not ends:
            return {}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
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
                key = m.key()
                if key is None:
                    continue
                if m.value() is None:
                    state.pop(key, None)
                else:
                    state[key] = m.value()
        if read_committed:  # wait until no transaction is pending on these partitions
            _settle(c, topic, list(ends), deadline + 10, lambda m: _keep(state, m))
        if len(done) < len(ends):
            log.warning("state.restore_incomplete", topic=topic, partitions=sorted(ends))
    finally:
        c.close()
    log.info(
        "state.restored",
        topic=topic,
        partitions=parts,
        keys=len(state),
        seconds=round(time.monotonic() - t0, 3),
    )
    return state


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
) -> dict[int, int]:
    """Next input offset per partition, judged from what is already committed on the output.

    Exactly-once recovery guard: when a worker dies right after committing a transaction, a
    broker may still hand out the previous committed input offsets for a moment. Reading the
    last ``lookback`` committed outputs of every output partition (read_committed) tells which
    input offsets were already scored; the worker starts after them. Returns only partitions with
    outputs in the look-back window.
    """
    from finscore.schemas.codec import Codec

    wanted = set(partitions)
    codec = Codec(output_schema)
    c = Consumer({**client, "group.id": f"finscore-resume-{output_topic}", "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": "read_committed",
                  "fetch.wait.max.ms": 10})  # fmt: skip
    out: dict[int, int] = {}
    try:
        md = c.list_topics(timeout=10)
        if output_topic not in md.topics:
            return out
        assign = []
        for p in md.topics[output_topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(output_topic, p), 10)
            if high > low:
                assign.append(TopicPartition(output_topic, p, max(low, high - lookback)))
        if not assign:
            return out
        c.assign(assign)
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(assign) and time.monotonic() < deadline:
            for m in c.consume(10000, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                    continue
                try:
                    rec = codec.decode(m.value())
                except Exception:  # noqa: BLE001 - not ours to judge here
                    continue
                _note(out, rec, source_topic, wanted)
        _settle(c, output_topic, [tp.partition for tp in assign], deadline + 10,
                lambda m: _note(out, _decode_or_none(codec, m), source_topic, wanted))  # fmt: skip
    finally:
        c.close()
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

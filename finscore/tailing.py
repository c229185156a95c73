"""`finscore tail`: follow a topic and render each record as pretty JSON, whatever its encoding."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from finscore.schemas.codec import Codec, to_jsonable
from finscore.schemas.exceptions import DecodeError
from finscore.schemas.topics import catalog
from finscore.streams.admin import partitions_of


def schema_of(topic: str, prefix: str = "") -> str | None:
    """The schema name the catalog declares for ``topic`` (None for unknown topics)."""
    for spec in catalog(prefix=prefix):
        if spec.name == topic:
            return spec.schema
    if topic.endswith("-dlq"):
        return "dead_letter"
    return None


def follow(
    client: Mapping[str, str | int],
    topic: str,
    *,
    prefix: str = "",
    schema: str | None = None,
    from_beginning: bool = False,
    count: int | None = None,
    follow: bool = True,
    stop: threading.Event | None = None,
    registry_url: str | None = None,
) -> Iterator[str]:
    """Yield one JSON document per record; undecodable records yield an error document."""
    parts = partitions_of(client, topic)
    schema = schema or schema_of(topic, prefix)
    registry = None
    if registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry = SchemaRegistryClient({"url": registry_url})
    codec = Codec(schema, registry=registry) if schema else None
    c = Consumer(
        {
            **client,
            "group.id": "finscore-tail",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    c.assign([TopicPartition(topic, p, start) for p in parts])
    seen = 0
    at_end: set[int] = set()
    try:
        while not (stop and stop.is_set()):
            for m in c.consume(500, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                    continue
                at_end.discard(m.partition())
                meta = {"partition": m.partition(), "offset": m.offset()}
                if m.key() is not None:
                    meta["key"] = m.key().decode(errors="replace")
                doc: dict
                if codec is None:
                    doc = {**meta, "value": (m.value() or b"").decode(errors="replace")}
                else:
                    try:
                        rec = codec.decode(
                            m.value() or b"",
                            topic=topic,
                            partition=m.partition(),
                            offset=m.offset(),
                        )
                        doc = {**meta, "value": to_jsonable(rec, codec.schema_name)}
                    except DecodeError as exc:
                        doc = {**meta, "error": str(exc)}
                yield json.dumps(doc, indent=2, default=str)
                seen += 1
                if count is not None and seen >= count:
                    return
            if not follow and len(at_end) == len(parts):
                return
    finally:
        c.close()

"""`finscore tail`: read a topic and render each record as JSON, whatever its encoding.

Formats (:data:`FORMATS`): ``json`` — one compact JSON object per line, the record itself
(``jq -c .transaction_id`` works; with ``envelope`` a wrapper ``{"topic", "partition",
"offset", "timestamp", "key", "headers", "value"}``); ``avro-json`` — Avro's own JSON encoding
of the record (unions tagged with their branch), one per line; ``pretty`` — indented, with a
header line naming partition, offset, timestamp, key and headers. An undecodable record is
``{"error": ..., "partition": ..., "offset": ...}`` in every format.

Start positions (:func:`parse_start`): ``beginning``, ``end`` (default), an absolute offset,
``-N`` (the last N records of each partition) or ``@<epoch ms>`` (the first record at or after
that time). ``end`` and ``-N`` are computed from the partition's last record, not only from
the broker's high watermark: the embedded broker reports a watermark that can lag the last
batch, and starting there would replay that batch.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from finscore.schemas.codec import Codec, to_jsonable
from finscore.schemas.codec import registry_client as _registry_client
from finscore.schemas.exceptions import DecodeError
from finscore.schemas.topics import TopicSpec, catalog
from finscore.streams.admin import partitions_of, true_ends
from finscore.streams.exceptions import TransportError

__all__ = ["FORMATS", "Start", "follow", "parse_start", "registry_client", "schema_of", "spec_of"]

FORMATS = ("pretty", "json", "avro-json")


def spec_of(topic: str, prefix: str = "") -> TopicSpec | None:
    """The catalog's declaration of ``topic`` (None for topics outside the catalog)."""
    for spec in catalog(prefix=prefix):
        if spec.name == topic:
            return spec
    return None


def schema_of(topic: str, prefix: str = "") -> str | None:
    """The schema name the catalog declares for ``topic`` (None for unknown topics)."""
    spec = spec_of(topic, prefix)
    if spec is not None:
        return spec.schema
    if topic.endswith("-dlq"):
        return "dead_letter"
    return None


@dataclass(frozen=True)
class Start:
    """Where to start: ``kind`` is beginning, end, offset, last (``value`` records before the
    end) or time (``value`` = epoch milliseconds)."""

    kind: str
    value: int = 0


def parse_start(text: str) -> Start:
    """``beginning|end|OFFSET|-N|@TIMESTAMP_MS`` (kcat's ``-o``) as a :class:`Start`; raises
    ValueError with the accepted forms."""
    t = text.strip().lower()
    if t in ("beginning", "earliest", "start"):
        return Start("beginning")
    if t in ("end", "latest"):
        return Start("end")
    try:
        if t.startswith("@"):
            return Start("time", int(t[1:]))
        n = int(t)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a start position: use beginning, end, an offset, -N (the last N "
            "per partition) or @TIMESTAMP_MS"
        ) from None
    return Start("last", -n) if n < 0 else Start("offset", n)


def _consumer(client: Mapping[str, Any]) -> Consumer:
    return Consumer(
        {
            **client,
            "group.id": "finscore-tail",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )


def registry_client(url: str) -> Any:
    """A ``SchemaRegistryClient`` for ``url`` (the shared :func:`finscore.schemas.codec.registry_client`)."""
    return _registry_client(url)


def _avro_json(record: dict, codec: Codec) -> Any:
    import fastavro

    buf = io.StringIO()
    fastavro.json_writer(buf, codec.parsed, [record])
    return json.loads(buf.getvalue().splitlines()[0])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(b).decode()


def follow(
    client: Mapping[str, str | int],
    topic: str,
    *,
    prefix: str = "",
    schema: str | None = None,
    from_beginning: bool = False,
    start: Start | None = None,
    partition: int | None = None,
    count: int | None = None,
    follow: bool = True,
    stop: threading.Event | None = None,
    registry_url: str | None = None,
    fmt: str = "pretty",
    envelope: bool = False,
) -> Iterator[str]:
    """Yield one rendered record per message (see the module doc for ``fmt``/``envelope``)
    from ``start`` (default: the end; ``from_beginning`` = beginning) on every partition, or
    on ``partition`` only; stop after ``count`` records, at the end of every partition when
    not ``follow``, or when ``stop`` is set. Undecodable records yield an error document."""
    parts = partitions_of(client, topic)
    if partition is not None:
        if partition not in parts:
            raise TransportError(
                f"topic {topic!r} has no partition {partition}",
                hint=f"its partitions are {parts[0]}..{parts[-1]}",
            )
        parts = [partition]
    start = start or (Start("beginning") if from_beginning else Start("end"))
    schema = schema or schema_of(topic, prefix)
    registry = registry_client(registry_url) if registry_url else None
    codec = Codec(schema, registry=registry) if schema and schema != "json" else None
    positions: dict[int, int] = {}
    not_before = start.value if start.kind == "time" else None
    if start.kind in ("end", "last"):
        ends = true_ends(client, topic, parts)
        for p, (low, end) in ends.items():
            positions[p] = end if start.kind == "end" else max(low, end - start.value)
    elif start.kind == "offset":
        positions = dict.fromkeys(parts, start.value)
    elif start.kind == "time":
        positions = dict.fromkeys(parts, OFFSET_BEGINNING)
        probe = _consumer(client)
        try:
            found = probe.offsets_for_times(
                [TopicPartition(topic, p, start.value) for p in parts], 10
            )
            for tp in found:  # a broker without time lookups answers -1 / 0: read and filter
                if tp.error is None and tp.offset >= 0:
                    positions[tp.partition] = tp.offset
        except KafkaException:
            pass  # the filter below still applies
        finally:
            probe.close()
    else:
        positions = dict.fromkeys(parts, OFFSET_BEGINNING)
    c = _consumer(client)
    c.assign([TopicPartition(topic, p, positions[p]) for p in parts])
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
                ts_type, ts = m.timestamp()
                if not_before is not None and ts < not_before:
                    continue
                yield _render(m, topic, codec, fmt, envelope, ts if ts_type else None)
                seen += 1
                if count is not None and seen >= count:
                    return
            if not follow and len(at_end) == len(parts):
                return
    finally:
        c.close()


def _render(m: Any, topic: str, codec: Codec | None, fmt: str, envelope: bool,
            ts: int | None) -> str:  # fmt: skip
    key = _text(m.key())
    headers = {k: _text(v) for k, v in (m.headers() or [])}
    error = None
    value: Any
    raw = m.value() or b""
    if codec is None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = _text(raw)
    else:
        try:
            rec = codec.decode(raw, topic=topic, partition=m.partition(), offset=m.offset())
            value = (
                _avro_json(rec, codec)
                if fmt == "avro-json"
                else to_jsonable(rec, codec.schema_name)
            )
        except DecodeError as exc:
            error = str(exc)
    meta: dict[str, Any] = {"topic": topic, "partition": m.partition(), "offset": m.offset(),
                            "timestamp": ts, "key": key}  # fmt: skip
    if headers:
        meta["headers"] = headers
    if error is not None:
        doc = {"error": error, **{k: meta[k] for k in ("partition", "offset", "key")}}
        return json.dumps(doc, default=str, indent=2 if fmt == "pretty" else None)
    if fmt == "pretty":
        when = _iso(ts) if ts is not None else "-"
        head = f"# {topic}[{m.partition()}]@{m.offset()}  {when}  key={key}"
        if headers:
            head += "  headers=" + json.dumps(headers, separators=(",", ":"))
        return head + "\n" + json.dumps(value, indent=2, default=str, ensure_ascii=False)
    doc = {**meta, "value": value} if envelope else value
    return json.dumps(doc, separators=(",", ":"), default=str, ensure_ascii=False)

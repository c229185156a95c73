"""Model announcements on the compacted ``model-updates`` topic, and the worker-side watcher.

An announcement carries the manifest, the ONNX bytes and the signature, so a worker on any
machine can load a model with nothing shared but Kafka. Keys: ``<model>`` for the live model
(PROMOTE, ROLLBACK) and ``<model>:challenger`` for SHADOW/CANARY, so compaction keeps the
latest of each. A SHADOW announcement with an empty version removes the challenger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from finscore.logging import get_logger
from finscore.registry import Artifact, ArtifactError, Manifest
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.streams.scoring import Challenger, Scorer

log = get_logger(__name__)

LIVE_ACTIONS = ("PROMOTE", "ROLLBACK")
CHALLENGER_ACTIONS = ("SHADOW", "CANARY")


@dataclass(frozen=True)
class Announcement:
    """One decoded model-update record."""

    model_name: str
    version: str
    action: str
    artifact: Artifact | None
    canary_share: float
    announced_at: int
    offset: int = -1

    @property
    def is_live(self) -> bool:
        return self.action in LIVE_ACTIONS


def announcement_key(model_name: str, action: str) -> bytes:
    """Compaction key: live and challenger announcements of a model are kept separately."""
    return (model_name if action in LIVE_ACTIONS else f"{model_name}:challenger").encode()


def encode_announcement(
    artifact: Artifact | None,
    action: str,
    *,
    model_name: str | None = None,
    canary_share: float = 0.0,
    codec: Codec | None = None,
) -> tuple[bytes, bytes]:
    """(key, value) of an announcement; ``artifact=None`` (SHADOW only) clears the challenger."""
    codec = codec or Codec("model_update")
    name = artifact.manifest.name if artifact else model_name
    if not name:
        raise ValueError("model_name is required when no artifact is given")
    record = {
        "model_name": name,
        "version": artifact.manifest.version if artifact else "",
        "action": action,
        "manifest_json": artifact.manifest.to_json() if artifact else "",
        "artifact": artifact.onnx if artifact else b"",
        "signature": artifact.signature if artifact else None,
        "canary_share": canary_share,
        "announced_at": int(time.time() * 1000),
    }
    return announcement_key(name, action), codec.encode(record, "avro")


def announce(
    client: Mapping[str, str | int],
    topic: str,
    artifact: Artifact | None,
    action: str = "PROMOTE",
    *,
    model_name: str | None = None,
    canary_share: float = 0.0,
) -> None:
    """Publish one announcement and wait for the broker's acknowledgement."""
    key, value = encode_announcement(
        artifact, action, model_name=model_name, canary_share=canary_share
    )
    p = Producer({**client, "enable.idempotence": True, "message.max.bytes": 8_000_000})
    errors: list[object] = []
    p.produce(topic, value, key, on_delivery=lambda err, _m: errors.append(err) if err else None)
    p.flush(30)
    if errors:
        raise RuntimeError(f"announcement not delivered: {errors[0]}")
    log.info(
        "model.announced",
        model=key.decode(),
        version=artifact.manifest.version if artifact else "",
        action=action,
        bytes=len(value),
    )


def decode_announcement(value: bytes, offset: int = -1, codec: Codec | None = None) -> Announcement:
    """Decode a model-update record (raises DecodeError or ArtifactError on garbage)."""
    rec = (codec or Codec("model_update")).decode(value)
    artifact = None
    if rec["version"]:
        manifest = Manifest.from_json(rec["manifest_json"])
        artifact = Artifact(manifest=manifest, onnx=rec["artifact"], signature=rec["signature"])
    return Announcement(
        rec["model_name"],
        rec["version"],
        rec["action"],
        artifact,
        float(rec["canary_share"]),
        int(rec["announced_at"]),
        offset,
    )


Loaded = Callable[[Announcement, Scorer | None], None]
Rejected = Callable[[Announcement | None, str], None]


class ModelWatcher:
    """Follows ``model-updates`` for one model name; verifies and loads off the hot path.

    ``read_to_end`` returns the latest live and challenger announcements (for start-up);
    ``poll`` hands new ones to a loader thread, which verifies (hash, signature, smoke test),
    builds a :class:`Scorer` and calls ``on_loaded``; failures call ``on_rejected`` with a
    reason and leave the current model in place.
    """

    def __init__(
        self,
        client: Mapping[str, str | int],
        topic: str,
        model_name: str,
        *,
        verify_key: str | None,
        on_loaded: Loaded,
        on_rejected: Rejected,
    ) -> None:
        self.topic = topic
        self.model_name = model_name
        self.verify_key = verify_key
        self.on_loaded = on_loaded
        self.on_rejected = on_rejected
        self.consumer = Consumer(
            {
                **client,
                "group.id": f"finscore-model-watcher-{model_name}",
                "enable.auto.commit": False,
                "fetch.message.max.bytes": 8_000_000,
                "fetch.wait.max.ms": 50,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._lock = threading.Lock()

    def _decode(self, msgs: list) -> list[Announcement]:
        out = []
        for m in msgs:
            if m.error() is not None or m.value() is None:
                continue
            try:
                a = decode_announcement(m.value(), m.offset())
            except (DecodeError, ArtifactError, ValueError, KeyError) as exc:
                log.warning("model.bad_announcement", offset=m.offset(), error=str(exc))
                self.on_rejected(None, "undecodable")
                continue
            if a.model_name == self.model_name:
                out.append(a)
        return out

    def read_to_end(self, timeout: float = 10.0) -> tuple[Announcement | None, Announcement | None]:
        """Consume everything announced so far; (latest live, latest challenger)."""
        low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout)
        live = challenger = None
        position = low
        deadline = time.monotonic() + timeout
        while position < high and time.monotonic() < deadline:
            msgs = self.consumer.consume(500, 0.5)
            for a in self._decode(msgs):
                if a.is_live:
                    live = a
                else:
                    challenger = a
            if msgs:
                position = msgs[-1].offset() + 1
        return live, challenger

    def poll(self) -> None:
        """Pick up new announcements (non-blocking) and load them in the background."""
        for a in self._decode(self.consumer.consume(50, 0)):
            self._pool.submit(self._load, a)

    def load_now(self, a: Announcement) -> Scorer | None:
        """Verify and load synchronously; None (and ``on_rejected``) when refused."""
        if a.artifact is None:
            return None
        try:
            a.artifact.verify(self.verify_key, require_signature=bool(self.verify_key))
            scorer = Scorer(a.artifact)
            scorer.smoke_test()
        except (ArtifactError, ValueError) as exc:
            log.warning("model.refused", model=a.model_name, version=a.version, reason=str(exc))
            self.on_rejected(a, getattr(exc, "reason", "smoke_test"))
            return None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            log.warning("model.refused", model=a.model_name, version=a.version, reason=str(exc))
            self.on_rejected(a, "load_failed")
            return None
        return scorer

    def _load(self, a: Announcement) -> None:
        if a.artifact is None:  # challenger removed
            self.on_loaded(a, None)
            return
        scorer = self.load_now(a)
        if scorer is not None:
            self.on_loaded(a, scorer)

    def challenger_of(self, a: Announcement, scorer: Scorer | None) -> Challenger | None:
        """The challenger an announcement describes (None = remove)."""
        if scorer is None:
            return None
        mode = "canary" if a.action == "CANARY" else "shadow"
        return Challenger(scorer, mode, a.canary_share)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.consumer.close()

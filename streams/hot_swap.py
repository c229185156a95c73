"""The hot swap: model announcements on the compacted ``model-updates`` topic, the
worker-side watcher that verifies and loads them off the hot path, and the model slot that
makes a swap atomic per batch.

A :class:`ModelSlot` holds the live scorer and at most one staged successor (plus an optional
challenger for shadow/canary scoring). The worker calls :meth:`ModelSlot.swap_if_staged`
between two batches, so every event is scored by exactly one version and outputs name it.

An announcement carries the manifest, the ONNX bytes and the signature, so a worker on any
machine can load a model with nothing shared but Kafka. Keys: ``<model>`` for the live model
(PROMOTE, ROLLBACK) and ``<model>:challenger`` for SHADOW/CANARY, so compaction keeps the
latest of each. A SHADOW announcement with an empty version removes the challenger.

Trust (issue 14). Besides the artifact's own signature, an announcement carries an
``envelope_signature`` over everything that says what to do with the artifact (see
:func:`envelope_payload`): model name, family, version, action, canary share, issue time, the
artifact's sha256 and the manifest's sha256. A worker accepts an announcement only when

- both signatures verify against its verify key (unless unsigned models are explicitly allowed,
  a development setting; the artifact's hash is checked always),
- it names the worker's model, and its manifest names the same model and version,
- it is newer (``announced_at``) than the last one the worker accepted for that slot (live or
  challenger): an old announcement replayed later is refused, a rollback is a new announcement,
- the model passes :func:`~finscore.streams.scoring.admit` for the worker's stream (family,
  threshold, reference inputs, input shape, smoke test).

Anything else is refused with a reason (counted by the worker) and the current model stays.
Announcements written before the envelope signature existed still decode (the previous schema
is a known writer) and are refused as ``unsigned`` unless unsigned models are allowed.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from confluent_kafka import Producer

from finscore.logging import get_logger, with_kafka_logger
from finscore.models.artifact import check_manifest, check_signature, sha256_hex
from finscore.models.registry import Artifact, ArtifactError, Manifest, sign_bytes
from finscore.schemas.codec import Codec, load_schema
from finscore.schemas.exceptions import DecodeError
from finscore.streams.scoring import Challenger, ChallengerMode, InputSpec, Scorer, admit
from finscore.streams.transport import Message, TopicReader

log = get_logger(__name__)

__all__ = [
    "Announcement",
    "ModelSlot",
    "ModelWatcher",
    "announce",
    "announcement_key",
    "decode_announcement",
    "encode_announcement",
    "envelope_payload",
    "load_scorer",
    "model_update_codec",
]

LIVE_ACTIONS = ("PROMOTE", "ROLLBACK")
CHALLENGER_ACTIONS = ("SHADOW", "CANARY")
ENVELOPE_FORMAT = "finscore-announcement-v1"
#: Announcements kept per slot while a worker reads the topic at start (newest first).
START_CANDIDATES = 16


@cache
def _previous_writer() -> dict:
    """The model_update schema before ``envelope_signature`` (records written by older
    announcers)."""
    schema = copy.deepcopy(load_schema("model_update"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "envelope_signature"]
    return schema


def model_update_codec() -> Codec:
    """A codec for ``model-updates`` that also reads records of the previous schema."""
    return Codec("model_update", writer_schemas=[_previous_writer()])


def envelope_payload(
    *,
    model_name: str,
    family: str,
    version: str,
    action: str,
    canary_share: float,
    announced_at: int,
    artifact_sha256: str,
    manifest_sha256: str,
) -> bytes:
    """What the envelope signature covers: a format tag and canonical JSON of the fields."""
    body = {
        "action": action,
        "announced_at": int(announced_at),
        "artifact_sha256": artifact_sha256,
        "canary_share": float(canary_share),
        "family": family,
        "manifest_sha256": manifest_sha256,
        "model_name": model_name,
        "version": version,
    }
    return (
        ENVELOPE_FORMAT + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
    ).encode()


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
    envelope_signature: bytes | None = None
    manifest_json: str = ""

    @property
    def is_live(self) -> bool:
        return self.action in LIVE_ACTIONS

    @property
    def slot(self) -> str:
        """``live`` or ``challenger``: announcements of each slot are ordered separately."""
        return "live" if self.is_live else "challenger"

    def payload(self) -> bytes:
        """The bytes the envelope signature must cover (see :func:`envelope_payload`)."""
        return envelope_payload(
            model_name=self.model_name,
            family=self.artifact.manifest.family if self.artifact else "",
            version=self.version,
            action=self.action,
            canary_share=self.canary_share,
            announced_at=self.announced_at,
            artifact_sha256=self.artifact.sha256 if self.artifact else "",
            manifest_sha256=sha256_hex(self.manifest_json) if self.artifact else "",
        )


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
    signing_key: str | None = None,
    announced_at: int | None = None,
) -> tuple[bytes, bytes]:
    """(key, value) of an announcement; ``artifact=None`` (SHADOW only) clears the challenger.

    ``model_name`` defaults to the artifact's (a different one is written as given: workers
    refuse the mismatch). With ``signing_key`` the envelope is signed; ``announced_at``
    defaults to now (epoch ms)."""
    codec = codec or Codec("model_update")
    name = model_name or (artifact.manifest.name if artifact else None)
    if not name:
        raise ValueError("model_name is required when no artifact is given")
    manifest_json = artifact.manifest.to_json() if artifact else ""
    a = Announcement(
        model_name=name,
        version=artifact.manifest.version if artifact else "",
        action=action,
        artifact=artifact,
        canary_share=float(canary_share),
        announced_at=int(time.time() * 1000) if announced_at is None else int(announced_at),
        manifest_json=manifest_json,
    )
    record = {
        "model_name": name,
        "version": a.version,
        "action": action,
        "manifest_json": manifest_json,
        "artifact": artifact.onnx if artifact else b"",
        "signature": artifact.signature if artifact else None,
        "canary_share": a.canary_share,
        "announced_at": a.announced_at,
        "envelope_signature": sign_bytes(signing_key, a.payload()) if signing_key else None,
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
    signing_key: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Publish one announcement (its envelope signed with ``signing_key`` when given) and wait
    up to ``timeout`` seconds for the broker's acknowledgement; RuntimeError when it was
    refused or did not come (nothing may count as announced that is not on the topic)."""
    key, value = encode_announcement(
        artifact, action, model_name=model_name, canary_share=canary_share, signing_key=signing_key
    )
    p = Producer(
        {**with_kafka_logger(client), "enable.idempotence": True, "message.max.bytes": 8_000_000}
    )
    errors: list[object] = []
    p.produce(topic, value, key, on_delivery=lambda err, _m: errors.append(err) if err else None)
    queued = p.flush(timeout)
    if errors:
        raise RuntimeError(f"announcement not delivered: {errors[0]}")
    if queued:
        raise RuntimeError(
            f"announcement not acknowledged within {timeout:g} s: the broker at "
            f"{client.get('bootstrap.servers')} did not answer (the record is not on {topic})"
        )
    log.info(
        "model.announced",
        model=key.decode(),
        version=artifact.manifest.version if artifact else "",
        action=action,
        bytes=len(value),
        signed=signing_key is not None,
    )


def decode_announcement(value: bytes, offset: int = -1, codec: Codec | None = None) -> Announcement:
    """Decode a model-update record (raises DecodeError or ArtifactError on garbage)."""
    rec = (codec or model_update_codec()).decode(value)
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
        rec.get("envelope_signature"),
        rec["manifest_json"],
    )


def check_envelope(
    a: Announcement, model_name: str, verify_key: str | None, allow_unsigned: bool
) -> None:
    """Raise :class:`ArtifactError` unless the announcement is bound to what it announces, in
    order: ``wrong_model`` (another model's name), the manifest it carries
    (:func:`~finscore.models.artifact.check_manifest`: ``wrong_model`` for another model or
    version, ``bad_threshold``), ``invalid`` (a live action without an artifact, a canary share
    outside (0, 1)), then the envelope signature (:func:`check_envelope_signature`: ``no_key``,
    ``unsigned``, ``bad_signature``; an unsigned envelope passes only with ``allow_unsigned``,
    a present one is always checked when a key is set)."""
    if a.model_name != model_name:
        raise ArtifactError(f"announcement for {a.model_name!r}", reason="wrong_model")
    if a.artifact is not None:
        check_manifest(a.artifact.manifest, expect_name=a.model_name, expect_version=a.version)
    if a.artifact is None and a.action != "SHADOW":
        raise ArtifactError(f"{a.action} announcement without an artifact", reason="invalid")
    if a.action == "CANARY" and not 0.0 < a.canary_share < 1.0:
        raise ArtifactError(f"canary share {a.canary_share} outside (0, 1)", reason="invalid")
    check_envelope_signature(a, verify_key, allow_unsigned)


def check_envelope_signature(a: Announcement, verify_key: str | None, allow_unsigned: bool) -> None:
    """Raise :class:`ArtifactError` (``no_key``, ``unsigned``, ``bad_signature``) unless the
    envelope signature is acceptable: :func:`~finscore.models.artifact.check_signature`, the
    rule artifacts' signatures follow too, required unless ``allow_unsigned``."""
    check_signature(verify_key, a.payload(), a.envelope_signature, required=not allow_unsigned,
                    label=f"announcement of {a.model_name} v{a.version}")  # fmt: skip


def load_scorer(
    artifact: Artifact,
    *,
    verify_key: str | None,
    allow_unsigned: bool,
    spec: InputSpec,
    providers: Sequence[str] | None = None,
) -> Scorer:
    """Verify ``artifact`` (hash, size, signature), load it in ONNX Runtime once and
    :func:`admit` it for ``spec``: one session per load, its smoke test run once, on the session
    that will score. Raises :class:`ArtifactError` with a reason (``load_failed`` when ONNX
    Runtime refuses the bytes)."""
    artifact.verify(verify_key, require_signature=not allow_unsigned, smoke=False)
    try:
        scorer = Scorer(artifact, providers=providers)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ArtifactError(f"model does not load: {exc}", reason="load_failed") from exc
    admit(scorer, spec)
    return scorer


def watcher_reader_options(model_name: str) -> dict:
    """How a :class:`ModelWatcher`'s reader is opened (announcements carry whole models)."""
    return {"group": f"finscore-model-watcher-{model_name}", "max_message_bytes": 8_000_000,
            "fetch_wait_ms": 50}  # fmt: skip


Loaded = Callable[[Announcement, Scorer | None], None]
Rejected = Callable[[Announcement | None, str], None]


class ModelWatcher:
    """Follows ``model-updates`` for one model name; verifies and loads off the hot path.

    ``read_to_end`` returns the announcements so far (for start-up), newest first; ``poll``
    hands new ones to a loader thread, which checks them (:func:`check_envelope`, newer than
    the last accepted one of its slot, the artifact's hash and signature, :func:`admit` against
    ``input_spec()``), builds a :class:`Scorer` and calls ``on_loaded``; a refusal calls
    ``on_rejected`` with a reason and leaves the current model in place.
    ``allow_unsigned`` (development only) accepts unsigned announcements and artifacts; every
    other check still applies.
    """

    def __init__(
        self,
        client: Mapping[str, str | int] | None,
        topic: str,
        model_name: str,
        *,
        verify_key: str | None,
        on_loaded: Loaded,
        on_rejected: Rejected,
        allow_unsigned: bool = False,
        input_spec: Callable[[], InputSpec] | None = None,
        providers: Sequence[str] | None = None,
        reader: TopicReader | None = None,
    ) -> None:
        """``reader`` follows ``topic`` (default: a Kafka reader on ``client``); the watcher
        assigns it partition 0 from the beginning and closes it."""
        self.topic = topic
        self.providers = providers  # execution providers of loaded models (None: the default)
        self.model_name = model_name
        self.verify_key = verify_key
        self.allow_unsigned = allow_unsigned
        self.input_spec = input_spec or (lambda: InputSpec.fraud())
        self.on_loaded = on_loaded
        self.on_rejected = on_rejected
        # Issue time of the last accepted announcement per slot (live, challenger).
        self.accepted_at: dict[str, int] = {"live": -1, "challenger": -1}
        self._codec = model_update_codec()
        if reader is None:
            from finscore.streams.kafka import KafkaTopicReader

            reader = KafkaTopicReader(client or {}, topic, **watcher_reader_options(model_name))
        self.reader = reader
        self.reader.assign({0: None})
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._lock = threading.Lock()

    def _decode(self, msgs: list[Message]) -> list[Announcement]:
        out = []
        for m in msgs:
            if m.value is None:
                continue
            try:
                a = decode_announcement(m.value, m.offset, self._codec)
            except (DecodeError, ArtifactError, ValueError, KeyError, TypeError) as exc:
                log.warning("model.bad_announcement", offset=m.offset, error=str(exc))
                self.on_rejected(None, "undecodable")
                continue
            if a.model_name == self.model_name:
                out.append(a)
        return out

    def read_to_end(self, timeout: float = 10.0) -> tuple[list[Announcement], list[Announcement]]:
        """Consume everything announced so far; (live, challenger) announcements, newest issue
        time first (at most :data:`START_CANDIDATES` each), so a start-up can fall back to an
        earlier verified one when the newest is refused."""
        low, high = self.reader.watermarks(0, timeout)
        keep: dict[str, deque[Announcement]] = {
            "live": deque(maxlen=START_CANDIDATES),
            "challenger": deque(maxlen=START_CANDIDATES),
        }
        position = low
        deadline = time.monotonic() + timeout
        while position < high and time.monotonic() < deadline:
            msgs = self.reader.read(500, 0.5)
            for a in self._decode(msgs):
                keep[a.slot].append(a)
            if msgs:
                position = msgs[-1].offset + 1

        def newest_first(q: deque[Announcement]) -> list[Announcement]:
            return sorted(q, key=lambda a: (a.announced_at, a.offset), reverse=True)

        return newest_first(keep["live"]), newest_first(keep["challenger"])

    def poll(self) -> None:
        """Pick up new announcements (non-blocking) and load them in the background."""
        for a in self._decode(self.reader.read(50, 0)):
            self._pool.submit(self._load, a)

    def check(self, a: Announcement) -> Scorer | None:
        """Every check but the issue time; the scorer (None for a challenger removal).
        Raises :class:`ArtifactError` with a reason."""
        check_envelope(a, self.model_name, self.verify_key, self.allow_unsigned)
        if a.artifact is None:
            return None
        return load_scorer(a.artifact, verify_key=self.verify_key,
                           allow_unsigned=self.allow_unsigned, spec=self.input_spec(),
                           providers=self.providers)  # fmt: skip

    def accept(self, a: Announcement) -> tuple[bool, Scorer | None]:
        """(accepted, scorer): verify ``a`` and, when it passes and is newer than the last
        accepted announcement of its slot, record it as accepted. A refusal is logged and
        reported to ``on_rejected``; the caller keeps its current model."""
        with self._lock:
            last = self.accepted_at[a.slot]
            try:
                if a.announced_at <= last:
                    raise ArtifactError(
                        f"announcement issued at {a.announced_at} is not newer than the one "
                        f"accepted ({last}): a replay",
                        reason="stale",
                    )
                scorer = self.check(a)
            except ArtifactError as exc:
                log.warning(
                    "model.refused",
                    model=a.model_name,
                    version=a.version,
                    action=a.action,
                    offset=a.offset,
                    reason=exc.reason,
                    error=str(exc),
                )
                self.on_rejected(a, exc.reason)
                return False, None
            self.accepted_at[a.slot] = a.announced_at
            return True, scorer

    def settle(self, seen: list[Announcement]) -> None:
        """After start-up, raise each slot's watermark to the newest *authentic* announcement
        seen on the topic (its envelope signature verifies), whether its model was loaded,
        refused, or skipped for the registry champion: a later replay of anything older is
        then refused as ``stale``. Forged envelopes never move the watermark (a forger could
        otherwise block every future announcement with a far-future issue time)."""
        with self._lock:
            for a in seen:
                try:
                    check_envelope(a, self.model_name, self.verify_key, self.allow_unsigned)
                except ArtifactError as exc:
                    if exc.reason != "bad_threshold":
                        continue
                    try:  # a model refused for its threshold: authentic if its envelope is
                        check_envelope_signature(a, self.verify_key, self.allow_unsigned)
                    except ArtifactError:
                        continue
                if a.announced_at > self.accepted_at[a.slot]:
                    self.accepted_at[a.slot] = a.announced_at

    def load_now(self, a: Announcement) -> Scorer | None:
        """Verify and load synchronously; None (and ``on_rejected``) when refused."""
        if a.artifact is None:
            return None
        return self.accept(a)[1]

    def _load(self, a: Announcement) -> None:
        ok, scorer = self.accept(a)
        if ok:
            self.on_loaded(a, scorer)

    def challenger_of(self, a: Announcement, scorer: Scorer | None) -> Challenger | None:
        """The challenger an announcement describes (None = remove)."""
        if scorer is None:
            return None
        mode: ChallengerMode = "canary" if a.action == "CANARY" else "shadow"
        return Challenger(scorer, mode, a.canary_share)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.reader.close()


class ModelSlot:
    """The live model of a worker, a staged successor, and an optional challenger.

    ``stage`` may be called from any thread (loading happens off the hot path);
    ``swap_if_staged`` is called by the worker loop between batches and is the only place the
    live model changes.
    """

    def __init__(self, live: Scorer | None = None) -> None:
        self._live = live
        self._staged: Scorer | None = None
        self._challenger: Challenger | None = None
        self._staged_challenger: Challenger | None | bool = False
        self._lock = threading.Lock()
        self.swaps: list[tuple[float, str, str]] = []  # (time, from_version, to_version)

    @property
    def live(self) -> Scorer | None:
        return self._live

    @property
    def challenger(self) -> Challenger | None:
        return self._challenger

    def stage(self, scorer: Scorer) -> None:
        """Queue ``scorer`` to become live at the next batch boundary."""
        with self._lock:
            self._staged = scorer

    def stage_challenger(self, challenger: Challenger | None) -> None:
        """Queue a challenger (or its removal with ``None``) for the next batch boundary."""
        with self._lock:
            self._staged_challenger = challenger

    def swap_if_staged(self) -> Scorer | None:
        """Make the staged model live; returns it, or None when nothing was staged."""
        with self._lock:
            staged, self._staged = self._staged, None
            if self._staged_challenger is not False:
                self._challenger = self._staged_challenger or None  # type: ignore[assignment]
                self._staged_challenger = False
        if staged is None:
            return None
        old = self._live.version if self._live else ""
        self._live = staged
        self.swaps.append((time.time(), old, staged.version))
        log.info("model.swapped", model=staged.name, old_version=old, version=staged.version)
        return staged

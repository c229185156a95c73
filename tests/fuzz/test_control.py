"""Fuzz: the control plane's parsers: model announcements (``model-updates``) and the sidecar's
inputs (``sidecar-commands`` and the topics it follows).

Properties: a model-update record of any shape decodes or raises the documented typed error, and
no decodable one makes the watcher raise; a signed announcement with any of its fields changed
(name, version, action, issue time, canary share), or replayed after a newer one, is never
loaded; the sidecar's poll survives any record on any of its topics and returns only valid
commands.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.models.registry import Artifact, ArtifactError, generate_keypair
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.streams import hot_swap as A
from finscore.streams.transport import Message
from tests.artifacts import artifact
from tests.fuzz import strategies as S

SIGNING_KEY, VERIFY_KEY = generate_keypair()
OFFLINE = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}  # the watcher is only assigned


def _signed(family: str, version: str) -> Artifact:
    a = artifact(family, version)
    return a.sign(SIGNING_KEY)


FRAUD_V2, FRAUD_V3, MARKET_V1 = _signed("fraud", "2"), _signed("fraud", "3"), _signed("market", "1")
RECORD = Codec(  # reads and writes the topic's current schema
    "model_update",
    **(
        {"writer_schemas": []} if "writer_schemas" in inspect.signature(Codec).parameters else {}
    ),  # fmt: skip
)


def _encode(
    art: Artifact | None, action: str = "PROMOTE", at: int | None = None, **kw: Any
) -> bytes:
    """A signed announcement as the announcer writes it (its envelope signed where supported)."""
    params = inspect.signature(A.encode_announcement).parameters
    if "signing_key" in params:
        kw["signing_key"] = SIGNING_KEY
    if "announced_at" in params and at is not None:
        kw["announced_at"] = at
    return A.encode_announcement(art, action, **kw)[1]


@contextmanager
def _watcher(model: str = "fraud") -> Iterator[A.ModelWatcher]:
    w = A.ModelWatcher(OFFLINE, "model-updates", model, verify_key=VERIFY_KEY,
                       on_loaded=lambda *_: None, on_rejected=lambda *_: None)  # fmt: skip
    try:
        yield w
    finally:
        w.close()


def _loads(w: A.ModelWatcher, value: bytes) -> bool:
    """Whether a worker watching ``w.model_name`` would load this record: it decodes, names the
    model, and passes the watcher's checks (the path of ``ModelWatcher.poll``)."""
    try:
        a = A.decode_announcement(value)
    except (DecodeError, ArtifactError):
        return False
    return a.model_name == w.model_name and w.load_now(a) is not None


# -- decoding ---------------------------------------------------------------------------------
MANIFESTS = st.one_of(
    st.just(FRAUD_V3.manifest.to_json()),
    st.sampled_from(["", "{}", "[]", "null", "1", '"x"', '{"name": 1}', "{" * 50, '{"a":']),
    st.builds(
        lambda d: json.dumps({**json.loads(FRAUD_V3.manifest.to_json()), **d}),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "version",
                    "family",
                    "sha256",
                    "size_bytes",
                    "input_shape",
                    "threshold",
                    "feature_names",
                ]
            ),
            S.JSON_JUNK,
            max_size=3,
        ),
    ),  # fmt: skip
    st.text(max_size=30),
)


@st.composite
def _update_records(draw: st.DrawFn) -> bytes:
    """model_update records of any shape the schema allows."""
    base = RECORD.decode(_encode(FRAUD_V3))
    rec = dict(base)
    rec["manifest_json"] = draw(MANIFESTS)
    for name, strat in (
        ("model_name", st.sampled_from(["fraud", "market", "", "../x", "f" * 300])),
        ("version", st.sampled_from(["", "3", "2", "0", "-1", "v", "9" * 40])),
        ("action", st.sampled_from(["PROMOTE", "ROLLBACK", "SHADOW", "CANARY"])),
        ("artifact", st.one_of(st.just(b""), st.binary(max_size=40), st.just(FRAUD_V3.onnx))),
        ("signature", st.one_of(st.none(), st.binary(max_size=64))),
        ("canary_share", S.FLOATS),
        ("announced_at", st.integers(-(2**63), 2**63 - 1)),
    ):
        if draw(st.booleans()):
            rec[name] = draw(strat)
    return RECORD.encode(rec)


@given(value=st.one_of(_update_records(), S.mutated("model_update"), S.garbage()))
@example(value=RECORD.encode({**RECORD.decode(_encode(FRAUD_V3)), "manifest_json": "[]"}))
@example(value=RECORD.encode({**RECORD.decode(_encode(FRAUD_V3)), "manifest_json": "{}"}))
def test_a_model_update_decodes_or_raises_the_typed_error(value: bytes) -> None:
    """decode_announcement raises DecodeError or ArtifactError (its documented errors) on
    anything it cannot read; whatever decodes, the watcher checks without raising and loads only
    the genuine, signed, matching record."""
    try:
        a = A.decode_announcement(value)
    except (DecodeError, ArtifactError):
        return
    with _watcher() as w:
        loaded = w.load_now(a) is not None
    if loaded:
        assert a.artifact is not None and a.artifact.onnx == FRAUD_V3.onnx


# -- binding: a signed record relabelled is refused ---------------------------------------------
def _relabel(art: Artifact, **change: Any) -> bytes:
    """The genuine signed announcement of ``art`` with fields changed, as anyone who can write
    the topic could (no key needed)."""
    return RECORD.encode({**RECORD.decode(_encode(art)), **change})


@st.composite
def _relabelled(draw: st.DrawFn) -> tuple[bytes, str]:
    """A genuine signed announcement (fraud v3, or market v1) with one or more of its unsigned-
    looking fields changed; and a description of the change."""
    art = draw(st.sampled_from([FRAUD_V3, MARKET_V1]))
    genuine = RECORD.decode(_encode(art))
    rec = dict(genuine, model_name="fraud")  # a market artifact is always relabelled as fraud
    changes = {
        "model_name": st.sampled_from(["fraud", "market", "fraud2"]),
        "version": st.sampled_from(["1", "2", "4", "30"]),
        "action": st.sampled_from(["PROMOTE", "ROLLBACK", "SHADOW", "CANARY"]),
        "announced_at": st.integers(0, 2**62),
        "canary_share": st.floats(0.01, 0.99),
    }
    for name in draw(st.lists(st.sampled_from(sorted(changes)), min_size=1, unique=True)):
        rec[name] = draw(changes[name])
    if art is FRAUD_V3 and rec == genuine:
        rec["version"] = "4"
    return RECORD.encode(rec), json.dumps({k: str(v)[:20] for k, v in rec.items()
                                           if k != "artifact" and rec[k] != genuine[k]})  # fmt: skip


@given(case=_relabelled())
@example(case=(_relabel(MARKET_V1, model_name="fraud"), "market artifact announced as fraud"))
@example(case=(_relabel(FRAUD_V3, version="30"), "fraud v3 announced as v30"))
def test_a_relabelled_signed_announcement_is_never_loaded(case: tuple[bytes, str]) -> None:
    """Observation 4: a signed market artifact re-announced as ``fraud``, or a signed fraud
    announcement with another version, action, issue time or canary share, is refused; the
    genuine record is loaded (so the refusal is the binding, not a broken setup)."""
    value, change = case
    with _watcher() as w:
        assert _loads(w, _encode(FRAUD_V3)), "the genuine signed announcement must load"
    with _watcher() as w:
        assert not _loads(w, value), f"loaded a relabelled announcement: {change}"


@given(gap=st.integers(1, 10**9), order=st.permutations([0, 1, 2]))
def test_an_older_signed_announcement_replayed_is_refused(gap: int, order: list[int]) -> None:
    """Observation 4 (downgrade): after a worker accepted v3 (issued at t), the genuine signed v2
    announcement (issued before t) replayed is refused; a rollback issued after t is not."""
    t = int(time.time() * 1000)
    v3 = _encode(FRAUD_V3, at=t)
    old_v2 = _encode(FRAUD_V2, at=t - gap)
    rollback = _encode(FRAUD_V2, "ROLLBACK", at=t + gap)
    with _watcher() as w:
        assert _loads(w, v3)
        assert not _loads(w, old_v2), "an older announcement replayed downgraded the worker"
        if "announced_at" in inspect.signature(A.encode_announcement).parameters:
            assert _loads(w, rollback), "a new signed rollback must still work"


# -- the sidecar's inputs -----------------------------------------------------------------------
class _FakeInputs:
    """The sidecar's consumer in memory: every input topic exists (no dead-letter topic), one
    batch, then nothing (a unit test of the poll loop)."""

    def __init__(self, msgs: list[Message]) -> None:
        self.msgs = msgs

    def topics(self) -> dict[str, list[int]]:
        return {t: [0] for t in SIDECAR_TOPICS}

    def assign_from_beginning(self, _partitions: list[tuple[str, int]]) -> None:
        return None

    def consume(self, _n: int, _timeout: float) -> list[Message]:
        out, self.msgs = self.msgs, []
        return out

    def close(self) -> None:
        return None


class _NoProducer:
    def produce(self, *_a: Any, **_k: Any) -> None:  # no dead-letter topic exists here
        raise AssertionError("nothing is dead-lettered without a dead-letter topic")

    def poll(self, _t: float) -> int:
        return 0

    def flush(self, _t: float) -> int:
        return 0


def _sidecar(msgs: list[Message]) -> Sidecar:
    """A Sidecar on an in-memory consumer (no broker)."""
    cfg = SidecarConfig(client=OFFLINE, markets=True)
    return Sidecar(cfg, consumer=_FakeInputs(msgs), producer=_NoProducer())


COMMANDS = st.one_of(
    st.sampled_from([b"123", b"[]", b"null", b'"fraud"', b"{}", b'{"model": 5}',
                     b'{"model": "../x"}', b'{"model": "market"}', b'{"model": "fraud"}',
                     b'{"command": "rm"}', b"\xff\xfe", b"{" * 5000]),
    st.binary(max_size=30),
    st.builds(lambda d: json.dumps(d).encode(), S.JSON_JUNK),
)  # fmt: skip
SIDECAR_TOPICS = {
    T.SIDECAR_COMMANDS: st.one_of(COMMANDS, st.none()),
    T.FRAUD_LABELS: S.any_value("fraud_label", S.extreme_labels()),
    T.MARKET_TICKS: S.any_value("market_tick", S.extreme_ticks()),
    T.FRAUD_FLAGS: st.one_of(S.mutated("fraud_flag"), S.garbage()),
    T.PRICE_SIGNALS: st.one_of(S.mutated("price_signal"), S.garbage()),
}


@given(
    records=st.lists(
        st.sampled_from(sorted(SIDECAR_TOPICS)).flatmap(
            lambda t: st.tuples(st.just(t), SIDECAR_TOPICS[t])
        ),
        max_size=25,
    )
)
@example(records=[(T.SIDECAR_COMMANDS, b"123")])  # observation 6: a 3-byte record
def test_no_record_stops_the_sidecar(records: list[tuple[str, bytes | None]]) -> None:
    """Any record on any topic the sidecar follows: poll returns, and only valid commands
    (recompress a known model) come out, at most one per command record."""
    msgs = [Message(t, 0, i, None, v, 10**13) for i, (t, v) in enumerate(records)]
    commands = _sidecar(msgs).poll(0)
    assert len(commands) <= sum(t == T.SIDECAR_COMMANDS for t, _ in records)
    for c in commands:
        assert getattr(c, "model", c) in ("fraud", "market"), c


@given(value=st.one_of(COMMANDS, st.none()))
def test_parse_command_returns_a_command_or_raises_bad_input(value: bytes | None) -> None:
    """The pure command parser: a Command for a valid one, BadInput for anything else."""
    inputs = pytest.importorskip("finscore.app.sidecar.inputs")
    try:
        command = inputs.parse_command(value)
    except inputs.BadInput as exc:
        assert exc.error_type and exc.reason
    else:
        assert command.model in inputs.MODELS

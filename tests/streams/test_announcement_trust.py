"""Each way an announcement can lie is refused for its own reason (no broker: the checks are
pure functions of the record, the worker's key and what its stream feeds a model)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from finscore.models.registry import Artifact, ArtifactError
from finscore.schemas.codec import Codec
from finscore.streams.hot_swap import (
    _previous_writer,
    check_envelope,
    decode_announcement,
    encode_announcement,
)
from finscore.streams.scoring import InputSpec, Scorer, admit
from tests.artifacts import TEST_SIGNING_KEY, TEST_VERIFY_KEY, artifact, fraud_onnx, signed


def _reason(fn) -> str:  # noqa: ANN001
    with pytest.raises(ArtifactError) as exc:
        fn()
    return exc.value.reason


def _announced(art: Artifact | None, action: str = "PROMOTE", **kw):  # noqa: ANN003, ANN202
    kw.setdefault("signing_key", TEST_SIGNING_KEY)
    return decode_announcement(encode_announcement(art, action, **kw)[1])


def _relabel(value: bytes, **changes: object):  # noqa: ANN202
    codec = Codec("model_update")
    rec = codec.decode(value)
    rec.update(changes)
    return decode_announcement(codec.encode(rec, "avro"))


def _check(a, key: str | None = TEST_VERIFY_KEY, allow: bool = False) -> None:  # noqa: ANN001
    check_envelope(a, "fraud", key, allow)


def test_a_signed_announcement_passes_and_binds_every_field() -> None:
    art = signed(artifact("fraud", "2"))
    _, value = encode_announcement(art, "PROMOTE", signing_key=TEST_SIGNING_KEY)
    _check(decode_announcement(value))
    later = int(time.time() * 1000) + 60_000
    for change in (
        {"announced_at": later},
        {"action": "ROLLBACK"},
        {"canary_share": 0.5},
    ):
        assert _reason(lambda c=change: _check(_relabel(value, **c))) == "bad_signature", change
    assert _reason(lambda: _check(_relabel(value, version="7"))) == "wrong_model"
    assert _reason(lambda: _check(_relabel(value, envelope_signature=None))) == "unsigned"


def test_a_market_artifact_announced_as_fraud_is_refused() -> None:
    market = signed(artifact("market", "5"))
    # the signer itself names it fraud: the manifest still says market
    a = _announced(market, model_name="fraud")
    assert _reason(lambda: _check(a)) == "wrong_model"
    # a development worker accepting unsigned models: renamed manifest, still a market model
    renamed = dataclasses.replace(
        market, manifest=dataclasses.replace(market.manifest, name="fraud")
    )
    assert _reason(lambda: admit(Scorer(renamed), InputSpec.fraud())) == "wrong_family"


def test_no_key_refuses_everything_unless_unsigned_models_are_allowed() -> None:
    a = _announced(artifact("fraud", "1"), signing_key=None)
    assert _reason(lambda: _check(a, key=None)) == "no_key"
    assert _reason(lambda: _check(a)) == "unsigned"
    _check(a, key=None, allow=True)
    s = _announced(signed(artifact("fraud", "1")))
    assert _reason(lambda: _check(s, key=None)) == "no_key"


def test_records_of_the_previous_schema_decode_and_count_as_unsigned() -> None:
    art = signed(artifact("fraud", "1"))
    old = Codec("model_update", reader_schema=_previous_writer())
    value = old.encode(
        {"model_name": "fraud", "version": "1", "action": "PROMOTE",
         "manifest_json": art.manifest.to_json(), "artifact": art.onnx,
         "signature": art.signature, "canary_share": 0.0, "announced_at": 1},
    )  # fmt: skip
    a = decode_announcement(value)
    assert a.version == "1" and a.envelope_signature is None
    assert _reason(lambda: _check(a)) == "unsigned"


def _with(art: Artifact, **manifest_changes: object) -> Scorer:
    return Scorer(
        dataclasses.replace(art, manifest=dataclasses.replace(art.manifest, **manifest_changes))
    )


@pytest.mark.parametrize("threshold", [-1.0, 1.5, float("nan"), float("inf"), True])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    """By the artifact's verification, which every load runs before :func:`admit`."""
    from finscore.streams.hot_swap import load_scorer

    art = artifact("fraud")
    art = dataclasses.replace(art, manifest=dataclasses.replace(art.manifest, threshold=threshold))

    def load() -> None:
        load_scorer(art, verify_key=None, allow_unsigned=True, spec=InputSpec.fraud())

    assert _reason(load) == "bad_threshold"


def test_a_model_without_reference_inputs_is_refused() -> None:
    s = _with(artifact("fraud"), reference_inputs=[], reference_outputs=[])
    assert _reason(lambda: admit(s, InputSpec.fraud())) == "no_reference"


def test_inputs_must_match_what_the_stream_provides() -> None:
    admit(Scorer(artifact("fraud")), InputSpec.fraud())
    admit(Scorer(artifact("market", window=100)), InputSpec.market(100))
    admit(Scorer(artifact("market", window=50)), InputSpec.market(None))  # window not fixed yet
    m50 = Scorer(artifact("market", window=50))
    assert _reason(lambda: admit(m50, InputSpec.market(100))) == "input_mismatch"
    # a fraud model whose graph reads 5 columns while its manifest names all of them
    narrow = artifact("fraud")
    onnx5 = fraud_onnx(f=5)
    import hashlib

    wrong = dataclasses.replace(
        narrow,
        onnx=onnx5,
        manifest=dataclasses.replace(
            narrow.manifest, sha256=hashlib.sha256(onnx5).hexdigest(), size_bytes=len(onnx5)
        ),
    )
    assert _reason(lambda: admit(Scorer(wrong), InputSpec.fraud())) == "input_mismatch"
    assert (
        _reason(lambda: Scorer(artifact("fraud", feature_names=["NO_SUCH_FEATURE"])))
        == "unknown_features"
    )
    # a market model in the fraud stream: wrong family, before any shape is tried
    assert _reason(lambda: admit(Scorer(artifact("market")), InputSpec.fraud())) == "wrong_family"


def test_the_smoke_test_still_runs() -> None:
    art = artifact("fraud")
    ref = np.asarray(art.manifest.reference_outputs) + 0.5
    s = _with(art, reference_outputs=ref.tolist())
    assert _reason(lambda: admit(s, InputSpec.fraud())) == "smoke_test"


def test_start_up_settles_on_the_newest_authentic_announcement_only() -> None:
    """A worker that started on the registry champion (or an earlier announcement) refuses a
    later replay of anything older than the newest authentic announcement it saw, while a
    forged far-future envelope cannot block later genuine ones."""
    from finscore.streams.hot_swap import ModelWatcher

    rejected: list[str] = []
    watcher = ModelWatcher(
        {"bootstrap.servers": "127.0.0.1:9"},  # never contacted: no poll in this test
        "model-updates",
        "fraud",
        verify_key=TEST_VERIFY_KEY,
        on_loaded=lambda a, s: None,
        on_rejected=lambda a, reason: rejected.append(reason),
    )
    try:
        old = _announced(signed(artifact("fraud", "1", seed=1)))
        time.sleep(0.002)
        newest = _announced(signed(artifact("fraud", "2", seed=2)))
        forged = _relabel(
            encode_announcement(signed(artifact("fraud", "9")), "PROMOTE")[1],
            announced_at=int(time.time() * 1000) + 10**9,
        )
        watcher.settle([forged, newest])
        assert watcher.accept(old) == (False, None)
        assert rejected == ["stale"]
        later = _announced(signed(artifact("fraud", "3", seed=3)))
        ok, scorer = watcher.accept(later)
        assert ok and scorer is not None and scorer.version == "3"
    finally:
        watcher.close()


def test_authentic_announcement_of_a_bad_threshold_still_moves_the_start_up_watermark() -> None:
    """The announcer issued it (its envelope verifies), so an older replay is still stale,
    even though the model it carries is refused for its threshold."""
    from finscore.streams.hot_swap import ModelWatcher

    rejected: list[str] = []
    watcher = ModelWatcher(
        {"bootstrap.servers": "127.0.0.1:9"},  # never contacted: no poll in this test
        "model-updates",
        "fraud",
        verify_key=TEST_VERIFY_KEY,
        on_loaded=lambda a, s: None,
        on_rejected=lambda a, reason: rejected.append(reason),
    )
    try:
        old = _announced(signed(artifact("fraud", "1", seed=1)))
        time.sleep(0.002)
        art = artifact("fraud", "2", seed=2)
        bad = dataclasses.replace(art, manifest=dataclasses.replace(art.manifest, threshold=1.5))
        newest = _announced(signed(bad))
        assert _reason(lambda: watcher.check(newest)) == "bad_threshold"
        watcher.settle([newest])
        assert watcher.accept(old) == (False, None)
        assert rejected == ["stale"]
    finally:
        watcher.close()


# The envelope signature against the worker's key and its allow_unsigned setting: the reason
# each of the twelve combinations is refused for (None: accepted).
ENVELOPE_CASES = [
    # signature, verify key, allow_unsigned, reason
    ("valid", "key", False, None),
    ("valid", "key", True, None),
    ("valid", None, False, "no_key"),
    ("valid", None, True, None),
    ("bad", "key", False, "bad_signature"),
    ("bad", "key", True, "bad_signature"),
    ("bad", None, False, "no_key"),
    ("bad", None, True, None),
    ("none", "key", False, "unsigned"),
    ("none", "key", True, None),
    ("none", None, False, "no_key"),
    ("none", None, True, None),
]


@pytest.mark.parametrize(("signature", "key", "allow", "reason"), ENVELOPE_CASES)
def test_envelope_signature_key_and_allow_unsigned(
    signature: str, key: str | None, allow: bool, reason: str | None
) -> None:
    art = signed(artifact("fraud", "2"))
    value = encode_announcement(art, "PROMOTE", signing_key=TEST_SIGNING_KEY)[1]
    a = decode_announcement(value)
    if signature == "bad":
        a = dataclasses.replace(a, envelope_signature=bytes(64))  # well formed, not the key's
    elif signature == "none":
        a = dataclasses.replace(a, envelope_signature=None)
    verify_key = TEST_VERIFY_KEY if key else None
    if reason is None:
        _check(a, verify_key, allow)
    else:
        assert _reason(lambda: _check(a, verify_key, allow)) == reason


class _SilentProducer:
    """A producer whose broker never answers: the record stays queued, no delivery report."""

    def __init__(self, config: dict) -> None:
        self.queued = 0

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery=None) -> None:  # noqa: ANN001
        self.queued += 1

    def flush(self, timeout: float) -> int:
        return self.queued


def test_an_announcement_the_broker_never_acknowledges_is_an_error(monkeypatch) -> None:  # noqa: ANN001
    """``flush`` returning with the record still queued is no acknowledgement."""
    from finscore.streams import hot_swap

    monkeypatch.setattr(hot_swap, "Producer", _SilentProducer)
    with pytest.raises(RuntimeError, match="not acknowledged"):
        hot_swap.announce({"bootstrap.servers": "127.0.0.1:9"}, "model-updates",
                          signed(artifact("fraud", "2")), signing_key=TEST_SIGNING_KEY)  # fmt: skip


def test_an_announcement_to_an_unreachable_broker_is_an_error() -> None:
    """A real producer on a closed port: the delivery times out, the announcement fails."""
    from finscore.streams.hot_swap import announce

    client = {"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 500}
    with pytest.raises(RuntimeError):
        announce(client, "model-updates", signed(artifact("fraud", "2")))

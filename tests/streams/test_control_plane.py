"""The model control plane is authenticated: a worker with a verify key keeps scoring with the
model it accepted last whatever arrives on ``model-updates`` (issue 14, observations 4 and 5)."""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest

from finscore.app.console.produce import produce, transaction_events
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.exceptions import ModelUnavailable
from finscore.streams.hot_swap import encode_announcement
from finscore.streams.worker import Worker
from tests.artifacts import TEST_VERIFY_KEY, artifact, signed
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    produce_records,
    running,
    worker_config,
)

pytestmark = pytest.mark.broker


def txs_for(prefix: str, n: int, seed: int = 4) -> list:
    events = itertools.islice(transaction_events(prefix, seed=seed), n * 2)
    return [e for e in events if e[0] == prefix + T.TRANSACTIONS][:n]


def announcement(art, action: str = "PROMOTE", **kw) -> tuple[bytes, bytes]:  # noqa: ANN001
    """(key, value) of an announcement, signed with the test key where the API allows it."""
    try:
        return encode_announcement(art, action, signing_key=kw.pop("signing_key", _KEY), **kw)
    except TypeError:  # an announcer that cannot sign announcements (before issue 14)
        kw.pop("signing_key", None)
        return encode_announcement(art, action, **kw)


def _test_signing_key() -> str:
    from tests.artifacts import TEST_SIGNING_KEY

    return TEST_SIGNING_KEY


_KEY = _test_signing_key()


def relabel(value: bytes, **changes: object) -> bytes:
    """The same record with some envelope fields changed (its signatures kept)."""
    codec = Codec("model_update")
    rec = codec.decode(value)
    rec.update(changes)
    return codec.encode(rec, "avro")


def rejections(w: Worker) -> float:
    return sum(
        s.value for s in w.metrics._rejections.collect()[0].samples if s.name.endswith("_total")
    )


def wait_for(cond, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def test_a_worker_keeps_its_model_whatever_model_updates_receives(client, prefix) -> None:
    """Acceptance: replay of an older signed announcement, a signed record relabelled with
    another version, an unsigned record, a signed market artifact announced as fraud, and
    garbage bytes; every transaction is scored by the model accepted last."""
    make_topics(client, prefix, partitions=1)
    topic = prefix + T.MODEL_UPDATES
    v1 = announcement(signed(artifact("fraud", "1", seed=1)))
    produce_records(client, topic, [v1])
    cfg = worker_config(client, prefix, verify_key=TEST_VERIFY_KEY)
    with running(cfg) as w:
        assert w.slot.live.version == "1"
        time.sleep(0.01)  # the next announcement is issued later
        v2 = announcement(signed(artifact("fraud", "2", seed=2)))
        produce_records(client, topic, [v2])
        assert wait_for(lambda: w.slot.live.version == "2")
        market = announcement(signed(artifact("market", "5")))
        hostile = [
            v1,  # replay of an older signed announcement
            # relabelled with another version (and a later issue time: not merely stale)
            (v2[0], relabel(v2[1], version="7", announced_at=int(time.time() * 1000) + 60_000)),
            announcement(artifact("fraud", "3", seed=3), signing_key=None),  # unsigned
            (b"fraud", relabel(market[1], model_name="fraud")),  # another family
            (b"fraud", b"\x00\x01garbage\xff"),  # garbage
        ]
        produce_records(client, topic, hostile)
        assert wait_for(lambda: rejections(w) >= len(hostile)), rejections(w)
        txs = txs_for(prefix, 400)
        produce(client, iter(txs))
        flags = decode_all(
            consume_all(client, prefix + T.FRAUD_FLAGS, len(txs), settle=1), "fraud_flag"
        )
        assert w.health()["status"] == "ok"
        live = w.slot.live.version
    assert len(flags) == len(txs)
    assert {f["model_version"] for f in flags} == {"2"}
    assert live == "2"


def test_a_worker_without_a_registry_starts_on_the_last_verified_announcement(
    client, prefix
) -> None:
    """The newest announcement is refused (tampered bytes): the worker starts on the earlier
    verified one instead of exiting."""
    make_topics(client, prefix, partitions=1)
    good = announcement(signed(artifact("fraud", "1", seed=1)))
    v2 = signed(artifact("fraud", "2", seed=2))
    tampered = dataclasses.replace(v2, onnx=v2.onnx[:-1] + bytes([v2.onnx[-1] ^ 1]))
    time.sleep(0.01)
    produce_records(client, prefix + T.MODEL_UPDATES, [good, announcement(tampered)])
    cfg = worker_config(client, prefix, verify_key=TEST_VERIFY_KEY, registry_dir=None)
    with running(cfg) as w:
        assert w.slot.live.version == "1"
        txs = txs_for(prefix, 100)
        produce(client, iter(txs))
        flags = decode_all(consume_all(client, prefix + T.FRAUD_FLAGS, len(txs)), "fraud_flag")
    assert {f["model_version"] for f in flags} == {"1"}


def test_a_replayed_older_announcement_does_not_downgrade_a_starting_worker(client, prefix) -> None:
    make_topics(client, prefix, partitions=1)
    v1 = announcement(signed(artifact("fraud", "1", seed=1)))
    time.sleep(0.01)
    v2 = announcement(signed(artifact("fraud", "2", seed=2)))
    produce_records(client, prefix + T.MODEL_UPDATES, [v1, v2, v1])  # v1 replayed last
    with running(worker_config(client, prefix, verify_key=TEST_VERIFY_KEY)) as w:
        assert w.slot.live.version == "2"


def test_by_default_an_unsigned_model_is_refused(client, prefix) -> None:
    """No verify key and no opt-out: an unsigned model with threshold -1 and no reference
    inputs (it would flag every transaction) never goes live."""
    make_topics(client, prefix, partitions=1)
    bad = artifact("fraud", "1")
    bad = dataclasses.replace(
        bad,
        manifest=dataclasses.replace(
            bad.manifest, threshold=-1.0, reference_inputs=[], reference_outputs=[]
        ),
    )
    produce_records(client, prefix + T.MODEL_UPDATES, [announcement(bad, signing_key=None)])
    w = Worker(worker_config(client, prefix, verify_key=None, registry_dir=None))
    try:
        with pytest.raises(ModelUnavailable):
            w.load_initial_model()
        assert w.slot.live is None
    finally:
        w.watcher.close()


def test_the_opt_out_still_refuses_an_invalid_threshold_and_missing_references(
    client, prefix
) -> None:
    make_topics(client, prefix, partitions=1)
    bad = artifact("fraud", "1")
    no_refs = dataclasses.replace(
        bad, manifest=dataclasses.replace(bad.manifest, reference_inputs=[], reference_outputs=[])
    )
    bad_threshold = dataclasses.replace(
        bad, manifest=dataclasses.replace(bad.manifest, threshold=-1.0)
    )
    produce_records(
        client,
        prefix + T.MODEL_UPDATES,
        [announcement(no_refs, signing_key=None), announcement(bad_threshold, signing_key=None)],
    )
    try:
        cfg = worker_config(client, prefix, verify_key=None, registry_dir=None, allow_unsigned=True)
    except TypeError:  # no opt-out setting before issue 14: the default is "anyone"
        cfg = worker_config(client, prefix, verify_key=None, registry_dir=None)
    w = Worker(cfg)
    try:
        with pytest.raises(ModelUnavailable):
            w.load_initial_model()
    finally:
        w.watcher.close()

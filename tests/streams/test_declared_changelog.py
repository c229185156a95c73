"""A declared family's pipeline keeps its windows over the topic's key in a changelog (no
broker): each flush writes the entries added since the last one, in the partitions of their
keys; a fresh pipeline rebuilt from those records (and the labels) scores the next events as
an uninterrupted one does; revoked partitions' changes are never written; a reused id with
other content is a ``DuplicateId`` dead letter and never enters the state."""

from __future__ import annotations

import zlib

from finscore.families import FamilySpec
from finscore.features.timestore import record_keys
from finscore.streams.declared.pipeline import DUPLICATE, DUPLICATE_ERROR, DeclaredPipeline
from finscore.streams.hot_swap import ModelSlot
from tests.streams.test_declared_pipeline import (
    OUT,
    _labelled,
    admitted,
    chargebacks_of,
    family_artifact,
    messages,
    payment_codec,
    payment_events,
    pipeline,
    spec,  # noqa: F401  (fixture)
)


def _scores(pipe: DeclaredPipeline, msgs: list) -> dict[str, float]:
    result = pipe.process(msgs)
    assert not result.dead_letters
    return {OUT.decode(r.value)["id"]: OUT.decode(r.value)["score"] for r in result.outputs}


def test_a_pipeline_rebuilt_from_its_changelog_scores_as_an_uninterrupted_one(
    spec: FamilySpec,  # noqa: F811
) -> None:
    events = payment_events(1200, seed=3)
    labels = chargebacks_of(events)
    msgs = messages(events, payment_codec(), "card-payments")
    # A model of every feature but the merchant windows (not in the changelog: rebuilt from
    # the events read from then on, see finscore.families.engine).
    names = [n for n in spec.feature_names if n not in ("MERCHANT_NB_1D", "MERCHANT_AMOUNT_Z_7D")]
    slot = ModelSlot(admitted(family_artifact(spec, "2", feature_names=names), spec))
    whole = pipeline(spec, slot, changelog_topic="state")
    _labelled(whole, labels)
    records = []
    for a in range(0, 800, 200):
        _scores(whole, msgs[a : a + 200])
        records += whole.flush_state()
    assert records and {r.topic for r in records} == {"state"}
    for r in records:  # each in the partition its keys live in
        assert r.key == b"p%d" % r.partition
        assert {zlib.crc32(k.encode()) % 3 for k in record_keys(r.value)} == {r.partition}

    def rebuilt(records: list) -> DeclaredPipeline:
        fresh = pipeline(spec, slot, changelog_topic="state")
        fresh.features.add_changes([(r.key.decode(), r.value) for r in records])
        _labelled(fresh, labels)
        return fresh

    later = msgs[800:]
    want = _scores(whole, later)
    assert _scores(rebuilt(records), later) == want
    assert _scores(rebuilt([]), later) != want  # the customer windows matter


def test_revoked_partitions_changes_are_never_written(spec: FamilySpec) -> None:  # noqa: F811
    events = payment_events(300, seed=4)
    msgs = messages(events, payment_codec(), "card-payments")
    pipe = pipeline(spec, ModelSlot(admitted(family_artifact(spec), spec)), changelog_topic="s")
    _scores(pipe, msgs)
    pipe.forget_partitions({1})
    parts = {r.partition for r in pipe.flush_state()}
    assert parts == {0, 2}
    assert pipe.flush_state() == []


def test_no_changelog_topic_writes_nothing(spec: FamilySpec) -> None:  # noqa: F811
    events = payment_events(100, seed=4)
    pipe = pipeline(spec, ModelSlot(admitted(family_artifact(spec), spec)))
    _scores(pipe, messages(events, payment_codec(), "card-payments"))
    assert pipe.flush_state() == []


def test_a_reused_id_with_other_content_is_a_dead_letter(spec: FamilySpec) -> None:  # noqa: F811
    events = payment_events(200, seed=5)
    codec = payment_codec()
    pipe = pipeline(spec, ModelSlot(admitted(family_artifact(spec), spec)), changelog_topic="s")
    _scores(pipe, messages(events, codec, "card-payments"))
    pipe.flush_state()
    e = events[-1]
    replay = dict(e)
    moved = {**e, "event_time": e["event_time"] + 1}
    twice = [
        {**e, "payment_id": "fresh"},
        {**e, "payment_id": "fresh", "event_time": e["event_time"] - 7},
    ]
    result = pipe.process(messages([replay, moved, *twice], codec, "card-payments"))
    assert [OUT.decode(r.value)["id"] for r in result.outputs] == [e["payment_id"], "fresh"]
    assert [d.error_type for d in result.dead_letters] == [DUPLICATE_ERROR] * 2
    assert all(d.reason.startswith(f"{DUPLICATE}: payment_id ") for d in result.dead_letters)
    assert "customer_id" in result.dead_letters[0].reason
    assert [d.message.offset for d in result.dead_letters] == [1, 3]
    # the dead ones never entered the state: the next flush holds the fresh one only
    (record,) = pipe.flush_state()
    assert record_keys(record.value) == [e["customer_id"]]

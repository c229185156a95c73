"""The pure fraud pipeline on columns (no broker): mixed encodings keep their order and their
features, flags carry the right values, state is flushed per partition, and the
shadow/canary paths name their model."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from finscore.app.console.produce import transaction_events
from finscore.features.fraud import FRAUD_FEATURE_NAMES, FraudFeatures
from finscore.features.timestore import record_keys
from finscore.models.registry import ArtifactError
from finscore.schemas.codec import Codec
from finscore.streams.fraud.pipeline import FraudPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Challenger, Scorer, in_canary
from finscore.streams.transport import Message
from tests.artifacts import artifact

TX = Codec("transaction")
FLAG = Codec("fraud_flag")


def _transactions(n: int) -> list[dict]:
    out = []
    for _, _, schema, rec in transaction_events("", seed=5, days=30):
        if schema == "transaction":
            out.append(rec)
            if len(out) == n:
                return out
    return out


def _messages(records: list[dict], encodings: list[str]) -> list[Message]:
    """Messages keyed and partitioned (3 partitions) by customer, offsets 0, 1, ..."""
    return [
        Message("transactions", _part(r), i, r["customer_id"].encode(), TX.encode(r, enc), 1000 + i)
        for i, (r, enc) in enumerate(zip(records, encodings, strict=True))
    ]


def _part(rec: dict) -> int:
    return zlib.crc32(rec["customer_id"].encode()) % 3


def _pipeline(slot: ModelSlot | None = None) -> FraudPipeline:
    slot = slot or ModelSlot(Scorer(artifact("fraud", "3")))
    return FraudPipeline(FraudFeatures(), slot, "fraud-flags", changelog_topic="state",
                         clock=lambda: 2e9)  # fmt: skip


def test_a_model_on_an_older_feature_list_reads_its_own_columns() -> None:
    """Models name their features: one trained before features were added (or on any subset,
    in any order) scores on exactly those columns; one needing an unknown feature is refused."""
    older = list(reversed(FRAUD_FEATURE_NAMES[:19]))
    scorer = Scorer(artifact("fraud", "2", feature_names=older))
    scorer.smoke_test()
    txs = _transactions(300)
    pipe = _pipeline(ModelSlot(scorer))
    flags = [FLAG.decode(o.value) for o in pipe.process(_messages(txs, ["avro"] * 300)).outputs]
    x = FraudFeatures().transform(txs)
    want = scorer.score_batch(x[:, [FRAUD_FEATURE_NAMES.index(n) for n in older]])
    np.testing.assert_allclose([f["score"] for f in flags], want, rtol=1e-6)
    assert x.shape[1] > len(older)  # the worker computes more than this model reads
    with pytest.raises(ArtifactError) as err:
        Scorer(artifact("fraud", "3", feature_names=[*older, "NOT_A_FEATURE"]))
    assert err.value.reason == "unknown_features" and "NOT_A_FEATURE" in str(err.value)


def test_mixed_encodings_keep_input_order_and_give_the_same_flags() -> None:
    recs = _transactions(600)
    rng = np.random.default_rng(0)
    encodings = rng.choice(["avro", "json", "avro", "avro"], size=len(recs)).tolist()
    msgs = _messages(recs, encodings)
    msgs.insert(17, Message("transactions", 0, 10_000, b"k", b"\xc3\x01garbage", 1))
    mixed = _pipeline().process(msgs)
    plain = _pipeline().process(_messages(recs, ["avro"] * len(recs)))
    assert [d.message.offset for d in mixed.dead_letters] == [10_000]
    got = [FLAG.decode(r.value) for r in mixed.outputs]
    want = [FLAG.decode(r.value) for r in plain.outputs]
    assert [g["transaction_id"] for g in got] == [r["transaction_id"] for r in recs]
    for g, w in zip(got, want, strict=True):
        assert g["score"] == w["score"] and g["source_offset"] == w["source_offset"]
    assert [r.timestamp_ms for r in plain.outputs] == [1000 + i for i in range(len(recs))]


def test_flags_carry_score_decision_model_and_input_location() -> None:
    recs = _transactions(50)
    out = _pipeline().process(_messages(recs, ["avro"] * 50))
    flags = [FLAG.decode(r.value) for r in out.outputs]
    for i, (f, r, rec) in enumerate(zip(flags, out.outputs, recs, strict=True)):
        part = _part(rec)
        assert f["transaction_id"] == rec["transaction_id"] and f["event_time"] == rec["event_time"]
        assert (f["model_name"], f["model_version"], f["threshold"]) == ("fraud", "3", 0.5)
        assert f["flagged"] == (f["score"] >= 0.5) and 0 <= f["score"] <= 1
        assert (f["source_topic"], f["source_partition"], f["source_offset"]) == (
            "transactions", part, i)  # fmt: skip
        assert f["processing_time"] == 2_000_000_000_000 and r.key == rec["customer_id"].encode()


def test_state_is_flushed_in_one_record_per_partition_and_forgotten_on_revoke() -> None:
    recs = _transactions(400)
    p = _pipeline()
    p.process(_messages(recs[:200], ["avro"] * 200))
    p.process(_messages(recs[200:], ["avro"] * 200))
    p.forget_partitions({2})
    state = p.flush_state()
    msgs = _messages(recs, ["avro"] * 400)
    assert sorted(r.partition for r in state) == [0, 1]  # partition 2 was revoked
    for r in state:
        want = {m.key.decode() for m in msgs if m.partition == r.partition}
        assert sorted(record_keys(r.value)) == sorted(want) and r.topic == "state"
    assert p.flush_state() == []  # nothing changed since


def test_the_append_only_changelog_rebuilds_state_that_continues_exactly() -> None:
    """Records of several flushes (in any order, some twice) rebuild the customers' windows:
    the next transactions get the features an uninterrupted pipeline gives them."""
    recs = _transactions(1500)
    msgs = _messages(recs, ["avro"] * 1500)
    whole, first = _pipeline(), _pipeline()
    want = [r.value for r in whole.process(msgs).outputs][1000:]
    records = []
    for a in range(0, 1000, 250):
        first.process(msgs[a : a + 250])
        records += first.flush_state()
    seen = [k for r in records for k in record_keys(r.value)]
    assert len(seen) > len(set(seen))  # customers appear in several flushes
    shuffled = records[::-1] + records[:50]
    rebuilt = _pipeline()
    rebuilt.features.add_changes([(r.key.decode(), r.value) for r in shuffled])
    assert sorted(rebuilt.features.customers()) == sorted(first.features.customers())
    assert [r.value for r in rebuilt.process(msgs[1000:]).outputs] == want


def test_shadow_and_canary_outputs_name_the_model_that_scored_them() -> None:
    recs = _transactions(300)
    msgs = _messages(recs, ["avro"] * 300)
    live, ch = Scorer(artifact("fraud", "1")), Scorer(artifact("fraud", "2", seed=9))
    slot = ModelSlot(live)
    slot.stage_challenger(Challenger(ch, "shadow"))
    slot.swap_if_staged()
    out = _pipeline(slot).process(msgs)
    shadow = [FLAG.decode(r.value) for r in out.outputs if r.topic == "fraud-flags-shadow"]
    main = [FLAG.decode(r.value) for r in out.outputs if r.topic == "fraud-flags"]
    assert len(shadow) == len(main) == 300
    assert {f["model_version"] for f in shadow} == {"2"} and {f["model_version"] for f in main} == {
        "1"
    }
    slot.stage_challenger(Challenger(ch, "canary", 0.3))
    slot.swap_if_staged()
    out = _pipeline(slot).process(msgs)
    flags = [FLAG.decode(r.value) for r in out.outputs]
    assert len(flags) == 300
    for m, f in zip(msgs, flags, strict=True):
        assert f["model_version"] == ("2" if in_canary(m.key, 0.3) else "1")
    assert {f["model_version"] for f in flags} == {"1", "2"}


def test_small_and_large_batches_give_byte_identical_flags() -> None:
    """Few records per poll take the per-record decoder and row templates, many the columnar
    codec: same bytes."""
    recs = _transactions(1200)
    msgs = _messages(recs, ["avro"] * 1200)
    small, large = _pipeline(), _pipeline()
    got = [r.value for i in range(0, 1200, 7) for r in small.process(msgs[i : i + 7]).outputs]
    want = [r.value for r in large.process(msgs).outputs]
    assert got == want


def test_explain_names_the_features_furthest_from_the_training_mean() -> None:
    """``explain=k``: each flag carries the k features whose z-score against the manifest's
    training mean/std is largest, named (the worker's full row when the model names none)."""
    import dataclasses

    art = artifact("fraud", "1")
    n = len(FRAUD_FEATURE_NAMES)
    mean, std = [0.0] * n, [1.0] * n
    art = dataclasses.replace(art, manifest=dataclasses.replace(
        art.manifest, params={**art.manifest.params, "feature_mean": mean, "feature_std": std}))  # fmt: skip
    txs = _transactions(120)
    pipe = FraudPipeline(FraudFeatures(), ModelSlot(Scorer(art)), "fraud-flags", explain=2,
                         clock=lambda: 2e9)  # fmt: skip
    flags = [FLAG.decode(o.value) for o in pipe.process(_messages(txs, ["avro"] * 120)).outputs]
    x = FraudFeatures().transform(txs)
    for f, row in zip(flags, x, strict=True):
        want = [FRAUD_FEATURE_NAMES[j] for j in np.argsort(-np.abs(row), kind="stable")[:2]]
        got = [t["feature"] for t in f["top_features"]]
        assert len(got) == 2 and abs(row[FRAUD_FEATURE_NAMES.index(got[0])]) == abs(row).max()
        assert {abs(float(t["contribution"])) for t in f["top_features"]} <= {
            abs(float(row[FRAUD_FEATURE_NAMES.index(w)])) for w in [*want, *got]
        }

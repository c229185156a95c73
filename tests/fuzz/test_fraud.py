"""Fuzz: the fraud worker's pure core (transactions, labels, changelog restore) on generated and
mutated records, with a real ONNX model.

Properties: nothing escapes ``process``; every input is accounted for exactly once (an output
or a dead letter with a reason); every record emitted fits a default Kafka message; and records
that must be refused (far-past/far-future times, negative amounts, empty ids, undecodable bytes)
change nothing: the other records score exactly as they would without them, in the same batch,
in later batches, and after a restore from a changelog that holds such a record.
"""

from __future__ import annotations

import inspect
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from finscore.features.fraud import FraudFeatures
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.streams.fraud.columns import columns_from_records
from finscore.streams.fraud.pipeline import FraudPipeline, LabelsPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import BatchResult, DeadLetterEncoder
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact
from tests.fuzz import strategies as S

TX = Codec("transaction")
LABEL = Codec("fraud_label")
SCORER = Scorer(artifact("fraud", "3"))
FLAGS = "fraud-flags"
KAFKA_DEFAULT_MAX = 1_000_000  # a record (key + value) above this does not fit a default topic


def _clock() -> float:
    return S.NOW_MS / 1000


def _pipeline(features: FraudFeatures | None = None) -> FraudPipeline:
    return FraudPipeline(features or FraudFeatures(), ModelSlot(SCORER), FLAGS,
                         changelog_topic="state", clock=_clock)  # fmt: skip


def _labels(features: FraudFeatures) -> LabelsPipeline:
    """The labels pipeline on the same clock (when it takes one)."""
    if "clock" in inspect.signature(LabelsPipeline).parameters:
        return LabelsPipeline(features, clock=_clock)  # type: ignore[call-arg]
    return LabelsPipeline(features)


def _tx_messages(records: list[dict], first_offset: int = 0) -> list[Message]:
    return S.messages("transactions", [TX.encode(r) for r in records], first_offset)


def _accounted(msgs: list[Message], res: BatchResult, topic: str = FLAGS) -> None:
    """Every input exactly once: an output (matched by its input's timestamp) or a dead letter
    with an error type and a reason."""
    seen = [o.timestamp_ms for o in res.outputs if o.topic == topic]
    for d in res.dead_letters:
        assert d.error_type and d.reason, d
        seen.append(d.message.timestamp_ms)
    assert sorted(seen) == sorted(m.timestamp_ms for m in msgs)


def _fits(res: BatchResult) -> None:
    """Every record the batch would produce (outputs, dead letters, changelog) fits."""
    enc = DeadLetterEncoder("fuzz")
    for o in [*res.outputs, *res.state, *(enc.encode(d, S.NOW_MS) for d in res.dead_letters)]:
        size = len(o.key or b"") + len(o.value or b"")
        assert size <= KAFKA_DEFAULT_MAX, f"{o.topic}: {size} bytes"


def _by_input(res: BatchResult) -> dict[int, bytes | None]:
    return {o.timestamp_ms: o.value for o in res.outputs if o.topic == FLAGS}


# -- what may arrive ------------------------------------------------------------------------
TX_VALUES = S.any_value("transaction", S.extreme_transactions())
LABEL_VALUES = S.any_value("fraud_label", S.extreme_labels())


@st.composite
def _poison_tx(draw: st.DrawFn) -> bytes | None:
    """A transaction every validation must refuse, on a real customer and terminal."""
    rec = dict(draw(st.sampled_from(S.sim_transactions(120))))
    kind = draw(st.sampled_from(["time", "amount", "empty", "bytes", "none"]))
    if kind == "time":
        rec["event_time"] = draw(st.sampled_from(S.POISON_MS))
    elif kind == "amount":
        rec["amount"] = draw(st.sampled_from([Decimal("-0.01"), Decimal("-99999")]))
    elif kind == "empty":
        rec[draw(st.sampled_from(["customer_id", "terminal_id", "transaction_id"]))] = ""
    elif kind == "bytes":
        value = draw(st.one_of(S.garbage(), S.mutated("transaction")))
        try:
            TX.decode(value)
        except DecodeError:
            return value
        return b"\xc3\x01not-a-record"
    else:
        return None
    return TX.encode(rec)


@st.composite
def _poison_label(draw: st.DrawFn) -> bytes | None:
    """A label every validation must refuse, on a real terminal."""
    rec = dict(draw(st.sampled_from(S.sim_labels())))
    kind = draw(st.sampled_from(["time", "amount", "empty", "bytes", "none"]))
    if kind == "time":
        rec[draw(st.sampled_from(["tx_time", "label_time"]))] = draw(st.sampled_from(S.POISON_MS))
    elif kind == "amount":
        rec["amount"] = draw(st.sampled_from([Decimal("-0.01"), Decimal("-99999")]))
    elif kind == "empty":
        rec[draw(st.sampled_from(["customer_id", "terminal_id", "transaction_id"]))] = ""
    elif kind == "bytes":
        return draw(S.garbage().filter(lambda b: b[:2] != b"{}"))
    else:
        return None
    return LABEL.encode(rec)


def _insert(good: list[Message], poison: list[bytes | None], at: list[int]) -> list[Message]:
    """``good`` with the poison values inserted at positions ``at`` (offsets 100_000+)."""
    out = list(good)
    for k, value in enumerate(poison):
        out.insert(at[k % len(at)] % (len(out) + 1) if at else 0,
                   S.messages(good[0].topic, [value], 100_000 + k)[0])  # fmt: skip
    return out


def _tx(**change: object) -> bytes:
    return TX.encode(dict(S.sim_transactions()[3], **change))


def _label(**change: object) -> bytes:
    return LABEL.encode(dict(S.sim_labels()[3], **change))


POSITIONS = st.lists(st.integers(0, 10**6), max_size=3)


# -- properties -----------------------------------------------------------------------------
@given(values=st.lists(TX_VALUES, max_size=30), good=st.integers(0, 80))
def test_every_transaction_is_scored_or_dead_lettered_once(
    values: list[bytes | None], good: int
) -> None:
    """Any mix of records (extreme, JSON junk, mutated, garbage, tombstones) with some valid ones
    (enough for the columnar path): process returns, each input is accounted for once, every
    record produced fits, and the state keeps scoring ordinary traffic afterwards."""
    txs = list(S.sim_transactions(200))
    mixed = values + [TX.encode(r) for r in txs[:good]]
    pipe = _pipeline()
    msgs = S.messages("transactions", mixed)
    res = pipe.process(msgs)
    _accounted(msgs, res)
    _fits(res)
    res.state = pipe.flush_state()
    _fits(res)
    later = _tx_messages(txs[good : good + 20], 50_000)
    _accounted(later, pipe.process(later))


@given(poison=st.lists(_poison_tx(), min_size=1, max_size=3), at=POSITIONS)
@example(poison=[_tx(event_time=0)], at=[0])  # observation 2 (1970), within the first batch
def test_a_bad_transaction_does_not_change_the_scores_of_its_batch(
    poison: list[bytes | None], at: list[int]
) -> None:
    """Refused records in a batch are dead letters, and every other record's flag is
    byte-identical to the flag it gets in the same batch without them."""
    good = _tx_messages(list(S.sim_transactions(120)))
    mixed = _insert(good, poison, at)
    clean, dirty = _pipeline().process(good), _pipeline().process(mixed)
    assert {d.message.offset for d in dirty.dead_letters} == {
        m.offset for m in mixed if m.offset >= 100_000
    }
    assert _by_input(dirty) == _by_input(clean)


@given(poison=st.lists(_poison_tx(), min_size=1, max_size=3))
@example(poison=[_tx(event_time=0)])  # observation 2: a fresh worker's first event is in 1970
def test_a_bad_first_transaction_does_not_poison_later_ones(poison: list[bytes | None]) -> None:
    """A fresh worker whose first records are refused ones (e.g. one dated 1970) scores every
    later transaction exactly as a worker that never saw them."""
    txs = list(S.sim_transactions(150))
    first = S.messages("transactions", poison, 100_000)
    pipe = _pipeline()
    first_res = pipe.process(first)
    assert len(first_res.dead_letters) == len(first) and not first_res.outputs
    later = _tx_messages(txs)
    assert _by_input(pipe.process(later)) == _by_input(_pipeline().process(later))


@given(values=st.lists(LABEL_VALUES, max_size=30), good=st.integers(0, 80))
@example(values=[_label(tx_time=S.FAR_MS[5], label_time=S.FAR_MS[5])], good=3)  # observation 1
def test_every_label_is_applied_or_dead_lettered_once(
    values: list[bytes | None], good: int
) -> None:
    """Any mix of labels: process returns, and applied + dead letters = inputs."""
    labels = [LABEL.encode(r) for r in S.sim_labels()[:good]]
    msgs = S.messages("fraud-labels", values + labels)
    res = _labels(FraudFeatures()).process(msgs)
    for d in res.dead_letters:
        assert d.error_type and d.reason
    assert res.scored + len(res.dead_letters) == len(msgs)
    assert len({d.message.offset for d in res.dead_letters}) == len(res.dead_letters)


def _label_of(tx: dict, fraud: bool) -> dict:
    return {"transaction_id": tx["transaction_id"], "customer_id": tx["customer_id"],
            "terminal_id": tx["terminal_id"], "tx_time": tx["event_time"],
            "label_time": tx["event_time"] + 60_000, "is_fraud": fraud, "amount": tx["amount"],
            "scenario": 2 if fraud else None}  # fmt: skip


@given(poison=st.lists(_poison_label(), min_size=1, max_size=3), at=POSITIONS)
@example(poison=[_label(amount=Decimal("-99999"))], at=[7])  # observation 1: accepted
def test_a_bad_label_does_not_change_any_score(poison: list[bytes | None], at: list[int]) -> None:
    """Labels the validation must refuse (dated 2200 or 1970, negative amounts, empty ids,
    garbage), mixed into real labels, are dead letters at once and change no later score."""
    txs = list(S.sim_transactions(300))
    real = [LABEL.encode(_label_of(t, i % 5 == 0)) for i, t in enumerate(txs[:150])]
    good = S.messages("fraud-labels", real)
    mixed = _insert(good, poison, at)
    scored = []
    for labels in (good, mixed):
        features = FraudFeatures()
        res = _labels(features).process(labels)
        if labels is mixed:
            dead = {d.message.offset for d in res.dead_letters}
            assert dead == {m.offset for m in mixed if m.offset >= 100_000}
        scored.append(_by_input(_pipeline(features).process(_tx_messages(txs[150:]))))
    assert scored[0] == scored[1]


def _changes_of(records: list[dict]) -> list[tuple[str, bytes]]:
    ff = FraudFeatures()
    cols = columns_from_records([None] * len(records), records)  # type: ignore[list-item]
    ff.transform_columns(
        cols.transaction_id, cols.event_time, cols.customer_id, cols.terminal_id, cols.cents
    )
    return [(f"p{p}", v) for p, v in ff.take_changes({c: 0 for c in cols.customer_id})]


@given(when=st.sampled_from(S.POISON_MS), victim=st.integers(0, 99), at=st.integers(0, 10**6))
@example(when=0, victim=0, at=0)  # observation 2: the changelog carries a 1970 entry
def test_a_changelog_record_from_another_era_does_not_poison_the_restore(
    when: int, victim: int, at: int
) -> None:
    """A changelog holding an entry dated far away (written by an older, poisoned worker, or by
    anyone who can write the topic) does not stop the restored worker from scoring: every
    later transaction scores as it does after a clean restore."""
    txs = list(S.sim_transactions(200))
    good = _changes_of(txs[:100])
    ((key, record),) = _changes_of([txs[victim]])  # one key, one row: (index, time, tag, values...)
    width = 8 * (3 + len(FraudFeatures()._spend.value_names))
    at_time = len(record) - width + 8
    bad = [
        (key, record[:at_time] + when.to_bytes(8, "little", signed=True) + record[at_time + 8 :])
    ]
    at %= len(good) + 1
    later = _tx_messages(txs[100:])
    results = []
    for records in (good, good[:at] + bad + good[at:]):
        features = FraudFeatures()
        features.add_changes(records)
        results.append(_by_input(_pipeline(features).process(later)))
    assert results[1] == results[0]


@given(size=st.integers(900_000, 1_000_000), field=st.sampled_from(["transaction_id",
       "customer_id", "terminal_id"]), bad=st.booleans())  # fmt: skip
@example(size=990_000, field="transaction_id", bad=False)  # observation 3 (scored)
@example(size=990_000, field="customer_id", bad=True)  # observation 3 (dead-lettered)
def test_a_near_megabyte_transaction_fits_wherever_it_goes(
    size: int, field: str, bad: bool
) -> None:
    """A ~1 MB transaction (under the producer's limit) becomes a flag or a dead letter that
    still fits a default topic, and its key cannot make it too large either."""
    rec = dict(S.sim_transactions()[0], **{field: "x" * size})
    if bad:
        rec["amount"] = Decimal("-1.00")
    value = TX.encode(rec)
    msg = Message("transactions", 0, 0, rec["customer_id"].encode(), value, 1_000_000)
    res = _pipeline().process([msg])
    _accounted([msg], res)
    _fits(res)

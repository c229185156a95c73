"""Fuzz: the market worker's pure core on generated and mutated ticks, with a real ONNX model.

Properties: nothing escapes ``process``; each input becomes at most one signal or dead letter
(a tick that only fills a window, or repeats a sequence, produces neither), dead letters carry a
reason; ticks that must be refused change no signal of the others.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from finscore.features.market_windows import MarketWindows
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import DecodeError
from finscore.streams.bounds import DEFAULT_MIN_EVENT_TIME_MS
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.pipeline import MarketPipeline
from finscore.streams.pipeline import BatchResult
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact
from tests.fuzz import strategies as S

WINDOW = 5
TICKS = Codec("market_tick")
SCORER = Scorer(artifact("market", "3", window=WINDOW))
SIGNALS = "price-signals"
NOW_S = S.sim_ticks()[-1]["event_time"] / 1e6 + 60  # the clock: a minute after the last tick


# Times no bound may accept *for this stream* (the ticks' clock is NOW_S, not the transactions'):
# before 2000, or more than the allowed skew after the clock.
_NOW_MS = int(NOW_S * 1000)
_POISON_TICK_MS = tuple(
    t for t in S.POISON_MS if t < DEFAULT_MIN_EVENT_TIME_MS or t > _NOW_MS + 3_600_000
) + (_NOW_MS + 400 * 86_400_000,)


def _pipeline() -> MarketPipeline:
    return MarketPipeline(MarketWindows(WINDOW), ModelSlot(SCORER), SIGNALS,
                          changelog_topic="cl", clock=lambda: NOW_S)  # fmt: skip


def _signals(res: BatchResult) -> dict[int, bytes | None]:
    return {o.timestamp_ms: o.value for o in res.outputs if o.topic == SIGNALS}


def _run(pipe: MarketPipeline, msgs: list[Message], batch: int) -> BatchResult:
    out = BatchResult()
    for i in range(0, len(msgs), batch):
        res = pipe.process(msgs[i : i + batch])
        out.outputs += res.outputs
        out.dead_letters += res.dead_letters
        out.state += res.state
    return out


def _tick(**change: object) -> bytes:
    return TICKS.encode(dict(S.sim_ticks()[40], **change))


@given(
    values=st.lists(S.any_value("market_tick", S.extreme_ticks()), max_size=40),
    good=st.integers(0, 60),
    batch=st.sampled_from([7, 100]),
)
def test_every_tick_is_at_most_one_signal_or_dead_letter(
    values: list[bytes | None], good: int, batch: int
) -> None:
    """Any mix of ticks (NaN/inf/negative prices and sizes, 0-15 levels, any times and
    sequences, JSON junk, mutations, garbage, tombstones) with valid ones, record by record or
    columnar: process returns; no input is both or twice; dead letters say why."""
    mixed = values + [TICKS.encode(t) for t in S.sim_ticks()[:good]]
    msgs = S.messages("market-ticks", mixed)
    res = _run(_pipeline(), msgs, batch)
    seen = [o.timestamp_ms for o in res.outputs if o.topic == SIGNALS]
    for d in res.dead_letters:
        assert d.error_type and d.reason
        seen.append(d.message.timestamp_ms)
    assert len(seen) == len(set(seen)) and set(seen) <= {m.timestamp_ms for m in msgs}


@st.composite
def _poison_tick(draw: st.DrawFn) -> bytes | None:
    """A tick every validation must refuse, on a real instrument."""
    rec = dict(draw(st.sampled_from(S.sim_ticks(150))))
    rec["sequence"] = draw(st.sampled_from([rec["sequence"], 2**62, 10**6]))
    kind = draw(st.sampled_from(["time", "crossed", "nan", "size", "empty", "levels", "bytes"]))
    bids, asks = list(rec["bids"]), list(rec["asks"])
    if kind == "time":
        rec["event_time"] = draw(st.sampled_from(_POISON_TICK_MS)) * 1000
        if abs(rec["event_time"]) >= 2**63:
            rec["event_time"] = draw(st.sampled_from([0, -1, 2**63 - 1, -(2**63)]))
    elif kind == "crossed":
        bids[0] = {"price": asks[0]["price"] + 1.0, "size": 1}
    elif kind == "nan":
        bids[0] = {"price": draw(st.sampled_from([float("nan"), float("inf"), -1.0, 0.0])),
                   "size": 1}  # fmt: skip
    elif kind == "size":
        asks[-1] = {"price": asks[-1]["price"], "size": -5}
    elif kind == "empty":
        bids = []
    elif kind == "levels":
        asks = asks + [{"price": asks[-1]["price"] + k, "size": 1} for k in range(1, 11)]
    else:
        value = draw(st.one_of(S.garbage(), S.mutated("market_tick")))
        try:
            TICKS.decode(value)
        except DecodeError:
            return value
        return None
    return TICKS.encode(dict(rec, bids=bids, asks=asks))


@given(
    poison=st.lists(_poison_tick(), min_size=1, max_size=3),
    at=st.lists(st.integers(0, 10**6), max_size=3),
    batch=st.sampled_from([9, 200]),
)
@example(poison=[_tick(event_time=0, sequence=2**62)], at=[0], batch=200)  # 1970
def test_a_bad_tick_changes_no_signal(
    poison: list[bytes | None], at: list[int], batch: int
) -> None:
    """Refused ticks (far times, crossed, NaN/inf/negative prices, negative sizes, empty sides,
    over 10 levels, garbage), even with a sequence far ahead, are dead letters, and every other
    tick's signal is byte-identical to its signal without them."""
    good = S.messages("market-ticks", [TICKS.encode(t) for t in S.sim_ticks(150)])
    mixed = list(good)
    for k, value in enumerate(poison):
        mixed.insert(at[k % len(at)] % (len(mixed) + 1) if at else 0,
                     S.messages("market-ticks", [value], 100_000 + k)[0])  # fmt: skip
    clean, dirty = _run(_pipeline(), good, batch), _run(_pipeline(), mixed, batch)
    dead = {d.message.offset for d in dirty.dead_letters}
    assert dead == {m.offset for m in mixed if m.offset >= 100_000}
    assert _signals(dirty) == _signals(clean)


@given(jump=st.sampled_from([10**6, 2**40, 2**62, 2**63 - 1]), at=st.integers(0, 80))
@example(jump=2**63 - 1, at=10)
def test_a_sequence_far_ahead_does_not_silence_an_instrument(jump: int, at: int) -> None:
    """A well-formed tick whose sequence jumps far ahead (sequences increase by one) must not
    make every later tick of its instrument a "replay": later ticks are still scored."""
    ticks = list(S.sim_ticks(150))
    good = S.messages("market-ticks", [TICKS.encode(t) for t in ticks])
    victim = dict(ticks[at], sequence=min(ticks[at]["sequence"] + jump, 2**63 - 1))
    mixed = list(good)
    mixed.insert(at + 1, S.messages("market-ticks", [TICKS.encode(victim)], 100_000)[0])
    clean, dirty = _run(_pipeline(), good, 50), _run(_pipeline(), mixed, 50)
    later = {
        m.timestamp_ms
        for m, t in zip(good[at + 1 :], ticks[at + 1 :], strict=True)
        if t["instrument"] == victim["instrument"]
    }
    lost = later & (set(_signals(clean)) - set(_signals(dirty)))
    assert not lost, f"{len(lost)} later {victim['instrument']} ticks got no signal"

"""The columnar market pipeline (pure, no broker; real ONNX sessions) keeps the record semantics:
signals equal the offline windows scored by the model, the dead letters and their reasons are
validate_tick's and Codec.decode's, replays are skipped, snapshots restore identical windows."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from finscore.features.market import book_array, make_windows, rows_from_book_array
from finscore.features.market_windows import MarketWindows
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.sim.market import MarketSimConfig, MarketSimulator
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.columns import decode_ticks, impossible_ticks
from finscore.streams.market.pipeline import MarketPipeline, validate_tick
from finscore.streams.scoring import Challenger, Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact

WINDOW = 20
NOW_S = 1.9e9  # far after the simulated ticks
TICKS = Codec("market_tick")
SIGNALS = Codec("price_signal")


def sim_ticks(n: int, seed: int = 4) -> list[dict]:
    cfg = MarketSimConfig(seed=seed, instruments=("SIMA", "SIMB", "SIMC"))
    return list(itertools.islice(MarketSimulator(cfg).ticks(), n))


def messages(records: list[dict], encodings: list[str] | None = None) -> list[Message]:
    out = []
    for i, r in enumerate(records):
        enc = encodings[i] if encodings else "avro"
        value = TICKS.encode(r, enc)
        out.append(Message("market-ticks", i % 3, 1000 + i, r["instrument"].encode(), value, 7 + i))
    return out


def pipeline(window: int = WINDOW, slot: ModelSlot | None = None) -> MarketPipeline:
    slot = slot or ModelSlot(Scorer(artifact("market", "3", window=window)))
    return MarketPipeline(
        MarketWindows(window), slot, "price-signals", changelog_topic="cl", clock=lambda: NOW_S
    )


def run(pipe: MarketPipeline, msgs: list[Message], batch: int = 97):
    outs, dead = [], []
    for i in range(0, len(msgs), batch):
        res = pipe.process(msgs[i : i + batch])
        outs += res.outputs
        dead += res.dead_letters
    return outs, dead


@pytest.mark.parametrize("batch", [5, 97, 1500])  # record by record (<= 32), columnar
def test_signals_are_the_offline_windows_scored_in_input_order(batch: int) -> None:
    records = sim_ticks(1500)
    pipe = pipeline()
    outs, dead = run(pipe, messages(records), batch)
    assert dead == []
    signals = [SIGNALS.decode(o.value) for o in outs]
    scorer = pipe.slot.live
    assert scorer is not None
    for inst in ("SIMA", "SIMB", "SIMC"):
        mine = [r for r in records if r["instrument"] == inst]
        rows = rows_from_book_array(book_array(mine))
        x, _ = make_windows(rows, np.zeros(len(mine), np.int8), window=WINDOW)
        want = scorer.score_batch(x)
        got = [s for s in signals if s["instrument"] == inst]
        assert [s["sequence"] for s in got] == [r["sequence"] for r in mine[WINDOW - 1 :]]
        probs = np.array([[s["prob_down"], s["prob_flat"], s["prob_up"]] for s in got])
        np.testing.assert_allclose(probs, want.astype(np.float64), rtol=1e-6)
        mids = [(r["bids"][0]["price"] + r["asks"][0]["price"]) / 2 for r in mine[WINDOW - 1 :]]
        assert [s["mid_price"] for s in got] == mids
    offsets = [s["source_offset"] for s in signals]
    assert offsets == sorted(offsets)  # input order across instruments
    by_offset = {1000 + i: r for i, r in enumerate(records)}
    for s, o in zip(signals, outs, strict=True):
        r = by_offset[s["source_offset"]]
        assert (s["event_time"], s["horizon"], s["model_version"]) == (r["event_time"], 10, "3")
        assert (
            s["signal"]
            == ("DOWN", "FLAT", "UP")[
                int(np.argmax([s["prob_down"], s["prob_flat"], s["prob_up"]]))
            ]
        )
        assert o.key == r["instrument"].encode() and o.timestamp_ms == 7 + s["source_offset"] - 1000


@pytest.mark.parametrize("batch", [9, 97])
def test_json_and_avro_ticks_interleaved_give_the_same_signals(batch: int) -> None:
    records = sim_ticks(400)
    rng = np.random.default_rng(0)
    encodings = ["json" if k else "avro" for k in rng.random(len(records)) < 0.3]
    a, _ = run(pipeline(), messages(records), batch)
    b, dead = run(pipeline(), messages(records, encodings), batch)
    assert dead == []
    assert [o.value for o in a] == [o.value for o in b]
    assert [SIGNALS.decode(o.value) for o in a] == [SIGNALS.decode(o.value) for o in b]


def _bad_ticks(good: dict) -> list[dict]:
    def with_(**kw):
        return dict(good, **kw)

    lv = good["bids"][0]
    return [
        with_(bids=[]),
        with_(asks=[]),
        with_(bids=good["bids"] + [lv]),
        with_(bids=[dict(lv, price=float("nan"))] + good["bids"][1:]),
        with_(asks=good["asks"][:3] + [dict(lv, price=0.0)]),
        with_(asks=good["asks"][:2] + [dict(lv, price=-1.5)]),
        with_(bids=good["bids"][:5] + [dict(lv, size=-3)]),
        with_(bids=[dict(lv, price=good["asks"][0]["price"])]),
        with_(bids=[dict(lv, price=good["asks"][0]["price"] + 1)] + good["bids"][1:]),
        with_(event_time=int(NOW_S * 1e6) + 3_600_000_001),
        with_(bids=good["bids"][:1], asks=good["asks"][:1]),  # fine: one level each
        with_(event_time=int(NOW_S * 1e6) + 3_600_000_000),  # fine: exactly 1 h ahead
    ]


def test_impossible_ticks_give_validate_ticks_reasons() -> None:
    good = sim_ticks(1)[0]
    bad = _bad_ticks(good)
    msgs = messages([good, *bad, good])
    ticks, dead = decode_ticks(ColumnarCodec("market_tick"), TICKS, msgs)
    assert dead == []
    rows, reasons = impossible_ticks(ticks, int(NOW_S * 1e6))
    want = [(i, validate_tick(r, int(NOW_S * 1e6))) for i, r in enumerate([good, *bad, good])]
    assert list(zip(rows.tolist(), reasons, strict=True)) == [(i, w) for i, w in want if w]
    assert len(reasons) == len(bad) - 2


def test_dead_letters_keep_the_original_bytes_and_codec_reasons() -> None:
    records = sim_ticks(60)
    msgs = messages(records)
    good = records[5]
    broken = [
        Message("market-ticks", 0, 1, b"k", None),
        Message("market-ticks", 0, 2, b"k", msgs[0].value[:-3]),
        Message("market-ticks", 0, 3, b"k", b'{"instrument": 5}'),
        Message("market-ticks", 0, 4, b"k", msgs[0].value + b"\x00"),
        Message("market-ticks", 0, 5, b"k", TICKS.encode(dict(good, asks=[]))),
    ]
    batch = msgs[:30] + broken + msgs[30:]
    res = pipeline().process(batch)
    small = pipeline().process(msgs[28:30] + broken)  # record by record
    assert [(d.message, d.error_type, d.reason) for d in small.dead_letters] == [
        (d.message, d.error_type, d.reason) for d in res.dead_letters
    ]
    assert [d.message for d in res.dead_letters] == broken
    assert [d.error_type for d in res.dead_letters] == ["EmptyValue"] + ["DecodeError"] * 3 + [
        "ImpossibleValue"
    ]
    for d in res.dead_letters[1:4]:
        with pytest.raises(Exception) as err:
            TICKS.decode(
                d.message.value, topic="market-ticks", partition=0, offset=d.message.offset
            )
        assert d.reason == str(err.value)
    assert res.dead_letters[4].reason == "empty book side"


def test_replays_are_skipped_and_snapshots_restore_identical_windows() -> None:
    records = sim_ticks(900)
    msgs = messages(records)
    whole, _ = run(pipeline(), msgs)
    first = pipeline()
    part, _ = run(first, msgs[:500])
    again, _ = run(first, msgs[400:500])  # a replay after a restart without commit
    assert again == [] and first.windows.duplicates == 100
    res = first.process(msgs[500:501])
    restored = pipeline()
    for rec in res.state:
        restored.windows.restore(rec.key.decode(), rec.value)
    for inst in ("SIMA", "SIMB", "SIMC"):  # every instrument: those res.state missed too
        restored.windows.restore(inst, first.windows.snapshot(inst))
        assert restored.windows.snapshot(inst) == first.windows.snapshot(inst)
    rest, _ = run(restored, msgs[501:])
    # ONNX Runtime may round a batch of one differently from a bigger one (GEMV vs GEMM), so
    # probabilities are compared to float32 precision and everything else exactly.
    got = [SIGNALS.decode(o.value) for o in part + res.outputs + rest]
    want = [SIGNALS.decode(o.value) for o in whole]
    probs = ("prob_down", "prob_flat", "prob_up")
    assert [{k: v for k, v in g.items() if k not in probs} for g in got] == [
        {k: v for k, v in w.items() if k not in probs} for w in want
    ]
    np.testing.assert_allclose(
        [[g[k] for k in probs] for g in got], [[w[k] for k in probs] for w in want], rtol=1e-6
    )


def test_shadow_signals_come_before_each_live_one() -> None:
    slot = ModelSlot(Scorer(artifact("market", "3", window=WINDOW)))
    slot.stage_challenger(
        Challenger(Scorer(artifact("market", "4", seed=1, window=WINDOW)), "shadow")
    )
    slot.swap_if_staged()
    outs, _ = run(pipeline(slot=slot), messages(sim_ticks(200)))
    topics = [o.topic for o in outs]
    assert topics == ["price-signals-shadow", "price-signals"] * (len(outs) // 2)
    shadows = [SIGNALS.decode(o.value) for o in outs[::2]]
    lives = [SIGNALS.decode(o.value) for o in outs[1::2]]
    assert {s["model_version"] for s in shadows} == {"4"}
    assert {s["model_version"] for s in lives} == {"3"}
    assert [s["sequence"] for s in shadows] == [s["sequence"] for s in lives]
    assert [s["prob_up"] for s in shadows] != [s["prob_up"] for s in lives]


def test_no_model_dead_letters_every_full_window() -> None:
    records = sim_ticks(100)
    res = pipeline(slot=ModelSlot()).process(messages(records))
    counts = {i: sum(r["instrument"] == i for r in records) for i in ("SIMA", "SIMB", "SIMC")}
    assert len(res.dead_letters) == sum(max(0, n - WINDOW + 1) for n in counts.values())
    assert {d.error_type for d in res.dead_letters} == {"NoModel"}
    offs = [d.message.offset for d in res.dead_letters]
    assert offs == sorted(offs)


def test_json_output_topics_get_the_same_signals() -> None:
    records = sim_ticks(200)
    avro, _ = run(pipeline(), messages(records))
    pipe = pipeline()
    pipe.output_encoding = "json"
    js, _ = run(pipe, messages(records))
    assert [SIGNALS.decode(o.value) for o in avro] == [SIGNALS.decode(o.value) for o in js]
    assert json.loads(js[0].value)["signal"] in ("DOWN", "FLAT", "UP")

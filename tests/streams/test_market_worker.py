"""The market worker end to end: one signal per tick once the window is full; bad books DLQ'd."""

from __future__ import annotations

import itertools

import pytest

from finscore.app.console.produce import produce, tick_events
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from tests.artifacts import artifact
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    produce_records,
    publish,
    running,
    worker_config,
)

pytestmark = pytest.mark.broker

WINDOW = 20


def test_signals_start_when_the_window_is_full_and_account_one_to_one(client, prefix) -> None:
    make_topics(client, prefix, partitions=2)
    publish(client, prefix, artifact("market", "3", window=WINDOW))
    ticks = list(itertools.islice(tick_events(prefix, seed=2), 400))
    per_instrument = {}
    for _, key, _, _rec in ticks:
        per_instrument[key] = per_instrument.get(key, 0) + 1
    expected = sum(max(0, n - WINDOW + 1) for n in per_instrument.values())
    crossed = dict(ticks[0][3])
    crossed["bids"] = [{"price": crossed["asks"][0]["price"] + 1, "size": 5}]
    produce(client, iter(ticks))
    produce_records(client, prefix + T.MARKET_TICKS, [(b"X", Codec("market_tick").encode(crossed))])
    with running(worker_config(client, prefix, stream="market")):
        signals = decode_all(
            consume_all(client, prefix + T.PRICE_SIGNALS, expected, settle=1.0), "price_signal"
        )
        dead = decode_all(consume_all(client, prefix + T.dlq(T.MARKET_TICKS), 1), "dead_letter")
    assert len(signals) == expected
    assert len({(s["instrument"], s["sequence"]) for s in signals}) == expected
    for inst in per_instrument:
        seqs = sorted(s["sequence"] for s in signals if s["instrument"] == inst)
        first = min(r["sequence"] for _, k, _, r in ticks if k == inst)
        assert seqs[0] == first + WINDOW - 1  # nothing until the window is full
    assert all(s["model_version"] == "3" and s["horizon"] == 10 for s in signals)
    assert all(abs(s["prob_down"] + s["prob_flat"] + s["prob_up"] - 1) < 1e-4 for s in signals)
    assert "crossed book" in dead[0]["reason"]

"""``finscore worker market --family F`` end to end: the worker keeps the windows the market
declaration names (``finscore/families/market.toml``, issue 18), so of two announced models it
serves the one of the declared window and refuses the newer one of another window, where a
worker without a declaration adopts the newest."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from finscore.app.console.produce import produce, tick_events
from finscore.families import FamilySpec, builtin_family
from finscore.schemas import topics as T
from tests.artifacts import artifact
from tests.streams.kit import (
    consume_all,
    decode_all,
    make_topics,
    publish,
    running,
    worker_config,
)

pytestmark = pytest.mark.broker

DECLARED, OTHER = 20, 30


def declaration(folder: Path, events: int) -> Path:
    tables = builtin_family("market").to_dict()
    tables["features"][0]["events"] = events
    path = folder / "market.toml"
    path.write_text(FamilySpec.from_dict(tables).to_toml())
    return path


def test_a_declared_market_worker_serves_only_the_declared_window(client, prefix,
                                                                  tmp_path) -> None:  # fmt: skip
    make_topics(client, prefix, partitions=2)
    publish(client, prefix, artifact("market", "2", window=DECLARED))
    publish(client, prefix, artifact("market", "3", window=OTHER))  # newer, another window
    ticks = list(itertools.islice(tick_events(prefix, seed=2), 300))
    per_instrument: dict[str, int] = {}
    for _, key, _, _rec in ticks:
        per_instrument[key] = per_instrument.get(key, 0) + 1
    expected = sum(max(0, n - DECLARED + 1) for n in per_instrument.values())
    produce(client, iter(ticks))
    cfg = worker_config(client, prefix, stream="market",
                        family_path=declaration(tmp_path, DECLARED))  # fmt: skip
    with running(cfg) as w:
        signals = decode_all(
            consume_all(client, prefix + T.PRICE_SIGNALS, expected, settle=1.0), "price_signal"
        )
        assert (w.stream.windows.window, w.stream.windows.layout) == (DECLARED, "book40")
    assert len(signals) == expected
    assert {s["model_version"] for s in signals} == {"2"}  # v3 (window 30) refused
    for inst in per_instrument:
        seqs = sorted(s["sequence"] for s in signals if s["instrument"] == inst)
        first = min(r["sequence"] for _, k, _, r in ticks if k == inst)
        assert seqs[0] == first + DECLARED - 1  # nothing until the declared window is full

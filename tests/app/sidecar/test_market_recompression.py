"""The market half of the sidecar: a regime change (order-book imbalance starts predicting the
opposite move) drops the live model's macro-F1; the sidecar recompresses on the recent book
history, the candidate beats the champion on the recent windows, and the worker swaps to it."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from finscore.app.console.produce import produce
from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.compression.market import MarketFamily
from finscore.compression.plan import Gate, Plan, to_artifact
from finscore.compression.steps import Distill
from finscore.models.registry import Registry
from finscore.schemas import topics as T
from finscore.sim.market import MarketSimConfig, book_record, simulate_book
from tests.artifacts import TEST_SIGNING_KEY
from tests.streams.kit import make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker
torch.set_num_threads(1)


def regime_ticks(prefix: str, n1: int, n2: int) -> list:
    events = []
    for k, inst in enumerate(("SIMA", "SIMB")):
        before = simulate_book(n1, MarketSimConfig(seed=10 + k, imbalance_strength=3.0))
        after_cfg = MarketSimConfig(seed=20 + k, imbalance_strength=-3.0,
                                    start_price=float(before.bid_p[-1, 0]),
                                    start_time_us=int(before.time_us[-1]))  # fmt: skip
        after = simulate_book(n2, after_cfg)
        recs = [book_record(before, i, inst, i) for i in range(n1)]
        recs += [book_record(after, i, inst, n1 + i) for i in range(n2)]
        events.append([(prefix + T.MARKET_TICKS, inst, "market_tick", r) for r in recs])
    return [e for pair in zip(*events, strict=True) for e in pair]


def test_a_market_regime_change_triggers_a_recompression_that_is_swapped_in(
    client, prefix, tmp_path
) -> None:
    fam = MarketFamily(window=20, horizon=5)
    data = fam.load_data("sim", n=8000, seed=11, quick=True, max_train=3000)
    result = Plan([Distill(16, epochs=3)], teacher_epochs=2, epochs=3).run(
        fam, data, Gate("macro_f1", 1.0)
    )
    reg = Registry(tmp_path / "registry")
    v1 = reg.publish(to_artifact(result, result.deployed, fam, data))
    reg.promote("market", v1.manifest.version)
    make_topics(client, prefix, partitions=2)
    publish(client, prefix, v1)
    cfg = SidecarConfig(client=client, topic_prefix=prefix, registry_dir=tmp_path / "registry",
                        signing_key=TEST_SIGNING_KEY, cooldown_s=0, market_min_outcomes=800, market_f1_drop=0.08, market_epochs=2,
                        reports_dir=tmp_path / "reports")  # fmt: skip
    sc = Sidecar(cfg)
    side = threading.Thread(target=sc.run, daemon=True)
    with running(worker_config(client, prefix, stream="market")) as w:
        side.start()
        produce(client, iter(regime_ticks(prefix, 3000, 6000)), rate=0)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and w.slot.live.version == "1":
            time.sleep(0.5)
        sc.stop()
        side.join(300)
        live = w.slot.live.version
    runs = [r for r in sc.state.recompressions if r.get("model") == "market"]
    assert runs and runs[0]["reason"].startswith("drift"), sc.state.recompressions
    promoted = [r for r in runs if r["outcome"] == "promoted"]
    assert promoted, runs
    assert promoted[0]["candidate_macro_f1"] > promoted[0]["champion_macro_f1"]
    assert live == promoted[0]["version"] == "2"

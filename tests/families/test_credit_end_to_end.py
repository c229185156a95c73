"""The credit family end to end on a real broker, with the commands a user runs: the German
credit data set written as the family's CSV, `finscore compress credit --data ... --promote`,
`finscore topics --create --family credit`, simulated applications produced to
`credit-applications`, and `finscore worker family --family credit` (in-process) publishing a
probability of default per application, with its top factors, on `credit-scores`: every
application scored once by the signed champion, exactly as offline `featurize` + that model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from finscore.families import builtin_family
from finscore.families.german_credit import (
    german_credit,
    simulate_applications,
    write_family_csv,
)
from finscore.families.spec import family_file
from finscore.schemas.codec import Codec
from tests.streams.kit import consume_all, decode_all, produce_records, running, worker_config
from tests.streams.test_declared_pipeline import admitted, offline_scores

pytestmark = pytest.mark.broker


def test_credit_applications_are_scored_with_their_top_factors(
    client, prefix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from finscore.app.cli import cli
    from finscore.models.keys import resolve_keys
    from finscore.models.registry import Registry

    for key in ("FINSCORE_SIGNING_KEY", "FINSCORE_VERIFY_KEY", "FINSCORE_ALLOW_UNSIGNED_MODELS"):
        monkeypatch.delenv(key, raising=False)
    spec = builtin_family("credit")
    data = write_family_csv(tmp_path / "credit.csv", german_credit())
    registry, keys = tmp_path / "registry", tmp_path / "keys"
    env = {"FINSCORE_KEY_DIR": str(keys), "FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"],
           "FINSCORE_TOPIC_PREFIX": prefix, "FINSCORE_PARTITIONS": "2"}  # fmt: skip
    made = CliRunner().invoke(cli, ["compress", "credit", "--data", str(data), "--promote",
                                    "--registry", str(registry), "--epochs", "4",
                                    "--report", str(tmp_path / "reports")], env=env)  # fmt: skip
    assert made.exit_code == 0, (made.output, made.exception)
    champion = Registry(registry).champion("credit")
    assert champion is not None and champion.signature
    made = CliRunner().invoke(cli, ["topics", "--create", "--family", "credit"], env=env)
    assert made.exit_code == 0, (made.output, made.exception)
    assert prefix + "credit-applications" in made.output and prefix + "credit-scores" in made.output

    new = simulate_applications(300, seed=11)
    folder = family_file("credit").parent
    codec = Codec("credit_application",
                  reader_schema=json.loads((folder / "credit_application.avsc").read_text()))  # fmt: skip
    produce_records(client, prefix + "credit-applications",
                    [(a["applicant_id"].encode(), codec.encode(a)) for a in new.applications])  # fmt: skip
    verify = resolve_keys(None, None, keys, create=False).verify_key
    cfg = worker_config(client, prefix, stream="family", family_path=family_file("credit"),
                        registry_dir=registry, verify_key=verify, explain=3)  # fmt: skip
    with running(cfg) as w:
        assert w.health()["model"] == {"name": "credit", "version": champion.manifest.version}
        scores = decode_all(consume_all(client, prefix + "credit-scores", len(new), settle=1.0),
                            "family_score")  # fmt: skip
    by_id = {s["id"]: s for s in scores}
    assert len(scores) == len(by_id) == len(new)
    assert set(by_id) == {a["application_id"] for a in new.applications}
    assert {s["model_version"] for s in scores} == {champion.manifest.version}
    want = offline_scores(spec, admitted(champion, spec), new.applications, [])
    got = np.array([by_id[a["application_id"]]["score"] for a in new.applications])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    columns = set(spec.feature_names)
    for s in scores:  # a credit decision names its factors
        assert len(s["top_features"]) == 3
        assert {f["feature"] for f in s["top_features"]} <= columns
    # the simulated defaults score higher than the simulated good credits
    bad = new.labels.astype(bool)
    assert got[bad].mean() > got[~bad].mean()

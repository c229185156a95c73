"""Issue 18's acceptance line, end to end on a real broker: a family declared in a file here
(its own schema with a categorical `channel`, windows over a second key), trained from a CSV
with `finscore compress FAMILY.toml --data ... --teacher GBM.onnx --promote` (a gradient-boosted
teacher trained in the test, exported with skl2onnx), and a `family` worker that loads the
signed champion from the registry and scores the family's topic: every event scored once by
that model, exactly as offline `featurize` + the same model."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from finscore.families import load_family
from finscore.families.data import parse_mapping
from finscore.schemas.codec import Codec
from tests.families.test_compress_declared import MAP, PAYMENT, _gbm_onnx, simulate, write_family
from tests.streams.kit import consume_all, decode_all, produce_records, running, worker_config
from tests.streams.test_declared_pipeline import admitted, offline_scores

pytestmark = pytest.mark.broker


def _records(path: Path) -> tuple[list[dict], list[dict]]:
    """The CSV's payments as records of the family's schema, and their outcomes (known two
    days later, as the declaration's delay)."""
    events, outcomes = [], []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            e = {"txn_id": row["txn_id"], "ts": int(row["ts"]), "card": row["card_number"],
                 "merchant": row["merchant"], "channel": row["channel"],
                 "amount": Decimal(row["amount"]), "currency": "EUR"}  # fmt: skip
            events.append(e)
            outcomes.append({"txn_id": e["txn_id"], "merchant": e["merchant"], "ts": e["ts"],
                             "reported_at": e["ts"] + 2 * 86_400_000,
                             "is_fraud": row["fraud"] == "1"})  # fmt: skip
    return events, outcomes


def test_declare_train_distill_promote_and_score_a_new_family(
    client, prefix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from finscore.app.cli.compress import compress
    from finscore.compression.declared import DeclaredFamily
    from finscore.models.keys import resolve_keys
    from finscore.models.registry import Registry

    for key in ("FINSCORE_SIGNING_KEY", "FINSCORE_VERIFY_KEY", "FINSCORE_ALLOW_UNSIGNED_MODELS"):
        monkeypatch.delenv(key, raising=False)
    toml = write_family(tmp_path / "family")
    spec = load_family(toml)
    data = tmp_path / "payments.csv"
    simulate(data, cards=300, merchants=100, days=30, seed=8)
    # the bank's own teacher, trained elsewhere on the family's features
    td = DeclaredFamily(spec).load_data(data, parse_mapping(MAP))
    teacher = tmp_path / "teacher.onnx"
    _gbm_onnx(td.x_train, td.y_train, teacher)
    registry, keys = tmp_path / "registry", tmp_path / "keys"
    args = [str(toml), "--data", str(data), "--teacher", str(teacher), "--promote",
            "--registry", str(registry), "--report", str(tmp_path / "reports")]  # fmt: skip
    for m in MAP:
        args += ["--map", m]
    result = CliRunner().invoke(compress, args, env={"FINSCORE_KEY_DIR": str(keys)})
    assert result.exit_code == 0, (result.output, result.exception)
    champion = Registry(registry).champion(spec.name)
    assert champion is not None and champion.manifest.teacher_sha256

    # its topics, from the declaration (`finscore topics --create --family F`; one partition:
    # the windows over the merchant see the events in event-time order, as offline)
    from finscore.app.cli import cli

    env = {"FINSCORE_BOOTSTRAP_SERVERS": client["bootstrap.servers"], "FINSCORE_TOPIC_PREFIX":
           prefix, "FINSCORE_PARTITIONS": "1"}  # fmt: skip
    made = CliRunner().invoke(cli, ["topics", "--create", "--family", str(toml)], env=env)
    assert made.exit_code == 0, (made.output, made.exception)
    assert prefix + spec.input.topic in made.output and prefix + spec.output.topic in made.output
    # the events of the last five days, their outcomes first
    events, outcomes = _records(data)
    last = events[-1]["ts"] - 5 * 86_400_000
    events = [e for e in events if e["ts"] >= last]
    outcomes = [o for o in outcomes if o["ts"] >= last]
    pay = Codec("card_payment", reader_schema=PAYMENT)
    out_codec = Codec("outcome", reader_schema=_outcome_schema(toml))
    produce_records(client, prefix + spec.label.topic,
                    [(o["merchant"].encode(), out_codec.encode(o)) for o in outcomes])  # fmt: skip
    produce_records(client, prefix + spec.input.topic,
                    [(e["card"].encode(), pay.encode(e)) for e in events])  # fmt: skip

    verify = resolve_keys(None, None, keys, create=False).verify_key
    cfg = worker_config(client, prefix, stream="family", family_path=toml, registry_dir=registry,
                        verify_key=verify)  # fmt: skip
    with running(cfg) as w:  # no announcement: the registry's signed champion
        assert w.health()["model"] == {"name": spec.name, "version": champion.manifest.version}
        scores = decode_all(consume_all(client, prefix + spec.output.topic, len(events),
                                        settle=1.0), "family_score")  # fmt: skip
    by_id = {s["id"]: s for s in scores}
    assert set(by_id) == {e["txn_id"] for e in events}
    assert {s["model_version"] for s in scores} == {champion.manifest.version}
    want = offline_scores(spec, admitted(champion, spec), events, outcomes)
    got = np.array([by_id[e["txn_id"]]["score"] for e in events])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert 0 < float(np.mean([s["flagged"] for s in scores])) < 0.5  # a real decision


def _outcome_schema(toml: Path) -> dict:
    import json

    return json.loads((toml.parent / "outcome.avsc").read_text())

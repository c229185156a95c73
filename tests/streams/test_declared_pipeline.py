"""The pure pipeline of a declared family (no broker): a family nobody coded (card payments
with a channel, a merchant key, chargebacks after a delay), declared in TOML here, scored in
batches exactly as offline ``featurize`` + the same model; bad events and bad labels are dead
letters with reasons; a model is admitted only when it names the family's features.

The helpers (``write_family``, ``payment_events``, ``chargebacks_of``, ``family_artifact``,
``messages``) are shared with the broker test and the pipeline contract."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from finscore.families import DeclaredFeatures, FamilySpec, FamilySpecError, featurize, load_family
from finscore.families.columns import records_to_columns
from finscore.models.registry import Artifact, ArtifactError, Manifest
from finscore.schemas.codec import Codec
from finscore.streams.declared import (
    DeclaredPipeline,
    DeclaredStream,
    LabelsPipeline,
    family_topics,
)
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import InputSpec, Scorer, admit
from finscore.streams.transport import Message
from finscore.streams.worker import WorkerConfig, build_stream
from tests.artifacts import fraud_onnx

DAY = 86_400_000
HOUR = 3_600_000
NOW_MS = 1_767_225_600_000  # 2026-01-01: the pipeline's wall clock in these tests
CHANNELS = ("web", "pos", "app")

PAYMENT = {
    "type": "record", "name": "CardPayment", "namespace": "test.v1",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "merchant_id", "type": "string"},
        {"name": "channel", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                    "precision": 12, "scale": 2}},
        {"name": "device_score", "type": "double"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}  # fmt: skip
CHARGEBACK = {
    "type": "record", "name": "Chargeback", "namespace": "test.v1",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "merchant_id", "type": "string"},
        {"name": "event_time", "type": "long"},
        {"name": "reported_at", "type": "long"},
        {"name": "chargeback", "type": "int"},
    ],
}  # fmt: skip
FAMILY = """
name = "card_payments"

[input]
topic = "card-payments"
schema = "card_payment.avsc"
id = "payment_id"
key = "customer_id"
time = "event_time"

[label]
topic = "card-chargebacks"
schema = "chargeback.avsc"
id = "payment_id"
field = "chargeback"
time = "event_time"
label_time = "reported_at"
delay_days = 2

[output]
topic = "card-payment-scores"
kind = "probability"

[[features]]
name = "LOG_AMOUNT"
kind = "raw"
field = "amount"
transform = "log1p"

[[features]]
name = "DEVICE_SCORE"
kind = "raw"
field = "device_score"

[[features]]
name = "WEEKEND"
kind = "time_flag"
flag = "weekend"

[[features]]
name = "NIGHT"
kind = "time_flag"
flag = "night"

[[features]]
name = "CHANNEL"
kind = "category"
field = "channel"
values = ["web", "pos", "app"]

[[features]]
name = "CUSTOMER_NB_1D"
kind = "window"
key = "customer_id"
days = 1
stat = "count"

[[features]]
name = "MERCHANT_NB_1D"
kind = "window"
key = "merchant_id"
days = 1
stat = "count"

[[features]]
name = "MERCHANT_AMOUNT_Z_7D"
kind = "window"
key = "merchant_id"
days = 7
stat = "zscore"
field = "amount"

[[features]]
name = "MERCHANT_RISK_7D"
kind = "label_risk"
key = "merchant_id"
days = 7
stat = "share"
"""

PAY = {"name": "card_payment"}  # the codec's name of the input schema (its file's stem)


def write_family(folder: Path) -> Path:
    """The family's TOML and its two schemas in ``folder``; returns the TOML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card_payment.avsc").write_text(json.dumps(PAYMENT))
    (folder / "chargeback.avsc").write_text(json.dumps(CHARGEBACK))
    (folder / "card_payments.toml").write_text(FAMILY)
    return folder / "card_payments.toml"


def payment_codec() -> Codec:
    return Codec("card_payment", reader_schema=PAYMENT)


def chargeback_codec() -> Codec:
    return Codec("chargeback", reader_schema=CHARGEBACK)


def payment_events(n: int, *, end_ms: int = NOW_MS - DAY, days: int = 12, seed: int = 0
                   ) -> list[dict]:  # fmt: skip
    """``n`` payments in event-time order over ``days`` days ending at ``end_ms``."""
    rng = np.random.default_rng(seed)
    ts = np.sort(end_ms - days * DAY + rng.integers(0, days * DAY, n))
    return [
        {
            "payment_id": f"p{seed}-{i}",
            "customer_id": f"c{int(rng.integers(0, 25))}",
            "merchant_id": f"m{int(rng.integers(0, 6))}",
            "channel": CHANNELS[int(rng.integers(0, 3))] if i % 17 else "phone",
            "amount": Decimal(int(rng.lognormal(8, 1))).scaleb(-2),
            "device_score": float(np.round(rng.random(), 4)),
            "event_time": int(t),
        }
        for i, t in enumerate(ts.tolist())
    ]


def chargebacks_of(events: list[dict], *, now_ms: int = NOW_MS, seed: int = 1) -> list[dict]:
    """An outcome for every payment, known two days later (some a day early or late), those
    known by ``now_ms`` only."""
    rng = np.random.default_rng(seed)
    out = []
    for e in events:
        reported = e["event_time"] + 2 * DAY + int(rng.choice([0, 0, 0, -DAY, DAY]))
        if reported <= now_ms:
            out.append({"payment_id": e["payment_id"], "merchant_id": e["merchant_id"],
                        "event_time": e["event_time"], "reported_at": reported,
                        "chargeback": int(rng.random() < 0.2)})  # fmt: skip
    return out


def messages(records: list[dict], codec: Codec, topic: str, encodings: list[str] | None = None,
             partitions: int = 3, key: str = "customer_id") -> list[Message]:  # fmt: skip
    """Messages keyed (and partitioned) by ``key``, offsets 0, 1, ..."""
    encodings = encodings or ["avro"] * len(records)
    return [
        Message(
            topic,
            zlib.crc32(r[key].encode()) % partitions,
            i,
            r[key].encode(),
            codec.encode(r, enc),
            1000 + i,
        )
        for i, (r, enc) in enumerate(zip(records, encodings, strict=True))
    ]


def family_artifact(
    spec: FamilySpec,
    version: str = "1",
    seed: int = 0,
    feature_names: list[str] | None = None,
    *,
    family: str | None = None,
    threshold: float = 0.5,
) -> Artifact:
    """An unsigned artifact of a tiny logistic model over ``feature_names`` (default: every
    feature of ``spec``, in order), named and of the family ``spec.name`` (``family``
    overrides the manifest's family), with reference inputs and outputs."""
    names = list(spec.feature_names) if feature_names is None else list(feature_names)
    model = fraud_onnx(seed, bias=-1.0, f=max(1, len(names)))
    ref_in = np.random.default_rng(seed + 1).normal(size=(4, max(1, len(names))))
    ref_in = ref_in.astype(np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ref_out = np.asarray(session.run(None, {"features": ref_in})[0])
    manifest = Manifest(
        name=spec.name,
        version=version,
        family=family or spec.name,
        sha256=hashlib.sha256(model).hexdigest(),
        size_bytes=len(model),
        input_name="features",
        output_name="score",
        input_shape=[None, len(names)],
        feature_names=names,
        steps=[{"step": "test-model", "params": {"seed": seed}}],
        data_fingerprint="none",
        reference_inputs=ref_in.tolist(),
        reference_outputs=ref_out.tolist(),
        created_at=datetime.now(UTC).isoformat(),
        threshold=threshold,
    )
    return Artifact(manifest=manifest, onnx=model, signature=None)


def admitted(art: Artifact, spec: FamilySpec) -> Scorer:
    """A scorer of ``art`` admitted for ``spec``'s stream (bound to its features by name)."""
    scorer = Scorer(art)
    admit(scorer, InputSpec.declared(spec.name, spec.feature_names))
    return scorer


def offline_scores(spec: FamilySpec, scorer: Scorer, events: list[dict], labels: list[dict]
                   ) -> np.ndarray:  # fmt: skip
    """What training computes for ``events`` (featurize over the records), scored by
    ``scorer`` on the features it names."""
    x = featurize(spec, records_to_columns(events, spec.input_fields),
                  records_to_columns(labels, spec.label_fields))  # fmt: skip
    return scorer.score_batch(scorer.select(x))


def pipeline(spec: FamilySpec, slot: ModelSlot, **kw) -> DeclaredPipeline:  # noqa: ANN003
    kw.setdefault("clock", lambda: NOW_MS / 1000)
    kw.setdefault("in_codec", payment_codec())
    return DeclaredPipeline(DeclaredFeatures(spec, time_origin_ms=946_684_800_000), slot,
                            "card-payment-scores", **kw)  # fmt: skip


OUT = Codec("family_score")
_FOLDERS: list[tempfile.TemporaryDirectory] = []  # removed at exit


@cache
def contract_spec() -> FamilySpec:
    """The family, declared in a temporary folder (for the pipeline contract's case)."""
    _FOLDERS.append(tempfile.TemporaryDirectory(prefix="finscore-family-"))
    return load_family(write_family(Path(_FOLDERS[-1].name)))


def contract_messages() -> list[Message]:
    """300 payments, keyed by customer, for the pipeline contract."""
    return messages(payment_events(300, seed=11), payment_codec(), "card-payments")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> FamilySpec:
    return load_family(write_family(tmp_path_factory.mktemp("family")))


def _labelled(pipe: DeclaredPipeline, labels: list[dict]) -> None:
    result = LabelsPipeline(pipe.features, chargeback_codec(), clock=pipe.clock).process(
        messages(labels, chargeback_codec(), "card-chargebacks", key="merchant_id")
    )
    assert not result.dead_letters and result.scored == len(labels)


def test_batches_score_what_offline_featurize_and_the_model_give(spec: FamilySpec) -> None:
    events = payment_events(900)
    labels = chargebacks_of(events)
    scorer = admitted(family_artifact(spec, "3"), spec)
    pipe = pipeline(spec, ModelSlot(scorer))
    _labelled(pipe, labels)
    msgs = messages(events, payment_codec(), "card-payments")
    outs = []
    for a, b in ((0, 10), (10, 400), (400, 401), (401, 900)):  # per-record and columnar sizes
        result = pipe.process(msgs[a:b])
        assert not result.dead_letters and result.scored == b - a
        assert result.model_version == "3"
        outs += [OUT.decode(r.value) for r in result.outputs]
    assert [o["id"] for o in outs] == [e["payment_id"] for e in events]
    np.testing.assert_allclose([o["score"] for o in outs],
                               offline_scores(spec, scorer, events, labels), rtol=1e-6)  # fmt: skip
    risk = spec.feature_names.index("MERCHANT_RISK_7D")
    x = featurize(spec, records_to_columns(events, spec.input_fields),
                  records_to_columns(labels, spec.label_fields))  # fmt: skip
    assert (x[:, risk] > 0).any(), "the labels reach the scores"
    first, e = outs[0], events[0]
    assert first["key"] == e["customer_id"] and first["family"] == "card_payments"
    assert first["model_name"] == "card_payments" and first["threshold"] == 0.5
    assert first["event_time"] == e["event_time"] and first["processing_time"] == NOW_MS
    assert (first["source_topic"], first["source_offset"]) == ("card-payments", 0)
    assert all(o["flagged"] == (o["score"] >= 0.5) for o in outs)
    assert [r.key for r in pipe.process(msgs[:3]).outputs] == [m.key for m in msgs[:3]]


def test_mixed_encodings_keep_input_order_and_the_same_scores(spec: FamilySpec) -> None:
    events = payment_events(300, seed=2)
    scorer = admitted(family_artifact(spec), spec)
    rng = np.random.default_rng(0)
    encodings = rng.choice(["avro", "json", "avro"], size=len(events)).tolist()
    msgs = messages(events, payment_codec(), "card-payments", encodings)
    msgs.insert(40, Message("card-payments", 0, 10_000, b"k", b"\xc3\x01garbage", 1))
    mixed = pipeline(spec, ModelSlot(scorer)).process(msgs)
    plain = pipeline(spec, ModelSlot(scorer)).process(
        messages(events, payment_codec(), "card-payments")
    )
    assert [d.error_type for d in mixed.dead_letters] == ["DecodeError"]
    assert [OUT.decode(r.value)["score"] for r in mixed.outputs] == [
        OUT.decode(r.value)["score"] for r in plain.outputs
    ]


def test_out_of_bounds_events_are_dead_letters_with_reasons_and_never_state(
    spec: FamilySpec,
) -> None:
    events = payment_events(80, seed=3)
    codec = payment_codec()
    bad = [
        {**events[0], "payment_id": "future", "event_time": NOW_MS + 48 * HOUR},
        {**events[1], "payment_id": "old", "event_time": 1000},
        {**events[2], "payment_id": ""},
        {**events[3], "payment_id": "long-key", "merchant_id": "m" * 500},
        {**events[4], "payment_id": "huge", "amount": Decimal("9999999999.99")},
    ]
    nan = json.loads(codec.encode({**events[5], "payment_id": "nan"}, "json"))
    nan["device_score"] = float("nan")
    values = [codec.encode(r) for r in bad] + [json.dumps(nan).encode()]
    msgs = [Message("card-payments", 0, i, b"c", v, 1) for i, v in enumerate(values)]
    good = messages(events[10:], codec, "card-payments")
    scorer = admitted(family_artifact(spec), spec)
    pipe = pipeline(spec, ModelSlot(scorer))
    result = pipe.process(msgs + good)
    reasons = [d.reason for d in result.dead_letters]
    assert {d.error_type for d in result.dead_letters} == {"ImpossibleValue"}
    assert len(reasons) == len(values) and len(result.outputs) == len(good)
    for needle in (
        "in the future",
        "before the earliest",
        "empty payment_id",
        "merchant_id of 500 characters",
        "more than the 1e+08",
        "device_score is nan",
    ):
        assert any(needle in r for r in reasons), (needle, reasons)  # fmt: skip
    # the refused events never entered the windows: the good ones score as if alone
    alone = pipeline(spec, ModelSlot(scorer)).process(good)
    assert [(o["id"], o["score"]) for o in map(OUT.decode, (r.value for r in result.outputs))] == [
        (o["id"], o["score"]) for o in map(OUT.decode, (r.value for r in alone.outputs))
    ]


def test_bad_labels_are_dead_letters_and_good_ones_count_once(spec: FamilySpec) -> None:
    events = payment_events(200, seed=4)
    labels = chargebacks_of(events)
    features = DeclaredFeatures(spec, time_origin_ms=946_684_800_000)
    labels_pipe = LabelsPipeline(features, chargeback_codec(), clock=lambda: NOW_MS / 1000)
    codec = chargeback_codec()
    bad = [
        {**labels[0], "chargeback": 2},
        {**labels[1], "reported_at": labels[1]["event_time"] - 1},
        {**labels[2], "reported_at": NOW_MS + 48 * HOUR},
        {**labels[3], "payment_id": ""},
    ]
    msgs = messages(labels + labels[:50], codec, "card-chargebacks", key="merchant_id")
    msgs += [Message("card-chargebacks", 0, 9000 + i, b"m", codec.encode(r))
             for i, r in enumerate(bad)]  # fmt: skip
    msgs.append(Message("card-chargebacks", 0, 9999, b"m", b"not a label"))
    result = labels_pipe.process(msgs)
    assert result.scored == len(labels) + 50
    reasons = [d.reason for d in result.dead_letters]
    assert sorted(d.error_type for d in result.dead_letters) == ["DecodeError"] + [
        "ImpossibleValue"
    ] * len(bad)
    for needle in (
        "chargeback is 2, not 0 or 1",
        "reported_at",
        "in the future",
        "empty payment_id",
    ):
        assert any(needle in r for r in reasons), (needle, reasons)
    # replayed labels count once: the same features as with each label once
    once = DeclaredFeatures(spec, time_origin_ms=946_684_800_000)
    once.apply_labels(labels)
    cols = records_to_columns(events, spec.input_fields)
    np.testing.assert_array_equal(features.transform_columns(cols), once.transform_columns(cols))


def test_a_model_is_admitted_only_when_it_names_the_familys_features(spec: FamilySpec) -> None:
    names = list(spec.feature_names)
    subset = list(reversed(names[2:9]))
    scorer = admitted(family_artifact(spec, "2", feature_names=subset), spec)
    events = payment_events(200, seed=5)
    outs = (
        pipeline(spec, ModelSlot(scorer))
        .process(messages(events, payment_codec(), "card-payments"))
        .outputs
    )
    x = featurize(spec, records_to_columns(events, spec.input_fields), {})
    want = scorer.score_batch(x[:, [names.index(n) for n in subset]])
    np.testing.assert_allclose([OUT.decode(r.value)["score"] for r in outs], want, rtol=1e-6)

    def reason(art: Artifact) -> str:
        with pytest.raises(ArtifactError) as err:
            admitted(art, spec)
        return err.value.reason

    assert reason(family_artifact(spec, feature_names=[*subset, "NOT_OURS"])) == "unknown_features"
    assert reason(family_artifact(spec, feature_names=[])) == "unknown_features"
    assert reason(family_artifact(spec, family="credit")) == "wrong_family"
    wide = family_artifact(spec, feature_names=names)  # its ONNX reads one more than it names
    narrow = dataclasses.replace(wide.manifest, feature_names=names[:-1])
    assert reason(Artifact(narrow, wide.onnx, None)) == "input_mismatch"


def test_no_model_means_dead_letters_and_no_state(spec: FamilySpec) -> None:
    events = payment_events(20, seed=6)
    pipe = pipeline(spec, ModelSlot())
    result = pipe.process(messages(events, payment_codec(), "card-payments"))
    assert [d.error_type for d in result.dead_letters] == ["NoModel"] * 20
    assert not result.outputs and pipe.features.held()["window:customer_id"] == 0


def test_explain_and_json_outputs(spec: FamilySpec) -> None:
    art = family_artifact(spec)
    names = list(spec.feature_names)
    params = {"feature_mean": [0.0] * len(names), "feature_std": [1.0] * len(names)}
    scorer = admitted(Artifact(dataclasses.replace(art.manifest, params=params), art.onnx), spec)
    events = payment_events(30, seed=7)
    pipe = pipeline(spec, ModelSlot(scorer), explain=2, output_encoding="json")
    outs = [json.loads(r.value) for r in pipe.process(
        messages(events, payment_codec(), "card-payments")).outputs]  # fmt: skip
    assert len(outs) == 30 and all(len(o["top_features"]) == 2 for o in outs)
    assert {f["feature"] for o in outs for f in o["top_features"]} <= set(names)
    assert OUT.decode(json.dumps(outs[0]).encode())["id"] == events[0]["payment_id"]


def test_the_worker_builds_the_familys_stream_and_refuses_what_it_cannot_serve(
    spec: FamilySpec, tmp_path: Path
) -> None:
    path = write_family(tmp_path / "f")
    cfg = WorkerConfig(stream="family", client={}, topic_prefix="x-", family_path=path)
    stream = build_stream(cfg, ModelSlot())
    assert (stream.input_topic, stream.output_topic) == ("x-card-payments", "x-card-payment-scores")
    assert isinstance(stream, DeclaredStream)
    assert stream.side_topics == ["x-card-chargebacks", "x-card-chargebacks-dlq"]
    assert cfg.fleet_group == "x-finscore-family-card_payments"
    assert {t.name for t in family_topics(spec, 3, "x-")} == {
        "x-card-payments", "x-card-payment-scores", "x-card-payment-scores-shadow",
        "x-card-payments-dlq", "x-card-chargebacks", "x-card-chargebacks-dlq",
    }  # fmt: skip
    handbook = Path(__file__).resolve().parents[2] / "finscore/families/fraud_handbook.toml"
    with pytest.raises(FamilySpecError, match="fraud_flag"):
        build_stream(WorkerConfig(stream="family", client={}, family_path=handbook), ModelSlot())
    with pytest.raises(FamilySpecError, match="needs a family declaration"):
        build_stream(WorkerConfig(stream="family", client={}), ModelSlot())


BUILTIN_FAMILY = """
name = "tx_family"
[input]
topic = "transactions"
schema = "transaction"
id = "transaction_id"
key = "customer_id"
time = "event_time"
[label]
topic = "fraud-labels"
schema = "fraud_label"
id = "transaction_id"
field = "is_fraud"
time = "tx_time"
label_time = "label_time"
delay_days = 7
[output]
topic = "tx-scores"
[[features]]
name = "AMOUNT"
kind = "raw"
field = "amount"
[[features]]
name = "NB_1D"
kind = "window"
key = "customer_id"
days = 1
stat = "count"
[[features]]
name = "TERMINAL_AVG_7D"
kind = "window"
key = "terminal_id"
days = 7
stat = "mean"
field = "amount"
"""


def test_a_family_on_a_built_in_schema_decodes_columnar_with_the_same_scores(
    tmp_path: Path,
) -> None:
    """Built-in schemas take the columnar decoder (the per-record codec for the rest): the
    same scores, in the same order, whatever the batch size and encodings."""
    from finscore.schemas.samples import sample

    (tmp_path / "tx.toml").write_text(BUILTIN_FAMILY)
    tx = load_family(tmp_path / "tx.toml")
    scorer = admitted(family_artifact(tx), tx)
    recs = [{**sample("transaction", i), "event_time": NOW_MS - DAY + i * 60_000}
            for i in range(300)]  # fmt: skip
    codec = Codec("transaction")
    encodings = np.random.default_rng(1).choice(["avro", "avro", "json"], size=300).tolist()

    def run(batch: int, encs: list[str]) -> list[float]:
        pipe = pipeline(tx, ModelSlot(scorer), in_codec=codec)
        msgs = messages(recs, codec, "transactions", encs)
        msgs.insert(100, Message("transactions", 0, 10_000, b"k", b"\xc3\x01garbage", 1))
        out, dead = [], []
        for a in range(0, len(msgs), batch):
            result = pipe.process(msgs[a : a + batch])
            out += [OUT.decode(r.value) for r in result.outputs]
            dead += result.dead_letters
        assert [d.error_type for d in dead] == ["DecodeError"]
        assert [o["id"] for o in out] == [r["transaction_id"] for r in recs]
        return [o["score"] for o in out]

    columnar = run(301, encodings)
    assert pipeline(tx, ModelSlot(scorer), in_codec=codec).decoder.columnar is not None
    assert columnar == run(301, ["avro"] * 300) == run(20, encodings)  # 20: record by record
    x = featurize(tx, records_to_columns(recs, tx.input_fields), {})
    np.testing.assert_allclose(columnar, scorer.score_batch(x), rtol=1e-6)


def test_the_cli_runs_a_family_worker_from_its_declaration(tmp_path: Path) -> None:
    """``finscore worker family --family PATH.toml``: the config names the declaration (and an
    instance's transactional id the family); --family is required there and refused elsewhere;
    a bad declaration is one sentence before any connection."""
    from click.testing import CliRunner

    from finscore.app.cli.group import cli
    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings

    path = write_family(tmp_path / "f")
    cfg = worker_config(Settings(allow_unsigned_models=True), "family", instance_id="w1",
                        family_path=path)  # fmt: skip
    assert cfg.stream == "family" and cfg.family_path == path
    assert cfg.transactional_id == "finscore-family-card_payments-w1"
    assert worker_config(Settings(allow_unsigned_models=True), "fraud").family_path is None
    runner = CliRunner()
    r = runner.invoke(cli, ["worker", "family"])
    assert r.exit_code == 2 and "needs --family PATH.toml" in r.output
    r = runner.invoke(cli, ["worker", "fraud", "--family", str(path)])
    assert r.exit_code == 2 and "--family is for `finscore worker family`" in r.output
    (tmp_path / "bad.toml").write_text('name = "x"\n')
    r = runner.invoke(cli, ["worker", "family", "--family", str(tmp_path / "bad.toml")])
    assert isinstance(r.exception, FamilySpecError) and "missing 'input'" in str(r.exception)

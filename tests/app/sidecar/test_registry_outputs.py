"""With a schema registry set, workers write their outputs in the Confluent wire format; every
reader of those outputs inside finscore decodes them (issue 16): the sidecar's quality join and
the exactly-once recovery check (``resume_offsets``).

Real embedded broker, the stand-in registry over HTTP (tests/schemas/registry_server.py) with
the real ``SchemaRegistryClient``.
"""

from __future__ import annotations

import time

import pytest

from finscore.app.sidecar.loop import Sidecar, SidecarConfig
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, registry_client
from finscore.streams.changelog import resume_offsets
from tests.streams.kit import make_topics, produce_records

pytestmark = pytest.mark.broker

NOW_MS = int(time.time() * 1000)


def _flag(i: int, **kw: object) -> dict:
    rec = {"transaction_id": f"tx-{i}", "customer_id": "c1", "terminal_id": "t1",
           "score": 0.9 if i % 2 else 0.1, "flagged": bool(i % 2), "threshold": 0.5,
           "model_name": "fraud", "model_version": "3", "event_time": NOW_MS,
           "processing_time": NOW_MS, "source_topic": "transactions", "source_partition": 0,
           "source_offset": i, "top_features": []}  # fmt: skip
    rec.update(kw)
    return rec


def _label(i: int) -> dict:
    return {"transaction_id": f"tx-{i}", "customer_id": "c1", "terminal_id": "t1",
            "tx_time": NOW_MS - 86_400_000, "label_time": NOW_MS, "is_fraud": bool(i % 2),
            "amount": 12.5, "scenario": None}  # fmt: skip


def test_the_sidecar_joins_confluent_format_flags_and_labels(  # noqa: ANN001
    client, prefix, tmp_path, schema_registry_url
) -> None:
    make_topics(client, prefix, partitions=1)
    url = schema_registry_url
    reg = registry_client({"url": url})
    flags, labels = Codec("fraud_flag", registry=reg), Codec("fraud_label", registry=reg)
    produce_records(client, prefix + T.FRAUD_FLAGS,
                    [(b"c1", flags.encode(_flag(i), "confluent")) for i in range(4)])  # fmt: skip
    produce_records(client, prefix + T.FRAUD_LABELS,
                    [(b"c1", labels.encode(_label(i), "confluent")) for i in range(4)])  # fmt: skip
    sc = Sidecar(SidecarConfig(client=client, topic_prefix=prefix, markets=False,
                               registry_dir=tmp_path / "registry",
                               reports_dir=tmp_path / "reports",
                               schema_registry={"url": url}))  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sc.monitor.report("3").outcomes < 4:
            sc.poll(0.2)
    finally:
        sc.consumer.close()
    assert not sc.state.bad_records, sc.state.bad_records  # was: 8 x DecodeError, no join
    report = sc.monitor.report("3")
    assert (report.outcomes, report.frauds) == (4, 2)
    assert report.average_precision == pytest.approx(1.0)
    assert len(sc.buffer) == 4 and sc.live_version == "3"


def test_resume_offsets_reads_confluent_format_outputs(client, prefix, schema_registry_url) -> None:  # noqa: ANN001
    make_topics(client, prefix, partitions=1)
    out = prefix + T.FRAUD_FLAGS
    url = schema_registry_url
    flags = Codec("fraud_flag", registry=registry_client({"url": url}))
    produce_records(client, out, [(b"c1", flags.encode(_flag(i), "confluent"))
                                  for i in (3, 7, 5)])  # fmt: skip
    seen = resume_offsets(client, out, "fraud_flag", "transactions", [0],
                          registry={"url": url}, timeout=15)  # fmt: skip
    assert seen == {0: 8}  # was: {} (every record undecodable: the guard silently did nothing)

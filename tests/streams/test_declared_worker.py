"""A declared family's worker end to end on a real broker (each backend): a family declared in
a TOML file here (its own schema with a channel, windows over a merchant key, chargebacks after
a delay), its topics created from the declaration, a signed model announced under its name; the
worker scores every event, naming the model, exactly as offline ``featurize`` + the same model
does, and writes bad events and bad labels to the dead-letter topics with their reasons."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from finscore.families import load_family
from finscore.schemas import topics as T
from finscore.streams.admin import ensure_topics
from finscore.streams.declared import family_topics
from tests.streams.kit import (
    consume_all,
    decode_all,
    produce_records,
    publish,
    running,
    worker_config,
)
from tests.streams.test_declared_pipeline import (
    DAY,
    admitted,
    chargeback_codec,
    chargebacks_of,
    family_artifact,
    offline_scores,
    payment_codec,
    payment_events,
    write_family,
)

pytestmark = pytest.mark.broker


def test_a_declared_family_is_scored_end_to_end(client, prefix, tmp_path: Path) -> None:  # noqa: ANN001
    path = write_family(tmp_path / "family")
    spec = load_family(path)
    model_updates = [t for t in T.catalog(1, prefix) if t.name == prefix + T.MODEL_UPDATES]
    # one partition: the merchant windows see the events in event-time order, as offline
    ensure_topics(client, [*family_topics(spec, 1, prefix), *model_updates])
    art = family_artifact(spec, "5")
    publish(client, prefix, art)

    now = int(time.time() * 1000)
    events = payment_events(600, end_ms=now - DAY, seed=21)
    labels = chargebacks_of(events, now_ms=now)
    pay, cb = payment_codec(), chargeback_codec()
    bad_label = {**labels[0], "payment_id": "bad-label", "chargeback": 7}
    produce_records(client, prefix + spec.label.topic,
                    [(r["merchant_id"].encode(), cb.encode(r)) for r in [*labels, bad_label]])  # fmt: skip
    future = {**events[0], "payment_id": "from-the-future", "event_time": now + 48 * 3_600_000}
    bad = [b"\xc3\x01 not a payment", pay.encode(future)]
    items = [(e["customer_id"].encode(), pay.encode(e)) for e in events]
    items[300:300] = [(b"c0", v) for v in bad]
    produce_records(client, prefix + spec.input.topic, items)

    cfg = worker_config(client, prefix, stream="family", family_path=path)
    with running(cfg) as w:
        assert w.model_name == spec.name
        scores = decode_all(consume_all(client, prefix + spec.output.topic, len(events),
                                        settle=1.0), "family_score")  # fmt: skip
        dead = decode_all(consume_all(client, prefix + T.dlq(spec.input.topic), len(bad)),
                          "dead_letter")  # fmt: skip
        dead_labels = decode_all(consume_all(client, prefix + T.dlq(spec.label.topic), 1),
                                 "dead_letter")  # fmt: skip
        assert w.health()["model"] == {"name": spec.name, "version": "5"}

    by_id = {s["id"]: s for s in scores}  # at least once: a replay scores the same
    assert set(by_id) == {e["payment_id"] for e in events}
    assert {s["model_version"] for s in scores} == {"5"}
    assert {(s["model_name"], s["family"]) for s in scores} == {(spec.name, spec.name)}
    want = offline_scores(spec, admitted(art, spec), events, labels)
    got = [by_id[e["payment_id"]]["score"] for e in events]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert all(by_id[e["payment_id"]]["key"] == e["customer_id"] for e in events)

    assert sorted(d["value"] for d in dead) == sorted(bad)
    reasons = {d["error_type"]: d["reason"] for d in dead}
    assert set(reasons) == {"DecodeError", "ImpossibleValue"}
    assert "in the future" in reasons["ImpossibleValue"]
    assert [d["reason"] for d in dead_labels] == ["chargeback is 7, not 0 or 1"]

"""A declared family's worker stopped and started again (a new Worker, same group) on a real
broker (each backend), at-least-once and exactly-once: its windows over the topic's key come
back from the changelog, so every event is scored as an uninterrupted run (offline
``featurize`` + the same model) scores it; and an id reused with another time after the restart
is a ``DuplicateId`` dead letter, found in the restored state."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from finscore.families import load_family
from finscore.schemas import topics as T
from finscore.streams.admin import ensure_topics
from finscore.streams.declared import family_topics
from finscore.streams.declared.pipeline import DUPLICATE, DUPLICATE_ERROR
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
    FAMILY,
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

# The test family with its windows over the topic's key only (those over another key are not
# in the changelog): the merchant windows become customer windows.
KEYED = (
    FAMILY.replace('name = "card_payments"', 'name = "keyed_payments"')
    .replace('key = "merchant_id"\ndays = 1', 'key = "customer_id"\ndays = 3')
    .replace(
        'key = "merchant_id"\ndays = 7\nstat = "zscore"',
        'key = "customer_id"\ndays = 7\nstat = "zscore"',
    )
)


def _family(folder: Path) -> Path:
    write_family(folder)
    path = folder / "keyed_payments.toml"
    path.write_text(KEYED)
    return path


@pytest.mark.parametrize("eos", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_restarted_declared_worker_scores_as_an_uninterrupted_one(
    client,
    prefix,
    tmp_path: Path,
    eos: bool,  # noqa: ANN001
) -> None:
    path = _family(tmp_path / "family")
    spec = load_family(path)
    assert {f.key for f in spec.features if f.kind == "window"} == {"customer_id"}
    model_updates = [t for t in T.catalog(1, prefix) if t.name == prefix + T.MODEL_UPDATES]
    ensure_topics(client, [*family_topics(spec, 3, prefix), *model_updates])
    art = family_artifact(spec, "4")
    publish(client, prefix, art)

    now = int(time.time() * 1000)
    events = payment_events(900, end_ms=now - DAY, seed=23)
    labels = chargebacks_of(events, now_ms=now)
    pay, cb = payment_codec(), chargeback_codec()
    produce_records(client, prefix + spec.label.topic,
                    [(r["merchant_id"].encode(), cb.encode(r)) for r in labels])  # fmt: skip

    def produce(evs: list[dict]) -> None:
        produce_records(client, prefix + spec.input.topic,
                        [(e["customer_id"].encode(), pay.encode(e)) for e in evs])  # fmt: skip

    cfg = worker_config(client, prefix, stream="family", family_path=path, exactly_once=eos,
                        instance_id="w1")  # fmt: skip
    out_topic = prefix + spec.output.topic
    first, rest = events[:500], events[500:]
    produce(first)
    with running(cfg):
        consume_all(client, out_topic, len(first), read_committed=eos, settle=0.5)
    # a reused id: the first half's last event of a customer again, an hour later
    reused = {**first[-1], "event_time": first[-1]["event_time"] + 3_600_000}
    produce([*rest[:200], reused, *rest[200:]])
    with running(cfg) as w:
        assert w.stream.changelog_topic
        scores = decode_all(consume_all(client, out_topic, len(events), read_committed=eos,
                                        settle=1.0, timeout=60), "family_score")  # fmt: skip
        dead = decode_all(consume_all(client, prefix + T.dlq(spec.input.topic), 1,
                                      read_committed=eos), "dead_letter")  # fmt: skip
        changelog = w.stream.changelog_topic
    assert consume_all(client, changelog, 1, read_committed=eos), "nothing on the changelog"

    by_id: dict[str, float] = {}
    for s in scores:  # at least once: a replay scores the same
        assert by_id.setdefault(s["id"], s["score"]) == s["score"]
    assert set(by_id) == {e["payment_id"] for e in events}
    if eos:
        assert len(scores) == len(events)
    want = offline_scores(spec, admitted(art, spec), events, labels)
    got = [by_id[e["payment_id"]] for e in events]
    np.testing.assert_allclose(got, want, rtol=1e-6)

    [d] = dead
    assert d["error_type"] == DUPLICATE_ERROR and d["reason"].startswith(DUPLICATE)
    assert d["value"] == pay.encode(reused)

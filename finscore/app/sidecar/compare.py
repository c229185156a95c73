"""Champion vs challenger on the same events: the report to read before a promotion.

Reads ``fraud-flags`` (live) and ``fraud-flags-shadow`` (challenger) to their current end, joins
them by transaction id, adds the delayed labels known so far, and compares decisions, scores and
(where labels exist) average precision of both versions on exactly the same transactions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from finscore.models.evaluation import average_precision
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, registry_client
from finscore.schemas.exceptions import DecodeError


@dataclass(frozen=True)
class Comparison:
    live_version: str
    challenger_version: str
    compared: int
    labelled: int
    decision_agreement: float
    score_correlation: float
    mean_abs_score_diff: float
    live_flagged: int
    challenger_flagged: int
    live_ap: float | None
    challenger_ap: float | None


def _read_all(
    client: Mapping[str, str | int],
    topics: dict[str, str],
    timeout: float = 30.0,
    registry: Mapping[str, str] | None = None,
) -> dict[str, list[dict]]:
    c = Consumer({**client, "group.id": "finscore-compare", "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": "read_committed"})  # fmt: skip
    md = c.list_topics(timeout=10)
    tps = [
        TopicPartition(t, p, OFFSET_BEGINNING)
        for t in topics
        if t in md.topics
        for p in md.topics[t].partitions
    ]
    c.assign(tps)
    reg = registry_client(registry)
    codecs = {t: Codec(s, registry=reg) for t, s in topics.items()}
    out: dict[str, list[dict]] = {t: [] for t in topics}
    done: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(done) < len(tps) and time.monotonic() < deadline:
            for m in c.consume(10000, 0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done.add((m.topic(), m.partition()))
                    continue
                try:
                    out[m.topic()].append(codecs[m.topic()].decode(m.value()))
                except DecodeError:
                    continue
    finally:
        c.close()
    return out


def compare(
    client: Mapping[str, str | int], prefix: str = "", registry: Mapping[str, str] | None = None
) -> Comparison:
    """Compare the live fraud model with its shadow challenger on the same transactions.

    ``registry`` (a schema-registry client config) reads flags written in the Confluent wire
    format (workers with a registry set write them so)."""
    live_t, shadow_t, labels_t = (
        prefix + T.FRAUD_FLAGS,
        prefix + T.shadow(T.FRAUD_FLAGS),
        prefix + T.FRAUD_LABELS,
    )
    data = _read_all(
        client,
        {live_t: "fraud_flag", shadow_t: "fraud_flag", labels_t: "fraud_label"},
        registry=registry,
    )
    challenger = {f["transaction_id"]: f for f in data[shadow_t]}
    if not challenger:
        raise ValueError(
            "no challenger outputs yet: start one with `finscore models shadow fraud VERSION`"
        )
    live = {f["transaction_id"]: f for f in data[live_t] if f["transaction_id"] in challenger}
    ids = sorted(live)
    truth = {lab["transaction_id"]: int(lab["is_fraud"]) for lab in data[labels_t]}
    a = np.array([live[i]["score"] for i in ids])
    b = np.array([challenger[i]["score"] for i in ids])
    fa = np.array([live[i]["flagged"] for i in ids])
    fb = np.array([challenger[i]["flagged"] for i in ids])
    known = [k for k, i in enumerate(ids) if i in truth]
    y = np.array([truth[ids[k]] for k in known])
    has_both = len(known) and 0 < y.sum() < len(y)
    return Comparison(
        live_version=live[ids[0]]["model_version"] if ids else "",
        challenger_version=challenger[ids[0]]["model_version"] if ids else "",
        compared=len(ids),
        labelled=len(known),
        decision_agreement=float(np.mean(fa == fb)) if ids else float("nan"),
        score_correlation=float(np.corrcoef(a, b)[0, 1]) if len(ids) > 1 else float("nan"),
        mean_abs_score_diff=float(np.mean(np.abs(a - b))) if ids else float("nan"),
        live_flagged=int(fa.sum()),
        challenger_flagged=int(fb.sum()),
        live_ap=average_precision(y, a[known]) if has_both else None,
        challenger_ap=average_precision(y, b[known]) if has_both else None,
    )

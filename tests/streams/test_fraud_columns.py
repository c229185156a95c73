"""Fraud flags encoded three ways (row templates, columnar, per-record codec) are byte-identical
to ``Codec.encode``, whatever the batch holds: non-ASCII ids, long strings, negative times,
large offsets, several source topics."""

from __future__ import annotations

import numpy as np
import pytest

from finscore.schemas.codec import Codec
from finscore.streams.fraud import columns as FC
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message
from tests.artifacts import artifact

TX, FLAG = Codec("transaction"), Codec("fraud_flag")


def _columns(n: int, seed: int = 0) -> FC.TxColumns:
    rng = np.random.default_rng(seed)
    msgs = []
    for i in range(n):
        rec = {
            "transaction_id": f"t-{i}"
            if i % 5
            else f"tränsaction-€-{'x' * int(rng.integers(0, 300))}",
            "event_time": int(rng.integers(-(2**40), 2**42))
            if i % 11 == 0
            else 1_700_000_000_000 + i,
            "customer_id": f"c{int(rng.integers(0, 10**6))}",
            "terminal_id": "終端" if i % 13 == 0 else f"term-{i}",
            "amount": "12.34",
        }
        topic = "transactions" if i % 3 else "other-topic"
        offset = int(rng.integers(0, 2**62)) if i % 7 == 0 else i
        msgs.append(Message(topic, int(rng.integers(0, 300)), offset, b"k", TX.encode(rec), 1))
    cols, dead = FC.decode_transactions(TX, msgs)
    assert not dead and len(cols) == n
    return cols


@pytest.mark.parametrize("n", [0, 1, 37, 150])
def test_every_flag_encoding_path_gives_the_codecs_bytes(n: int) -> None:
    cols = _columns(n)
    scorer = Scorer(artifact("fraud", "7"))
    scores = np.random.default_rng(1).random(n)
    if n:
        scores[0] = 0.25  # exactly at the threshold: flagged
    enc = FC.FlagEncoder(FLAG)
    want = [
        FLAG.encode({
            "transaction_id": cols.transaction_id[i], "customer_id": cols.customer_id[i],
            "terminal_id": cols.terminal_id[i], "score": float(scores[i]),
            "flagged": bool(scores[i] >= 0.25), "threshold": 0.25, "model_name": "fraud",
            "model_version": "7", "event_time": int(cols.event_time[i]),
            "processing_time": 1_800_000_000_123, "source_topic": m.topic,
            "source_partition": m.partition, "source_offset": m.offset, "top_features": [],
        })
        for i, m in enumerate(cols.messages)
    ]  # fmt: skip
    template = enc._template(cols, scores, scorer, 0.25, 1_800_000_000_123)
    records = enc._records(cols, scores, scorer, 0.25, 1_800_000_000_123, None)
    assert template == records == want
    saved = FC.TEMPLATE_ENCODE_MAX
    try:
        FC.TEMPLATE_ENCODE_MAX = 0  # force the columnar codec
        columnar = enc.encode(cols, scores, scorer, 0.25, 1_800_000_000_123)
    finally:
        FC.TEMPLATE_ENCODE_MAX = saved
    if n >= FC.COLUMNAR_ENCODE_MIN:
        assert columnar == want
    assert enc.encode(cols, scores, scorer, 0.25, 1_800_000_000_123) == want


def test_flags_with_top_features_take_the_codec_paths_and_keep_them() -> None:
    cols = _columns(20)
    scorer = Scorer(artifact("fraud", "7"))
    top = [[{"feature": "amount", "value": 1.5, "contribution": -2.0}]] * 20
    got = FC.FlagEncoder(FLAG).encode(cols, np.full(20, 0.9), scorer, 0.5, 1, top)
    assert [FLAG.decode(v)["top_features"] for v in got] == top

"""The common peer for `finscore bench`: a per-event Faust app scoring with the same model.

This is what a hand-rolled Faust fraud scorer usually looks like: one agent, one event at a
time — decode, featurise, ``session.run`` on a single row, ``await topic.send``. It uses the
same codec, features and ONNX model as the finscore worker (its per-event feature code is
:mod:`finscore.app.bench.faust_peer_features`, tested equal to the worker's), so the benchmark
compares the execution model only. Run: ``python -m finscore.app.bench.faust_peer worker -l warning`` with
``FINSCORE_BENCH_PREFIX``, ``FINSCORE_BENCH_MODEL`` (an .onnx path) and
``FINSCORE_BOOTSTRAP_SERVERS`` set.
"""

from __future__ import annotations

import os

import faust
import numpy as np
import onnxruntime as ort

from finscore.app.bench.faust_peer_features import PerEventFraudFeatures
from finscore.features.fraud import FraudFeatureConfig, feature_columns
from finscore.schemas.codec import Codec
from finscore.schemas.topics import FRAUD_FLAGS, TRANSACTIONS

PREFIX = os.environ.get("FINSCORE_BENCH_PREFIX", "")
BOOTSTRAP = os.environ.get("FINSCORE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")

app = faust.App(
    f"{PREFIX}faust-naive",
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    topic_allow_declare=False,
    topic_disable_leader=True,
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    consumer_auto_offset_reset="earliest",
)
inputs = app.topic(PREFIX + TRANSACTIONS, key_type=bytes, value_type=bytes)
outputs = app.topic(PREFIX + FRAUD_FLAGS, key_type=bytes, value_type=bytes)

_tx = Codec("transaction")
_flag = Codec("fraud_flag")
_features = PerEventFraudFeatures(FraudFeatureConfig())
_session: ort.InferenceSession | None = None
# The model's own feature list (older models read fewer columns than are computed).
_columns = feature_columns(
    [n for n in os.environ.get("FINSCORE_BENCH_FEATURES", "").split(",") if n]
)


def session() -> ort.InferenceSession:
    global _session
    if _session is None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        _session = ort.InferenceSession(os.environ["FINSCORE_BENCH_MODEL"], sess_options=so)
    return _session


@app.agent(inputs)
async def score(stream: faust.StreamT) -> None:
    s = session()
    name = s.get_inputs()[0].name
    async for event in stream.events():
        tx = _tx.decode(event.value)
        x = _features.transform([tx])
        if _columns is not None:
            x = x[:, _columns]
        p = float(np.asarray(s.run(None, {name: x.astype(np.float32)})[0]).reshape(-1)[0])
        flag = {
            "transaction_id": tx["transaction_id"],
            "customer_id": tx["customer_id"],
            "terminal_id": tx["terminal_id"],
            "score": p,
            "flagged": p >= 0.5,
            "threshold": 0.5,
            "model_name": "fraud",
            "model_version": "bench",
            "event_time": tx["event_time"],
            "processing_time": 0,
            "source_topic": event.message.topic,
            "source_partition": event.message.partition,
            "source_offset": event.message.offset,
            "top_features": [],
        }
        await outputs.send(key=event.key, value=_flag.encode(flag))


if __name__ == "__main__":
    app.main()

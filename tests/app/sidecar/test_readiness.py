"""Issue 16: the demo's sidecar started recompressing with almost no labelled data and died in
``np.quantile`` (IndexError), invisibly. It now waits for a documented minimum of labelled
transactions in each split, and says so in its status (``/health``)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.app.sidecar.status import StatusServer
from tests.streams.kit import make_topics

pytestmark = pytest.mark.broker


def _label(i: int, day_ms: int = 86_400_000) -> dict:
    return {"transaction_id": f"t{i}", "tx_time": 1_700_000_000_000 + i * day_ms // 40,
            "customer_id": f"c{i % 13}", "terminal_id": f"k{i % 17}", "amount": 12.5,
            "is_fraud": i % 25 == 0}  # fmt: skip


def test_a_recompression_with_too_little_labelled_data_waits_and_says_so(
    client,
    prefix,
    tmp_path,  # noqa: ANN001
) -> None:
    make_topics(client, prefix, partitions=1)
    sc = Sidecar(SidecarConfig(client=client, topic_prefix=prefix, cooldown_s=0,
                               registry_dir=tmp_path / "registry",
                               reports_dir=tmp_path / "reports"))  # fmt: skip
    try:
        for i in range(300):  # a few simulated days: the splits are all but empty
            sc.buffer.add(_label(i))
        record = sc.recompress("command: fraud")
        assert record["outcome"] == "waiting", record
        assert "labelled" in record["why"]
        status = sc.status()
        assert status["state"].startswith("waiting for labelled data"), status
        assert status["labelled"] == 300 and status["min_labelled"] == sc.cfg.min_labelled
        # a failed run's error is shown by the status server (demo, dashboard, Docker)
        sc.state.recompressions.append({"reason": "x", "outcome": "error", "why": "IndexError: y"})
        server = StatusServer(sc.status).start()
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as r:  # noqa: S310
                doc = json.loads(r.read())
        finally:
            server.stop()
        assert doc["last_error"] == "IndexError: y" and doc["last_outcome"] == "error"
    finally:
        sc.consumer.close()

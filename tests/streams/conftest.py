"""Fixtures shared by the stream tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from finscore.app.broker import KafkaCluster, kafka_unavailable
from tests.conftest import selected_backends


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaCluster]:
    """A 3-node Apache Kafka cluster for one test module (skipped with the reason where the
    Apache Kafka backend is not selected or cannot run)."""
    if "kafka" not in selected_backends(request.config):
        pytest.skip("the Apache Kafka backend is not selected")
    reason = kafka_unavailable()
    if reason is not None:
        pytest.skip(f"Apache Kafka backend: {reason}")
    # A crashed node is fenced after broker.session.timeout.ms (9 s by default): 3 s here.
    fast = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}
    with KafkaCluster(3, log_dir=tmp_path_factory.mktemp("cluster"), config=fast) as c:
        yield c

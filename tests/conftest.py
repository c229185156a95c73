"""Shared fixtures: one embedded broker per test session (real Tansu, no mocks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from finscore.broker import EmbeddedBroker, free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free port for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as b:
        yield b


@pytest.fixture
def client(broker: EmbeddedBroker) -> dict[str, str | int]:
    """librdkafka client settings for the session broker."""
    return {"bootstrap.servers": broker.bootstrap}


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix so tests sharing the broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:8]}-"

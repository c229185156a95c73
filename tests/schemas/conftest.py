"""Fixtures of the schema tests: a local schema-registry HTTP server and real clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.schemas.registry_server import RegistryServer


@pytest.fixture(scope="module")
def registry_server() -> Iterator[RegistryServer]:
    """A stand-in Confluent Schema Registry (real HTTP on 127.0.0.1) for this module's tests."""
    server = RegistryServer()
    with server:
        yield server


@pytest.fixture
def registry_client(registry_server: RegistryServer) -> Callable[[], Any]:
    """Builds a fresh real ``SchemaRegistryClient`` (own cache) talking to the local server."""
    sr = pytest.importorskip(
        "confluent_kafka.schema_registry",
        reason="confluent-kafka[schemaregistry] extras (certifi, httpx2, authlib, cachetools) "
        "not installed",
        exc_type=ImportError,
    )
    return lambda: sr.SchemaRegistryClient({"url": registry_server.url})

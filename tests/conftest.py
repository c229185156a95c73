"""Shared fixtures: one real broker per backend per test session (no mocks).

Every test that uses ``broker`` (or ``client``) runs once per backend: ``tansu`` (the embedded
broker, the demo's default) and ``kafka`` (Apache Kafka 4.4 in KRaft mode from the jars that
``make setup`` fetched). Choose with ``--backends tansu,kafka`` or ``$FINSCORE_TEST_BACKENDS``
(default: both); ``-m "not kafka"`` deselects the Apache Kafka runs. Where Java 17+ or the jars
are missing, the Apache Kafka runs are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from finscore.app.broker import ApacheKafkaBroker, EmbeddedBroker, free_port, kafka_unavailable

BACKENDS = ("tansu", "kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=None,
        help="comma-separated broker backends for the broker tests: tansu, kafka "
        "(default: $FINSCORE_TEST_BACKENDS, else both)",
    )


def selected_backends(config: pytest.Config) -> list[str]:
    """The backends the broker tests run on, from ``--backends`` or the environment."""
    raw = config.getoption("--backends") or os.environ.get("FINSCORE_TEST_BACKENDS") or ""
    names = [n.strip() for n in raw.split(",") if n.strip()] or list(BACKENDS)
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown broker backends {unknown}; choose from {BACKENDS}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" in metafunc.fixturenames:
        metafunc.parametrize(
            "broker", selected_backends(metafunc.config), indirect=True, scope="session"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("broker") == "kafka":
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker | ApacheKafkaBroker]:
    """A broker of the requested backend on a free port for the whole session."""
    backend = getattr(request, "param", "tansu")
    if backend == "kafka":
        reason = kafka_unavailable()
        if reason is not None:
            pytest.skip(f"Apache Kafka backend: {reason}")
        log = tmp_path_factory.mktemp("kafka") / "kafka.log"
        with ApacheKafkaBroker(port=free_port(), log_path=log) as k:
            yield k
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as b:
        yield b


@pytest.fixture
def backend(broker: EmbeddedBroker | ApacheKafkaBroker) -> str:
    """Name of the session broker's backend: "tansu" or "kafka"."""
    return "kafka" if isinstance(broker, ApacheKafkaBroker) else "tansu"


@pytest.fixture
def client(broker: EmbeddedBroker | ApacheKafkaBroker) -> dict[str, str | int]:
    """librdkafka client settings for the session broker."""
    return {"bootstrap.servers": broker.bootstrap}


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix so tests sharing the broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real schema registry's Confluent API URL for the session: the one at
    FINSCORE_TEST_SCHEMA_REGISTRY_URL, else Apicurio Registry built by ``make setup``
    (:mod:`tests.schemas.apicurio`); skipped, with the reason, where neither can run."""
    import os

    from tests.schemas.apicurio import ApicurioRegistry, unavailable

    if os.environ.get("FINSCORE_TEST_SCHEMA_REGISTRY_URL"):
        yield os.environ["FINSCORE_TEST_SCHEMA_REGISTRY_URL"]
        return
    why = unavailable()
    if why:
        pytest.skip(why)
    log = tmp_path_factory.mktemp("registry") / "apicurio.log"
    with ApicurioRegistry(log_path=log) as reg:
        yield reg.url

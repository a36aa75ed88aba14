"""Shared pytest fixtures.

`broker`: a Kafka broker for the whole session. By default a private Apache Kafka
(single-node KRaft, from scripts/kafka.sh) on free loopback ports, with SCRAM and TLS
listeners beside the plain one, stopped at the end. Set FRESHET_TEST_BROKERS
(e.g. "127.0.0.1:9092") to run against an existing cluster instead (the secure-listener
tests are then skipped unless it was started the same way).
"""

from __future__ import annotations

import os

import pytest

import kafka_util
from kafka_util import Broker

# The session's broker, kept here so the terminal summary can show its log.
_broker: Broker | None = None


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    global _broker
    external = os.environ.get("FRESHET_TEST_BROKERS", "").strip()
    if external:
        b = Broker(external)
        kafka_util.wait_ready(b, timeout=30)
        yield b
        return

    _broker = kafka_util.start_kafka(tmp_path_factory.mktemp("kafka"), secure=True)
    try:
        yield _broker
    finally:
        died = not _broker.alive()
        _broker.stop()
        if died:
            # Its log is printed by pytest_terminal_summary below.
            pytest.fail(
                f"the broker died during the session (exit {_broker.process.returncode})",
                pytrace=False,
            )


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name derived from the test's name (the topic is not created)."""
    return kafka_util.unique_topic(request.node.name)


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:
    # A failing run shows what the broker said; a passing one stays quiet.
    if _broker is not None and exitstatus != 0:
        terminalreporter.section(f"broker log ({_broker.log_path})")
        terminalreporter.write_line(_broker.log_tail(100) or "(empty)")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # The MCP SDK runs on anyio; asyncio is what agents use.
    return "asyncio"


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory):
    """A real schema registry for the session: Apicurio Registry (scripts/schema_registry.sh)
    on a free loopback port, or the one at FRESHET_TEST_SCHEMA_REGISTRY. Yields the base URL
    of its Confluent Schema Registry REST API."""
    external = os.environ.get("FRESHET_TEST_SCHEMA_REGISTRY", "").strip()
    if external:
        yield external.rstrip("/")
        return
    import schema_registry_util

    registry = schema_registry_util.start(tmp_path_factory.mktemp("schema-registry"))
    try:
        yield registry.url
    finally:
        registry.stop()

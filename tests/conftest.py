"""Shared pytest fixtures.

`broker`: a Kafka-protocol broker for the whole session. By default a private tansu
(in-memory) on a free loopback port, stopped at the end. Set FRESHET_TEST_BROKERS
(e.g. "127.0.0.1:9092") to run against an existing broker such as Apache Kafka instead.
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

    _broker = kafka_util.start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield _broker
    finally:
        died = not _broker.alive()
        _broker.stop()
        if died:
            # Its log is printed by pytest_terminal_summary below.
            pytest.fail(
                f"tansu died during the session (exit {_broker.process.returncode})",
                pytrace=False,
            )


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name derived from the test's name (the topic is not created)."""
    return kafka_util.unique_topic(request.node.name)


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:
    # A failing run shows what the broker said; a passing one stays quiet.
    if _broker is not None and exitstatus != 0:
        terminalreporter.section(f"tansu log ({_broker.log_path})")
        terminalreporter.write_line(_broker.log_tail(100) or "(empty)")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # The MCP SDK runs on anyio; asyncio is what agents use.
    return "asyncio"

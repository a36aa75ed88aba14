"""Feedback while catching up at start: progress lines in the log, a `catch_up` object per
collection in `list_collections`, and an MCP logging notification for clients that opted in.

A backlog is written before freshet starts, so the server spends a while replaying it: the
debug build the test command makes applies some 10,000–35,000 of these small records per
second (measured 2026-12-02), in batches, so with progress logged every 100 ms it is seen to
move.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

import kafka_util
from freshet_util import FreshetServer, write_config
from kafka_util import Producer

pytestmark = [
    pytest.mark.anyio,
    # MCP logging is deprecated in 2026-07-28 (SEP-2577); these tests are about it on purpose.
    pytest.mark.filterwarnings("ignore:The logging capability is deprecated"),
]
BACKLOG = 60_000


@pytest.fixture(scope="module")
def backlog(broker):
    topic = kafka_util.unique_topic("backlog")
    kafka_util.create_topic(broker, topic, partitions=2)
    records = [{"key": f"n{i}", "value": {"id": f"n{i}", "title": f"note {i}", "body": f"backlog entry {i}"},
                "partition": i % 2} for i in range(BACKLOG)]
    with Producer(broker) as p:
        p.send_many(topic, records)
    return topic


def start_server(broker, topic, tmp_path) -> FreshetServer:
    config = write_config(
        tmp_path / "freshet.toml",
        {"kafka": {"brokers": broker.bootstrap}, "snapshot": {"interval_ms": 0}},
        [{"name": "kb", "topics": [topic], "id_field": "id", "title_field": "title"}],
    )
    return FreshetServer(config, tmp_path, env={"FRESHET_SERVER__PROGRESS_LOG_INTERVAL_MS": "100"})


def wait_live(server: FreshetServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.02)
    raise TimeoutError(server.log())


def ready(server: FreshetServer) -> bool:
    return httpx2.get(f"{server.url}/readyz", timeout=2).status_code == 200


async def test_catch_up_is_logged_listed_and_notified(broker, backlog, tmp_path):
    server = start_server(broker, backlog, tmp_path)
    try:
        wait_live(server)
        notes: list[types.LoggingMessageNotificationParams] = []

        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            notes.append(params)

        seen = []  # catch_up objects answered while not ready
        async with httpx2.AsyncClient(timeout=30) as http:
            # A 2025-11-25 session opts in with logging/setLevel.
            async with Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy",
                              logging_callback=on_log) as client:
                await client.set_logging_level("warning")
                while not ready(server):
                    result = await client.call_tool("list_collections", {})
                    [kb] = result.structured_content["collections"]
                    if "catch_up" in kb and not ready(server):
                        seen.append(kb["catch_up"])
                    await asyncio.sleep(0.1)
                after = (await client.call_tool("list_collections", {})).structured_content
        assert seen, f"list_collections never showed catch_up while not ready:\n{server.log()[-3000:]}"
        for c in seen:
            assert set(c) == {"applied", "remaining", "rate_per_s", "eta_s"}, c
            assert 0 <= c["applied"] <= 2 * BACKLOG and c["rate_per_s"] >= 0
        assert any(c["remaining"] and c["remaining"] > 0 for c in seen), seen
        assert any(c["rate_per_s"] > 0 and c["eta_s"] is not None for c in seen), seen
        assert max(c["applied"] for c in seen) > min(c["applied"] for c in seen), "progress moves"
        assert "catch_up" not in after["collections"][0], "gone once ready"

        assert notes, "a client that asked for warnings is told the replica is catching up"
        assert notes[0].level == "warning" and notes[0].logger == "freshet"
        assert "catching up" in notes[0].data["message"]
        assert notes[0].data["collections"][0]["collection"] == "kb"
        assert set(notes[0].data["collections"][0]["catch_up"]) >= {"applied", "remaining", "eta_s"}
        deadline = time.monotonic() + 5
        while "caught up: " not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert server.stop() == 0
    log = server.log()
    lines = re.findall(rf"catching up kb \({re.escape(backlog)}\): (\d+) applied, (\d+|unknown \(.*?\)) remaining, "
                       rf"(\d+) records/s, ETA (\d+ s|unknown)", log)
    assert len(lines) >= 2, log[-3000:]
    done = re.search(r"caught up: (\d+) records in ([0-9.]+) s \((\d+) records/s\)", log)
    assert done, log[-3000:]
    # Exactly the backlog: nothing re-read, nothing skipped.
    assert int(done.group(1)) == BACKLOG
    assert log.count("caught up: ") == 1, "one final line"


async def test_notifications_need_an_opt_in_and_stop_once_ready(broker, backlog, tmp_path):
    """2026-07-28 clients opt in per request (`_meta` logLevel); without it nothing is sent,
    and once caught up there is nothing to say."""
    server = start_server(broker, backlog, tmp_path)
    try:
        wait_live(server)
        quiet: list = []
        told: list = []

        async def on_quiet(params) -> None:
            quiet.append(params)

        async def on_told(params) -> None:
            told.append(params)

        async with httpx2.AsyncClient(timeout=30) as http:
            url = server.mcp_url
            async with Client(streamable_http_client(url, http_client=http), logging_callback=on_quiet) as a, \
                    Client(streamable_http_client(url, http_client=http), logging_callback=on_told,
                           log_level="warning") as b:
                await a.call_tool("search", {"query": "backlog"})
                await b.call_tool("search", {"query": "backlog"})
                assert not ready(server), "the backlog should take longer than these calls"
                server.wait_ready()
                during = len(told)
                await b.call_tool("search", {"query": "backlog"})
        assert quiet == []
        assert during >= 1 and told[0].level == "warning", told
        assert len(told) == during, "nothing once caught up"
    finally:
        assert server.stop() == 0

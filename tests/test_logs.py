"""What `freshet serve` logs by default: freshet's own lines in one format, no library line per
request, and an unreachable broker called so, once, in the log and in /readyz."""

from __future__ import annotations

import re
import time

import httpx2
import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import Producer, free_port
from netutil import Proxy

pytestmark = pytest.mark.anyio
# Every line freshet writes: `2026-12-02T08:11:34.542198Z  INFO target: message`.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z +(TRACE|DEBUG|INFO|WARN|ERROR) \S+: ")


def config_for(broker_bootstrap: str, topic: str, work) -> object:
    return write_config(work / "freshet.toml", {"kafka": {"brokers": broker_bootstrap}},
                        [{"name": "notes", "topics": [topic], "id_field": "id"}])


async def test_default_log_has_no_line_per_request(broker, tmp_path):
    topic = kafka_util.unique_topic("logs")
    kafka_util.create_topic(broker, topic)
    with Producer(broker) as p:
        p.send(topic, key="n1", value={"id": "n1", "text": "quiet logs please"})
    # FRESHET_LOG empty: the default filter.
    srv = FreshetServer(config_for(broker.bootstrap, topic, tmp_path), tmp_path, env={"FRESHET_LOG": ""})
    try:
        srv.wait_ready()
        deadline = time.monotonic() + 10
        while "caught up:" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.1)  # the catch-up summary follows readiness
        before = srv.log().splitlines()
        for mode in ("auto", "legacy"):  # stateless requests and a 2025-11-25 session
            async with http_client(srv.mcp_url, mode=mode) as client:
                for _ in range(3):
                    await call(client, "search", {"query": "quiet", "mode": "bm25"})
        time.sleep(0.5)
        after = srv.log().splitlines()
    finally:
        assert srv.stop() == 0
    assert after == before, "\n".join(after[len(before):])
    assert not [line for line in after if not LOG_LINE.match(line)], "\n".join(after)
    assert "caught up with the stream: ready" in "\n".join(after)


def test_unreachable_broker_is_reported_as_such_once(broker, tmp_path):
    topic = kafka_util.unique_topic("unreachable")
    kafka_util.create_topic(broker, topic)
    with Producer(broker) as p:
        p.send(topic, key="n1", value={"id": "n1", "text": "behind a proxy"})
    broker_port = int(broker.bootstrap.rsplit(":", 1)[1])
    proxy = Proxy(free_port(), broker_port)
    proxy.cut()  # nothing listens on the proxy's port: the broker is unreachable
    srv = FreshetServer(config_for(f"127.0.0.1:{proxy.port}", topic, tmp_path), tmp_path,
                        env={"FRESHET_LOG": "", "FRESHET_SERVER__PROGRESS_LOG_INTERVAL_MS": "500"})
    try:
        deadline = time.monotonic() + 30
        readyz = None
        while time.monotonic() < deadline:
            try:
                readyz = httpx2.get(f"{srv.url}/readyz", timeout=2)
            except httpx2.HTTPError:
                readyz = None
            if readyz is not None and readyz.text.startswith("broker unreachable"):
                break
            time.sleep(0.2)
        assert readyz is not None and readyz.status_code == 503, srv.log()
        assert re.match(r"broker unreachable for \d+ s: .*brokers are down", readyz.text), readyz.text
        time.sleep(3)  # long enough for catch-up progress lines (every 0.5 s) and retries
        down_log = srv.log()
        proxy.restore()
        srv.wait_ready(60)
        assert httpx2.get(f"{srv.url}/readyz", timeout=2).text == "ready\n"
        time.sleep(0.5)
        log = srv.log()
    finally:
        proxy.close()
        assert srv.stop() == 0
    lines = log.splitlines()
    assert not [line for line in lines if not LOG_LINE.match(line)], log
    unreachable = [line for line in down_log.splitlines() if "broker unreachable" in line]
    assert len(unreachable) == 1 and " WARN " in unreachable[0], down_log
    # Not "catching up", nor a retry line every few seconds, while it is away.
    assert "catching up" not in down_log and "describing topics failed" not in down_log, down_log
    assert len([line for line in down_log.splitlines() if " WARN " in line]) <= 2, down_log
    assert len([line for line in lines if "broker reachable again" in line]) == 1, log

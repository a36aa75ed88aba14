"""Hardening against hostile callers, end to end: real broker, real `freshet serve`, the real
Python MCP client over streamable HTTP, raw sockets where a client would be too polite.

- Hostile queries (huge, or of very many distinct words) are refused with a tool error that
  names the bound, and while they run `/healthz` and a cheap search keep answering.
- A call that outlives `server.tool_timeout_ms` gets a tool error (a slow embedder stands in
  for any slow work: the fake OpenAI-compatible server below stalls on one marker word).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

import kafka_util
from freshet_util import FreshetServer, call, http_client, tool_error, write_config
from kafka_util import Producer

pytestmark = pytest.mark.anyio

DIM = 8
#: Query text containing this word makes the fake embedder stall.
STALL_WORD = "slowpoke"
STALL_SECONDS = 4.0
TOOL_TIMEOUT_MS = 1000


def fake_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 + 0.01 for b in digest[:DIM]]


class FakeEmbedder(BaseHTTPRequestHandler):
    """`POST /v1/embeddings` as OpenAI answers it; stalls when the stall word is asked for."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if any(STALL_WORD in text for text in inputs):
            time.sleep(STALL_SECONDS)
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
        out = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def embedder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbedder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def served(broker, embedder, tmp_path_factory):
    """`docs` (BM25 + vectors from the fake embedder) with 300 documents."""
    work = tmp_path_factory.mktemp("hardening")
    topic = kafka_util.unique_topic("hardening")
    kafka_util.create_topic(broker, topic)
    words = ["kafka", "stream", "offset", "replica", "tantivy", "vector", "freshness", "audit"]
    with Producer(broker, **{"linger.ms": 5}) as producer:
        producer.send_many(topic, [
            (f"d{i}", {"id": f"d{i}", "title": f"Doc {i}",
                       "body": " ".join(words[(i + j) % len(words)] for j in range(30)) + f" number{i}"})
            for i in range(300)
        ])
    config = write_config(work / "freshet.toml", {
        "server": {"data_dir": str(work / "data"), "tool_timeout_ms": TOOL_TIMEOUT_MS},
        "kafka": {"brokers": broker.bootstrap},
    }, [{
        "name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
        "text_fields": ["title", "body"],
        "embedding": {"provider": "openai", "url": embedder, "model": "fake"},
    }])
    server = FreshetServer(config, work)
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


async def refused(client, args: dict[str, Any]) -> str:
    """The error text of a search that must fail (without echoing a huge query)."""
    result = await client.call_tool("search", args)
    assert result.is_error, f"a {len(args['query'])}-byte query was served"
    return result.content[0].text


async def test_hostile_queries_are_refused_naming_the_bound(served):
    many_words = " ".join(f"w{i}" for i in range(40_000))  # ~270 KB: past max_query_bytes
    some_words = " ".join(f"w{i}" for i in range(200))     # ~1 KB, 200 distinct terms
    async with http_client(served.mcp_url) as client:
        error = await refused(client, {"query": many_words, "mode": "bm25"})
        assert "server.max_query_bytes" in error and "16384" in error, error
        error = await refused(client, {"query": some_words, "mode": "bm25"})
        assert "server.max_query_terms" in error and "200 distinct terms" in error, error
        # Within the bounds, a long query is served.
        ok = await call(client, "search", {"query": " ".join(["kafka"] * 2000), "mode": "bm25", "k": 3})
        assert len(ok["results"]) == 3


async def test_health_and_cheap_search_answer_while_hostile_queries_run(served):
    hostile = [
        " ".join(f"h{i}" for i in range(600_000)),   # ~4.5 MB of distinct words
        " ".join(f"h{i}" for i in range(40_000)),
        " ".join(f"q{i}" for i in range(127)) + " kafka",  # at the term bound: served
    ]
    stop = anyio.Event()
    hostile_calls = 0
    errors: set[str] = set()  # JSON-RPC errors are an answer too (e.g. a body over the limit)

    async def attacker(query: str) -> None:
        nonlocal hostile_calls
        async with http_client(served.mcp_url) as client:
            while not stop.is_set():
                try:
                    await client.call_tool("search", {"query": query, "mode": "bm25"})
                except MCPError as e:
                    errors.add(str(e))
                hostile_calls += 1

    health: list[float] = []
    searches: list[float] = []
    async with anyio.create_task_group() as tg:
        for query in hostile * 2:
            tg.start_soon(attacker, query)
        await anyio.sleep(1.0)
        async with httpx2.AsyncClient(timeout=10) as probe, http_client(served.mcp_url) as client:
            for _ in range(20):
                started = time.monotonic()
                assert (await probe.get(f"{served.url}/healthz")).status_code == 200
                health.append(time.monotonic() - started)
                started = time.monotonic()
                found = await call(client, "search", {"query": "replica offset", "mode": "bm25", "k": 5})
                searches.append(time.monotonic() - started)
                assert len(found["results"]) == 5
                await anyio.sleep(0.1)
        stop.set()
    assert hostile_calls >= 6, "the attackers should have got answers too"
    # Generous bounds for a shared CI machine: before the fix /healthz stalled for 30+ s.
    assert max(health) < 2.0, health
    assert max(searches) < 5.0, searches
    metrics = httpx2.get(f"{served.url}/metrics").text
    assert 'freshet_limit_refusals_total{limit="server.max_query_terms"}' in metrics


async def test_a_call_past_its_deadline_gets_a_tool_error_and_others_go_on(served):
    async with http_client(served.mcp_url) as client:
        started = time.monotonic()
        error = await tool_error(client, "search", {"query": f"{STALL_WORD} kafka", "mode": "hybrid"})
        elapsed = time.monotonic() - started
        assert "server.tool_timeout_ms" in error, error
        assert elapsed < STALL_SECONDS, f"the deadline did not cut the call short ({elapsed:.1f} s)"
        found = await call(client, "search", {"query": "kafka", "mode": "bm25", "k": 2})
        assert len(found["results"]) == 2

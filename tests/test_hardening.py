"""Hardening against hostile callers, end to end: real broker, real `freshet serve`, the real
Python MCP client over streamable HTTP, raw sockets where a client would be too polite.

- Hostile queries (huge, or of very many distinct words) are refused with a tool error that
  names the bound, and while they run `/healthz` and a cheap search keep answering.
- A call that outlives `server.tool_timeout_ms` gets a tool error (a slow embedder stands in
  for any slow work: the fake OpenAI-compatible server below stalls on one marker word).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx2
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from mcp.shared.exceptions import MCPError

import kafka_util
from freshet_util import FreshetServer, call, freshet_bin, http_client, mint_token, tool_error, write_config
from kafka_util import Producer

pytestmark = pytest.mark.anyio

DIM = 8
#: Query text containing this word makes the fake embedder stall.
STALL_WORD = "slowpoke"
STALL_SECONDS = 6.0
TOOL_TIMEOUT_MS = 2000


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


@contextlib.contextmanager
def embeddings_server(handler: type[BaseHTTPRequestHandler] = FakeEmbedder) -> Iterator[str]:
    """Serves `handler` on a free loopback port; yields its OpenAI-style base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def embedder():
    with embeddings_server() as url:
        yield url


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
    metrics_port = kafka_util.free_port()
    config = write_config(work / "freshet.toml", {
        "server": {"data_dir": str(work / "data"), "tool_timeout_ms": TOOL_TIMEOUT_MS,
                   "metrics_addr": f"127.0.0.1:{metrics_port}"},
        "kafka": {"brokers": broker.bootstrap},
    }, [{
        "name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
        "text_fields": ["title", "body"],
        "embedding": {"provider": "openai", "url": embedder, "model": "fake"},
    }])
    server = FreshetServer(config, work)
    server.metrics_url = f"http://127.0.0.1:{metrics_port}"
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
        while not stop.is_set():
            try:
                async with http_client(served.mcp_url) as client:
                    while not stop.is_set():
                        try:
                            await client.call_tool("search", {"query": query, "mode": "bm25"})
                        except MCPError as e:
                            errors.add(str(e))
                        hostile_calls += 1
            except Exception as e:  # noqa: BLE001 - a refused 4 MB body may reset the connection
                errors.add(type(e).__name__)
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
    metrics = httpx2.get(f"{served.metrics_url}/metrics").text
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


# --- every route guarded; connections, heads, bodies and sessions bounded ---------------

SECRET_ENV = "FRESHET_TEST_JWT_SECRET"
SECRET = "hardening-secret-" + "7a3e" * 8
ISSUER = "https://issuer.hardening.test"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "raw-test", "version": "1"}}}
LIMITS = {"header_read_timeout_ms": 1000, "max_connections": 20, "max_sessions": 5,
          "max_sessions_per_principal": 3, "session_idle_timeout_ms": 2000}


@pytest.fixture(scope="module")
def limited(broker, tmp_path_factory):
    """JWT auth, small connection and session bounds, /metrics on the main listener."""
    work = tmp_path_factory.mktemp("limited")
    topic = kafka_util.unique_topic("limited")
    kafka_util.create_topic(broker, topic)
    with Producer(broker) as producer:
        producer.send_many(topic, [(f"d{i}", {"id": f"d{i}", "body": f"kafka words {i}"}) for i in range(20)])
    config = write_config(work / "freshet.toml", {
        "server": {"data_dir": str(work / "data"), **LIMITS},
        "kafka": {"brokers": broker.bootstrap},
        "auth": {"mode": "jwt", "issuer": ISSUER, "audience": "freshet", "hs256_secret_env": SECRET_ENV},
    }, [{"name": "docs", "topics": [topic], "id_field": "id", "text_fields": ["body"]}])
    server = FreshetServer(config, work, env={SECRET_ENV: SECRET})
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


def token(sub: str, collections: list[str] | None = None) -> str:
    return mint_token(SECRET_ENV, SECRET, sub, collections=collections or ["*"], issuer=ISSUER, audience="freshet")


def test_every_route_checks_host_and_origin(served, limited):
    for server in (served, limited):
        for path in ("/healthz", "/readyz", "/metrics", "/mcp", "/.well-known/oauth-protected-resource"):
            res = httpx2.get(f"{server.url}{path}", headers={"Host": "evil.example"})
            assert res.status_code == 403 and "server.allowed_hosts" in res.text, (path, res.status_code, res.text)
            res = httpx2.get(f"{server.url}{path}", headers={"Origin": "https://evil.example"})
            assert res.status_code == 403 and "server.allowed_origins" in res.text, (path, res.status_code, res.text)
        assert httpx2.get(f"{server.url}/healthz", headers={"Origin": "http://localhost:3000"}).status_code == 200


def test_metrics_are_separate_or_behind_the_token(served, limited):
    # served: server.metrics_addr is set, so /metrics is only there, without auth.
    assert httpx2.get(f"{served.url}/metrics").status_code == 404
    assert "freshet_ready 1" in httpx2.get(f"{served.metrics_url}/metrics").text
    # limited: JWT on and no metrics_addr, so /metrics wants a token that may read everything.
    assert httpx2.get(f"{limited.url}/metrics").status_code == 401
    narrow = {"Authorization": f"Bearer {token('narrow', ['other'])}"}
    assert httpx2.get(f"{limited.url}/metrics", headers=narrow).status_code == 403
    full = {"Authorization": f"Bearer {token('ops')}"}
    assert "freshet_ready 1" in httpx2.get(f"{limited.url}/metrics", headers=full).text


def test_oversized_heads_and_bodies_are_refused_saying_which_limit(served):
    res = httpx2.post(served.mcp_url, headers=MCP_HEADERS, content=b"{" + b" " * (2 << 20) + b"}")
    assert res.status_code == 413 and "server.max_request_bytes" in res.text, res.text
    res = httpx2.get(f"{served.url}/healthz", headers={"X-Padding": "x" * 20_000})
    assert res.status_code == 431 and "server.max_header_bytes" in res.text, res.text


def raw_connection(server: FreshetServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def test_slow_and_idle_connections_are_closed_and_capped(limited):
    # Half-open requests: headers that never end. The cap answers the excess at once.
    held = []
    for _ in range(LIMITS["max_connections"]):
        sock = raw_connection(limited)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        held.append(sock)
    time.sleep(0.2)
    extra = raw_connection(limited)
    answer = extra.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 503") and "server.max_connections" in answer, answer
    # Within about the header-read timeout, every half-open connection is closed by freshet.
    started = time.monotonic()
    for sock in held:
        sock.settimeout(10)
        while sock.recv(4096):
            pass
    assert time.monotonic() - started < 5
    # An idle keep-alive connection is closed too.
    idle = raw_connection(limited)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"200 OK" in idle.recv(4096)
    idle.settimeout(10)
    started = time.monotonic()
    assert idle.recv(4096) == b""
    assert time.monotonic() - started < 5
    assert httpx2.get(f"{limited.url}/healthz").status_code == 200


def open_session(server: FreshetServer, sub: str) -> httpx2.Response:
    return httpx2.post(server.mcp_url, json=INITIALIZE, timeout=10,
                       headers={**MCP_HEADERS, "Authorization": f"Bearer {token(sub)}"})


def test_sessions_are_capped_per_principal_and_in_all_and_expire(limited):
    alice = [open_session(limited, "alice") for _ in range(3)]
    assert all(r.status_code == 200 and r.headers.get("mcp-session-id") for r in alice), alice
    res = open_session(limited, "alice")
    assert res.status_code == 503 and "server.max_sessions_per_principal" in res.text, res.text
    bob = [open_session(limited, "bob") for _ in range(2)]
    assert all(r.status_code == 200 for r in bob)
    res = open_session(limited, "carol")
    assert res.status_code == 503 and "server.max_sessions" in res.text, res.text
    # The refused session does not linger: using its id (if any leaked) finds nothing, and
    # idle sessions expire after server.session_idle_timeout_ms.
    time.sleep(LIMITS["session_idle_timeout_ms"] / 1000 * 2)
    res = open_session(limited, "carol")
    assert res.status_code == 200, res.text
    gone = httpx2.post(limited.mcp_url, timeout=10, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                       headers={**MCP_HEADERS, "Authorization": f"Bearer {token('alice')}",
                                "Mcp-Session-Id": alice[0].headers["mcp-session-id"],
                                "MCP-Protocol-Version": "2025-11-25"})
    assert gone.status_code == 404, gone.text


# --- the audit log fails closed ---------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs to fill up (needs root, as in the project's CI container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    return filler


def metric(text: str, name: str) -> float:
    return next((float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ")), 0.0)


async def test_audit_on_a_full_disk_refuses_calls_and_verify_shows_the_gap(broker, tmp_path, small_disk):
    topic = kafka_util.unique_topic("fulldisk")
    kafka_util.create_topic(broker, topic)
    with Producer(broker) as producer:
        producer.send_many(topic, [(f"d{i}", {"id": f"d{i}", "body": f"kafka words {i}"}) for i in range(10)])
    checkpoints = tmp_path / "checkpoints.jsonl"
    config = write_config(tmp_path / "freshet.toml", {
        "server": {"data_dir": str(tmp_path / "data")},
        "kafka": {"brokers": broker.bootstrap},
        "audit": {"path": str(small_disk / "audit.jsonl"), "checkpoint_path": str(checkpoints),
                  "checkpoint_interval_ms": 100},
    }, [{"name": "docs", "topics": [topic], "id_field": "id", "text_fields": ["body"]}])
    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready(timeout=120)
        search = {"query": "kafka", "mode": "bm25", "k": 3}
        async with http_client(server.mcp_url) as client:
            assert len((await call(client, "search", search))["results"]) == 3
            filler = fill(small_disk)
            # The audit file's last page may still hold a line or two.
            for _ in range(8):
                try:
                    await call(client, "search", search)
                except MCPError:
                    break
            for _ in range(5):
                with pytest.raises(MCPError) as refused:
                    await client.call_tool("search", search)
                assert "audit" in str(refused.value.error.message) and "refuse" in refused.value.error.message
            ready = httpx2.get(f"{server.url}/readyz")
            assert ready.status_code == 503 and "audit log cannot be written" in ready.text, ready.text
            metrics = httpx2.get(f"{server.url}/metrics").text
            assert metric(metrics, "freshet_audit_write_failures_total") >= 5
            assert metric(metrics, "freshet_audit_refused_calls_total") >= 5
            assert metric(metrics, "freshet_audit_healthy") == 0
            filler.unlink()
            assert len((await call(client, "search", search))["results"]) == 3
            assert httpx2.get(f"{server.url}/readyz").status_code == 200
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    audit_file = small_disk / "audit.jsonl"
    verify = [str(freshet_bin()), "audit", "verify", "--checkpoints", str(checkpoints), str(audit_file)]
    done = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "incomplete" in done.stdout and "lost: seq" in done.stdout, done.stdout
    # Cutting off the tail is caught by the head checkpoints (the chain alone cannot tell).
    lines = audit_file.read_text().splitlines()
    audit_file.write_text("\n".join(lines[:-1]) + "\n")
    done = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "tail was truncated" in done.stdout, done.stdout


# --- dead letters too big for the dead-letter topic --------------------------------------

async def test_an_oversized_poison_record_gets_a_truncated_marked_dead_letter_copy(broker, tmp_path):
    source, dlq = kafka_util.unique_topic("bigsrc"), kafka_util.unique_topic("bigdlq")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # The source topic takes 8 MB records; the dead-letter topic keeps the broker's ~1 MB limit.
    for future in admin.create_topics([NewTopic(source, 1, 1, config={"max.message.bytes": "8000000"}),
                                       NewTopic(dlq, 1, 1)]).values():
        future.result(timeout=30)
    big = b"<not json>" + b"x" * 3_000_000
    with Producer(broker, **{"message.max.bytes": 8_000_000, "compression.type": "none"}) as producer:
        producer.send_many(source, [("big", big), ("ok", {"id": "ok", "body": "fine"})])
    config = write_config(tmp_path / "freshet.toml", {
        "server": {"data_dir": str(tmp_path / "data")},
        "kafka": {"brokers": broker.bootstrap, "dead_letter_topic": dlq},
    }, [{"name": "docs", "topics": [source], "id_field": "id", "text_fields": ["body"]}])
    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready(timeout=120)
        copies = kafka_util.consume(broker, dlq, count=1, timeout=30)
        assert len(copies) == 1, "the oversized record was not copied to the dead-letter topic"
        headers = {k: v.decode() for k, v in copies[0].headers}
        assert headers["freshet.truncated"] == "true"
        assert headers["freshet.original.value.size"] == str(len(big))
        assert headers["freshet.original.value.sha256"] == hashlib.sha256(big).hexdigest()
        assert headers["freshet.source.offset"] == "0" and headers["freshet.error.kind"] == "not_json"
        assert 0 < len(copies[0].value) < 1_000_000 and big.startswith(copies[0].value)
        metrics = httpx2.get(f"{server.url}/metrics").text
        assert metric(metrics, "freshet_dead_letter_truncated_total") == 1
        assert metric(metrics, "freshet_dead_letter_failures_total") == 0
    finally:
        server.stop()

"""Live context end to end: real broker, real `freshet serve` with JWT auth, real MCP
client (`mcp` 2.x) over streamable HTTP.

- filter operators (ranges on number and time fields, `ne`, `exists`, `any`/`all`, the
  built-in `event_time` and `indexed_at`) inside the retrievers, and their errors;
- the `changes` feed: apply order, cursors, paging, filters, tenants, expiry, restarts, audit;
- subscriptions, both protocol generations (2025-11-25 `resources/subscribe`, 2026-07-28
  `subscriptions/listen`), over HTTP and stdio: a subscriber hears about what changed after it
  subscribed, and never about another tenant's documents.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
import time
from urllib.parse import quote
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

import kafka_util
from freshet_util import (FreshetServer, call, freshet_bin, http_client, mint_token, serving, tool_error,
                          write_config)
from kafka_util import Producer

pytestmark = pytest.mark.anyio
SECRET_ENV = "FRESHET_TEST_LIVE_SECRET"
SECRET = "live-test-secret-" + "5a" * 16
ISSUER, AUDIENCE = "https://issuer.live.test", "freshet-live"
OLD, NEW = "2025-01-15T08:00:00Z", "2026-06-01T12:00:00Z"


@pytest.fixture(scope="module")
def topic(broker):
    name = kafka_util.unique_topic("live-tickets")
    kafka_util.create_topic(broker, name, partitions=2)
    return name


@pytest.fixture(scope="module")
def server(broker, topic, tmp_path_factory):
    work = tmp_path_factory.mktemp("live")
    config = write_config(
        work / "freshet.toml",
        {
            "kafka": {"brokers": broker.bootstrap},
            "auth": {"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "hs256_secret_env": SECRET_ENV},
        },
        [{
            "name": "tickets",
            "topics": [topic],
            "format": "json",
            "id_field": "id",
            "title_field": "title",
            "text_fields": ["title", "body"],
            "metadata_fields": ["priority", "tags", "status", "due", "urgent"],
            "tenant_field": "tenant",
            "event_time_field": "updated_at",
            "field_types": {"priority": "number", "due": "time", "urgent": "bool"},
            "changes": {"max_entries": 50},
        }],
    )
    with serving(config, work, env={SECRET_ENV: SECRET}) as srv:
        yield srv


def bearer(tenant: str) -> dict[str, str]:
    token = mint_token(SECRET_ENV, SECRET, sub=f"agent-{tenant}", collections=["tickets"], tenant=tenant,
                       issuer=ISSUER, audience=AUDIENCE)
    return {"Authorization": f"Bearer {token}"}


def ticket(doc_id: str, tenant: str, word: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "tenant": tenant, "title": f"Ticket {doc_id}", "body": f"{word} printer on fire",
            "updated_at": NEW, **fields}


async def ids(client, word: str, flt: dict, mode: str = "bm25", k: int = 50) -> list[str]:
    res = await call(client, "search", {"query": word, "collection": "tickets", "mode": mode, "k": k,
                                         "filter": flt, "consistency": "head"})
    return sorted(h["id"] for h in res["results"])


async def test_filter_operators_end_to_end(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    n = lambda i: f"f{i}-{word}"  # noqa: E731
    docs = [
        ticket(n(i), "acme", word, priority=i, tags=["printer"] + (["fire"] if i % 2 else []),
               due=f"2026-0{1 + i % 9}-01", updated_at=OLD if i < 3 else NEW, **({"status": "open"} if i < 5 else {}),
               urgent=i >= 6)
        for i in range(8)
    ]
    docs.append(ticket(n(99), "globex", word, priority=99, status="open"))
    with Producer(broker) as p:
        p.send_many(topic, [{"key": d["id"], "value": d, "partition": i % 2} for i, d in enumerate(docs)])
    async with http_client(server.mcp_url, headers=bearer("acme")) as client:
        assert await ids(client, word, {"priority": {"gte": 5}}) == [n(5), n(6), n(7)]
        assert await ids(client, word, {"priority": {"gt": 1, "lt": 4}}) == [n(2), n(3)]
        assert await ids(client, word, {"event_time": {"lt": "2026-01-01T00:00:00Z"}}) == [n(0), n(1), n(2)]
        assert len(await ids(client, word, {"indexed_at": {"gte": "now-10m"}})) == 8
        assert await ids(client, word, {"due": {"gte": "2026-07-01"}}) == [n(6), n(7)]
        assert await ids(client, word, {"status": {"ne": "open"}}) == [n(5), n(6), n(7)]
        assert await ids(client, word, {"status": {"exists": False}}) == [n(5), n(6), n(7)]
        assert await ids(client, word, {"tags": {"all": ["printer", "fire"]}}) == [n(1), n(3), n(5), n(7)]
        assert await ids(client, word, {"tags": {"any": ["fire", "x"]}, "priority": {"lte": 3}}) == [n(1), n(3)]
        assert await ids(client, word, {"urgent": True}) == [n(6), n(7)]
        # The tenant claim still narrows: globex's priority-99 ticket is never seen.
        assert await ids(client, word, {"priority": {"gte": 50}}) == []
        # Errors name the field, the type and what would fit.
        err = await tool_error(client, "search", {"query": word, "collection": "tickets",
                                                  "filter": {"status": {"gt": "a"}}})
        assert "`status` is a keyword field" in err and "field_types" in err
        err = await tool_error(client, "search", {"query": word, "collection": "tickets",
                                                  "filter": {"priority": {"gte": "high"}}})
        assert "`priority` (number): `gte` needs a number" in err
        err = await tool_error(client, "search", {"query": word, "collection": "tickets",
                                                  "filter": {"colour": {"exists": True}}})
        assert "on `colour`" in err and "priority (number)" in err and "event_time (time)" in err
        listing = await call(client, "list_collections", {})
        types = listing["collections"][0]["field_types"]
        assert types["priority"] == "number" and types["due"] == "time" and types["indexed_at"] == "time"
        # The tool's input schema documents the operators.
        tools = {t.name: t for t in (await client.list_tools()).tools}
        flt = tools["search"].input_schema["properties"]["filter"]
        ops = next(a for a in flt["additionalProperties"]["anyOf"] if a.get("type") == "object")["properties"]
        assert {"gt", "gte", "lt", "lte", "ne", "exists", "any", "all"} <= set(ops)


async def changes(client, **args) -> dict:
    return await call(client, "changes", {"collection": "tickets", **args})


async def wait_for_ids(client, word: str, want: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = await call(client, "search", {"query": word, "collection": "tickets", "mode": "bm25", "k": 100,
                                            "consistency": "head"})
        got = {h["id"] for h in res["results"]}
        if want <= got:
            return
        assert time.monotonic() < deadline, f"not visible: {want - got}"


async def test_change_feed_pages_filters_and_hides_other_tenants(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    async with http_client(server.mcp_url, headers=bearer("acme")) as acme, \
            http_client(server.mcp_url, headers=bearer("globex")) as globex:
        # Start from now: the cursor of a feed read to its end.
        start = await changes(acme, since="2000-01-01T00:00:00Z", limit=1000)
        while start["more"]:
            start = await changes(acme, since=start["next"], limit=1000)
        mark = start["next"]
        with Producer(broker) as p:
            p.send_many(topic, [
                {"key": f"c1-{word}", "value": ticket(f"c1-{word}", "acme", word, priority=1), "partition": 0},
                {"key": f"c2-{word}", "value": ticket(f"c2-{word}", "globex", word, priority=9), "partition": 1},
                {"key": f"c3-{word}", "value": ticket(f"c3-{word}", "acme", word, priority=7), "partition": 1},
                {"key": f"c1-{word}", "value": ticket(f"c1-{word}", "acme", word, priority=2), "partition": 0},
                {"key": f"c3-{word}", "value": None, "partition": 1},
            ])
        await wait_for_ids(acme, word, {f"c1-{word}"})
        await wait_for_ids(globex, word, {f"c2-{word}"})
        feed = await changes(acme, since=mark, include_text=True)
        got = [(c["id"], c["kind"]) for c in feed["changes"]]
        # Apply order within a partition; no globex change.
        assert sorted(got) == sorted([(f"c1-{word}", "upsert"), (f"c3-{word}", "upsert"), (f"c1-{word}", "upsert"),
                                      (f"c3-{word}", "delete")])
        p0 = [c for c in feed["changes"] if c["freshness"]["partition"] == 0]
        assert [c["metadata"]["priority"] for c in p0] == [1, 2]
        assert [c["current"] for c in p0] == [False, True]
        assert all(word in c["text"] for c in feed["changes"] if c["kind"] == "upsert")
        assert not any("text" in c for c in feed["changes"] if c["kind"] == "delete")
        assert feed["more"] is False and feed["truncated"] is False
        # Nothing new: the same cursor comes back, no changes.
        again = await changes(acme, since=feed["next"])
        assert again["changes"] == [] and again["next"] == feed["next"]
        # Paging with limit, and a filter.
        first = await changes(acme, since=mark, limit=2)
        assert len(first["changes"]) == 2 and first["more"] is True
        rest = await changes(acme, since=first["next"], limit=10)
        assert [c["id"] for c in first["changes"] + rest["changes"]] == [c["id"] for c in feed["changes"]]
        high = await changes(acme, since=mark, filter={"priority": {"gte": 5}})
        assert [(c["id"], c["kind"]) for c in high["changes"]] == [(f"c3-{word}", "upsert"), (f"c3-{word}", "delete")]
        # The other tenant sees only its own change.
        theirs = await changes(globex, since=mark)
        assert [c["id"] for c in theirs["changes"]] == [f"c2-{word}"]
        # A time as `since`, and bad input.
        by_time = await changes(acme, since=feed["changes"][0]["freshness"]["indexed_at"])
        assert {c["id"] for c in by_time["changes"]} >= {f"c1-{word}", f"c3-{word}"}
        err = await tool_error(acme, "changes", {"collection": "tickets", "since": "yesterday-ish"})
        assert "neither an RFC 3339 time nor a cursor" in err
        err = await tool_error(acme, "changes", {"collection": "tickets", "limit": 5000})
        assert "limit" in err


async def test_an_expired_cursor_says_to_re_sync(server, topic, broker):
    """The module's server keeps 50 changes (changes.max_entries)."""
    word = "zq" + uuid.uuid4().hex[:10]
    async with http_client(server.mcp_url, headers=bearer("acme")) as acme:
        page = await changes(acme, limit=1000)
        while page["more"]:
            page = await changes(acme, since=page["next"], limit=1000)
        mark = page["next"]
        with Producer(broker) as p:
            p.send_many(topic, [{"key": f"x{i}-{word}", "value": ticket(f"x{i}-{word}", "acme", word), "partition": i % 2}
                                for i in range(60)])
        await wait_for_ids(acme, word, {f"x{i}-{word}" for i in range(60)})
        err = await tool_error(acme, "changes", {"collection": "tickets", "since": mark})
        assert "expired cursor" in err and "re-sync" in err
        oldest = await changes(acme, limit=1000)
        assert oldest["truncated"] is True and len(oldest["changes"]) == 50
        assert any("truncated" in n for n in oldest["notes"])
    audit = [json.loads(line) for line in (server.config.parent / "data" / "audit.jsonl").read_text().splitlines()]
    calls = [a for a in audit if a.get("tool") == "changes" and a["outcome"] == "ok"]
    assert calls and any(r["id"] == f"x59-{word}" for a in calls for r in a["results"])
    failed = [a for a in audit if a.get("tool") == "changes" and a["outcome"] == "tool_error"]
    assert any("expired cursor" in a["error"] for a in failed)


async def test_a_cursor_survives_a_graceful_restart(broker, tmp_path):
    topic = kafka_util.unique_topic("live-restart")
    kafka_util.create_topic(broker, topic, partitions=1)
    config = write_config(tmp_path / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}}, [{
        "name": "tickets", "topics": [topic], "format": "json", "id_field": "id", "title_field": "title",
        "text_fields": ["title", "body"],
    }])
    with Producer(broker) as p:
        p.send_many(topic, [(f"r{i}", {"id": f"r{i}", "title": "t", "body": "before"}) for i in range(3)])
    srv = FreshetServer(config, tmp_path)
    try:
        srv.wait_ready()
        async with http_client(srv.mcp_url) as client:
            page = await changes(client)
            assert [c["id"] for c in page["changes"]] == ["r0", "r1", "r2"]
            cursor = page["next"]
            old = (await changes(client, limit=1))["next"]  # has seen r0 only
    finally:
        assert srv.stop() == 0
    with Producer(broker) as p:
        p.send(topic, key="r3", value={"id": "r3", "title": "t", "body": "after"})
    srv = FreshetServer(config, tmp_path)
    try:
        srv.wait_ready()
        async with http_client(srv.mcp_url) as client:
            after = await changes(client, since=cursor)
            assert [c["id"] for c in after["changes"]] == ["r3"] and after["truncated"] is False
            # A cursor older than what the restarted server applied before its history began.
            err = await tool_error(client, "changes", {"collection": "tickets", "since": old})
            assert "expired cursor" in err and "re-sync" in err
    finally:
        assert srv.stop() == 0


# --- subscriptions --------------------------------------------------------------------

QUIET_S = 1.5  # how long "no notification" is waited for, after the expected one arrived


class Updates:
    """Collects `notifications/resources/updated` from a 2025-11-25 connection."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict, float]] = []  # (uri, _meta, received at)

    async def __call__(self, message) -> None:
        message = getattr(message, "root", message)
        if getattr(message, "method", None) == "notifications/resources/updated":
            params = message.params
            meta = getattr(params, "meta", None) or {}
            if not isinstance(meta, dict):
                meta = meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(meta)
            self.seen.append((params.uri, meta, time.time()))

    def uris(self) -> set[str]:
        return {u for u, _, _ in self.seen}

    async def wait_for(self, uri: str, timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while uri not in self.uris():
                await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def legacy_http(url: str, headers: dict[str, str], updates: Updates):
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy",
                          message_handler=updates) as client:
            yield client


def uri(doc_id: str) -> str:
    return f"freshet://tickets/{doc_id}"


CHANGES = "freshet://tickets/changes"


async def test_2025_subscriber_hears_its_tenants_changes_only(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    mine, theirs, later = f"s1-{word}", f"s2-{word}", f"s3-{word}"
    updates = Updates()
    async with legacy_http(server.mcp_url, bearer("acme"), updates) as client:
        for u in (uri(mine), uri(theirs), CHANGES):
            await client.subscribe_resource(u)
        high = CHANGES + "?filter=" + quote('{"priority": {"gte": 5}}')
        await client.subscribe_resource(high)
        # Produced after subscribing: the globex document under an id the acme caller
        # watches, and acme's own.
        with Producer(broker) as p:
            p.send(topic, key=theirs, value=ticket(theirs, "globex", word, priority=9), partition=0)
            p.send(topic, key=mine, value=ticket(mine, "acme", word, priority=1), partition=1)
        await updates.wait_for(uri(mine))
        await updates.wait_for(CHANGES)
        await anyio.sleep(QUIET_S)
        assert uri(theirs) not in updates.uris(), "another tenant's document was announced"
        assert high not in updates.uris(), "the filtered feed announced a change that fails its filter"
        # The notification says when the change became searchable and when it was sent.
        meta = next(m for u, m, _ in updates.seen if u == uri(mine))
        assert meta["freshet/indexed_at"] <= meta["freshet/sent_at"]
        read = await client.read_resource(uri(mine))
        assert json.loads(read.contents[0].text)["document"]["metadata"]["priority"] == 1
        feed = json.loads((await client.read_resource(CHANGES)).contents[0].text)
        assert mine in [c["id"] for c in feed["changes"]] and theirs not in [c["id"] for c in feed["changes"]]
        # A matching change reaches the filtered feed; after unsubscribing, nothing more.
        await client.unsubscribe_resource(uri(mine))
        updates.seen.clear()
        with Producer(broker) as p:
            p.send(topic, key=later, value=ticket(later, "acme", word, priority=8), partition=0)
            p.send(topic, key=mine, value=ticket(mine, "acme", word, priority=2), partition=1)
        await updates.wait_for(high)
        await updates.wait_for(CHANGES)
        await anyio.sleep(QUIET_S)
        assert uri(mine) not in updates.uris()
        # Bad URIs and unreadable collections are errors that say what is wrong.
        with pytest.raises(Exception, match="freshet://"):
            await client.subscribe_resource("test://watched-resource")
        with pytest.raises(Exception, match="unknown collection"):
            await client.subscribe_resource("freshet://secret/changes")
    # Subscribing is audited like the tools: who, what, and the refusals.
    audit = [json.loads(line) for line in (server.config.parent / "data" / "audit.jsonl").read_text().splitlines()]
    subs = [a for a in audit if a.get("tool") == "resources/subscribe"]
    assert any(a["arguments"]["uri"] == uri(mine) and a["outcome"] == "ok"
               and a["principal"]["sub"] == "agent-acme" for a in subs)
    assert any(a["arguments"]["uri"] == "freshet://secret/changes" and a["outcome"] == "error" for a in subs)
    assert any(a.get("tool") == "resources/unsubscribe" and a["arguments"]["uri"] == uri(mine) for a in audit)


async def test_2026_listen_stream_hears_its_tenants_changes_only(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    mine, theirs = f"l1-{word}", f"l2-{word}"
    async with http_client(server.mcp_url, headers=bearer("acme")) as client:
        async with client.listen(resource_subscriptions=[uri(mine), uri(theirs), CHANGES]) as sub:
            assert set(sub.honored.resource_subscriptions) == {uri(mine), uri(theirs), CHANGES}
            with Producer(broker) as p:
                p.send(topic, key=theirs, value=ticket(theirs, "globex", word), partition=0)
                p.send(topic, key=mine, value=ticket(mine, "acme", word), partition=1)
            got: set[str] = set()
            with anyio.move_on_after(20):
                async for event in sub:
                    got.add(event.uri)
                    if {uri(mine), CHANGES} <= got:
                        break
            assert {uri(mine), CHANGES} <= got
            with anyio.move_on_after(QUIET_S):
                async for event in sub:
                    got.add(event.uri)
            assert uri(theirs) not in got


async def test_subscriptions_over_stdio_for_both_generations(broker, topic, tmp_path):
    config = write_config(tmp_path / "freshet.toml", {
        "kafka": {"brokers": broker.bootstrap},
        "auth": {"stdio": {"sub": "cli", "collections": ["tickets"], "tenant": "acme"}},
    }, [{"name": "tickets", "topics": [topic], "format": "json", "id_field": "id", "title_field": "title",
         "text_fields": ["title", "body"], "tenant_field": "tenant"}])
    word = "zq" + uuid.uuid4().hex[:10]
    params = StdioServerParameters(command=str(freshet_bin()), args=["stdio", "--config", str(config)],
                                   env={**os.environ, "FRESHET_LOG": "warn"}, cwd=str(tmp_path))
    updates = Updates()
    async with Client(params, mode="legacy", message_handler=updates) as legacy:
        await legacy.subscribe_resource(uri(f"o1-{word}"))
        await legacy.subscribe_resource(uri(f"o2-{word}"))
        with Producer(broker) as p:
            p.send(topic, key=f"o2-{word}", value=ticket(f"o2-{word}", "globex", word), partition=0)
            p.send(topic, key=f"o1-{word}", value=ticket(f"o1-{word}", "acme", word), partition=1)
        await updates.wait_for(uri(f"o1-{word}"), timeout=60)
        await anyio.sleep(QUIET_S)
        assert uri(f"o2-{word}") not in updates.uris()
    async with Client(params) as modern:
        async with modern.listen(resource_subscriptions=[CHANGES]) as sub:
            with Producer(broker) as p:
                p.send(topic, key=f"o3-{word}", value=ticket(f"o3-{word}", "acme", word), partition=0)
            with anyio.fail_after(60):
                async for event in sub:
                    assert event.uri == CHANGES
                    break


def test_the_readme_example_session_runs(server, topic, broker):
    """examples/live_session.py, the README's agent session: changes, subscribe, a change
    upstream, the notification, changes since the cursor."""
    import subprocess
    word = "zq" + uuid.uuid4().hex[:10]
    doc = f"e1-{word}"
    with Producer(broker) as p:
        p.send(topic, key=doc, value=ticket(doc, "acme", word, priority=3, status="open"), partition=0)
    token = bearer("acme")["Authorization"].split(" ", 1)[1]
    example = subprocess.Popen(
        [sys.executable, str(kafka_util.REPO_ROOT / "examples" / "live_session.py"), "--url", server.mcp_url,
         "--collection", "tickets", "--id", doc, "--token", token, "--wait", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    time.sleep(3)  # let it subscribe; the update below is what it waits for
    with Producer(broker) as p:
        p.send(topic, key=doc, value=ticket(doc, "acme", word, priority=5, status="escalated"), partition=0)
    out, err = example.communicate(timeout=max(5, deadline - time.monotonic() + 30))
    print(out)
    assert example.returncode == 0, err
    assert f"notifications/resources/updated freshet://tickets/" in out
    after = out.split("since: <next of the first call>")[1]
    assert doc in after and "upsert" in after


async def test_search_pages_with_a_cursor_and_ranks_by_recency(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    old = [ticket(f"r{i}-{word}", "acme", f"{word} {word} {word}", updated_at=OLD) for i in range(12)]
    new = [ticket(f"n{i}-{word}", "acme", word, updated_at=NEW) for i in range(3)]
    with Producer(broker) as p:
        p.send_many(topic, [{"key": d["id"], "value": d, "partition": i % 2} for i, d in enumerate(old + new)])
    async with http_client(server.mcp_url, headers=bearer("acme")) as client:
        args = {"query": word, "collection": "tickets", "mode": "bm25", "k": 5, "consistency": "head"}
        pages, cursor = [], None
        while True:
            res = await call(client, "search", {**args, **({"cursor": cursor} if cursor else {})})
            pages.append([h["id"] for h in res["results"]])
            cursor = res.get("next")
            if not cursor:
                break
        everything = await call(client, "search", {**args, "k": 50})
        assert sum(pages, []) == [h["id"] for h in everything["results"]] and len(pages) == 3
        err = await tool_error(client, "search", {**args, "query": "other words", "cursor": res.get("next") or
                                                  (await call(client, "search", args))["next"]})
        assert "belongs to another search" in err
        # Plain BM25 puts the old, wordier tickets first; recency on event_time the new ones.
        plain = await call(client, "search", {**args, "k": 3})
        assert all(h["id"].startswith("r") for h in plain["results"])
        recent = await call(client, "search", {**args, "k": 3,
                                               "recency": {"field": "event_time", "half_life": "365d", "weight": 0.8}})
        assert sorted(h["id"] for h in recent["results"]) == sorted(d["id"] for d in new)
        err = await tool_error(client, "search", {**args, "recency": {"half_life": "soon"}})
        assert "recency.half_life" in err


async def test_titles_icons_completions_and_cache_hints(server):
    from mcp_types import ResourceTemplateReference
    async with http_client(server.mcp_url, headers=bearer("acme")) as client:  # 2026-07-28
        assert client.protocol_version == "2026-07-28"
        info = client.server_info
        assert info.title and info.icons and info.icons[0].mime_type == "image/svg+xml"
        for t in (await client.list_tools()).tools:
            assert t.title and t.icons, t.name
        templates = await client.list_resource_templates()
        # Auth is on: answers depend on the caller, so only its own client may cache them.
        assert templates.cache_scope == "private" and templates.ttl_ms > 0
        read = await client.read_resource("freshet://tickets/changes")
        assert read.ttl_ms == 0 and read.cache_scope == "private"
        done = await client.complete(ResourceTemplateReference(type="ref/resource", uri="freshet://{collection}/{id}"),
                                     {"name": "collection", "value": "tic"})
        assert done.completion.values == ["tickets"]
        done = await client.complete(ResourceTemplateReference(type="ref/resource", uri="freshet://{collection}/changes"),
                                     {"name": "collection", "value": "x"})
        assert done.completion.values == []


async def test_get_document_says_whether_a_held_version_is_current(server, topic, broker):
    word = "zq" + uuid.uuid4().hex[:10]
    doc = f"v1-{word}"
    with Producer(broker) as p:
        first = p.send(topic, key=doc, value=ticket(doc, "acme", word, priority=1), partition=1)
    async with http_client(server.mcp_url, headers=bearer("acme")) as client:
        await wait_for_ids(client, word, {doc})
        held = await call(client, "get_document", {"collection": "tickets", "id": doc, "offset": first.offset,
                                                   "partition": 1})
        assert held["version"] == "current" and held["document"]["freshness"]["offset"] == first.offset
        with Producer(broker) as p:
            second = p.send(topic, key=doc, value=ticket(doc, "acme", word, priority=2), partition=1)
        await call(client, "search", {"query": word, "collection": "tickets", "consistency": "head", "mode": "bm25"})
        now = await call(client, "get_document", {"collection": "tickets", "id": doc, "offset": first.offset})
        assert now["version"] == "superseded"
        assert now["document"]["freshness"]["offset"] == second.offset and now["document"]["metadata"]["priority"] == 2
        plain = await call(client, "get_document", {"collection": "tickets", "id": doc})
        assert "version" not in plain
        err = await tool_error(client, "get_document", {"collection": "tickets", "id": doc, "partition": 1})
        assert "`partition` needs `offset`" in err

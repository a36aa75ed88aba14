"""Live context end to end: real broker, real `freshet serve` with JWT auth, real MCP
client (`mcp` 2.x) over streamable HTTP.

- filter operators (ranges on number and time fields, `ne`, `exists`, `any`/`all`, the
  built-in `event_time` and `indexed_at`) inside the retrievers, and their errors;
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import kafka_util
from freshet_util import FreshetServer, ToolError, call, http_client, mint_token, tool_error, write_config
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
    srv = FreshetServer(config, work, env={SECRET_ENV: SECRET})
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
        print(srv.log()[-3000:])
        assert code == 0, f"freshet exited with {code} on SIGTERM"


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

"""End to end: real broker, real `freshet serve`, real MCP client over streamable HTTP.

One server per module, fed by three topics: `articles` (JSON with precomputed vectors, two
partitions), `customers` (Debezium CDC) and `notes` (JSON, BM25 only, small record limit,
dead-letter topic). Tests use their own document ids, and `consistency: "head"` to wait for
what they produced, so they do not depend on each other.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx2
import pytest

import kafka_util
from freshet_util import FreshetServer, ToolError, call, http_client, tool_error, write_config
from kafka_util import Producer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "debezium"
DIM = 8
pytestmark = pytest.mark.anyio


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def unit(i: int) -> list[float]:
    """A unit vector along axis i (distinct documents, exact nearest neighbours)."""
    v = [0.0] * DIM
    v[i % DIM] = 1.0
    return v


def word() -> str:
    """A unique searchable token."""
    return "zq" + uuid.uuid4().hex[:10]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def topics(broker):
    names = {
        "articles": kafka_util.unique_topic("articles"),
        "customers": kafka_util.unique_topic("customers"),
        "notes": kafka_util.unique_topic("notes"),
        "dlq": kafka_util.unique_topic("dlq"),
    }
    kafka_util.create_topic(broker, names["articles"], partitions=2)
    for key in ("customers", "notes", "dlq"):
        kafka_util.create_topic(broker, names[key], partitions=1)
    return names


@pytest.fixture(scope="module")
def server(broker, topics, tmp_path_factory):
    work = tmp_path_factory.mktemp("core")
    config = write_config(
        work / "freshet.toml",
        {"kafka": {"brokers": broker.bootstrap, "dead_letter_topic": topics["dlq"]}},
        [
            {
                "name": "articles",
                "topics": [topics["articles"]],
                "format": "json",
                "id_field": "id",
                "title_field": "title",
                "text_fields": ["title", "body"],
                "metadata_fields": ["category", "team", "tags"],
                "event_time_field": "updated_at",
                "vector_field": "embedding",
                "embedding": {"provider": "precomputed", "dimensions": DIM},
            },
            {
                "name": "customers",
                "topics": [topics["customers"]],
                "format": "auto",
                "text_fields": ["first_name", "last_name", "email"],
                "metadata_fields": ["email"],
            },
            {
                "name": "notes",
                "topics": [topics["notes"]],
                "format": "json",
                "title_field": "title",
                "max_record_bytes": 2048,
                "metadata_fields": ["kind"],
            },
        ],
    )
    srv = FreshetServer(config, work)
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
        print(srv.log()[-3000:])
        assert code == 0, f"freshet exited with {code} on SIGTERM"


@pytest.fixture(scope="module")
def producer(broker):
    with Producer(broker) as p:
        yield p


def article(doc_id: str, body: str, *, category: str = "runbook", vec: int = 0, title: str | None = None,
            updated_at: str | None = None, **extra) -> dict:
    return {
        "id": doc_id,
        "title": title or "Test article",  # never the id: ids hold search tokens
        "body": body,
        "category": category,
        "team": "platform",
        "updated_at": updated_at or iso(int(datetime.now(timezone.utc).timestamp() * 1000)),
        "embedding": unit(vec),
        **extra,
    }


async def search(client, **args) -> dict:
    args.setdefault("consistency", "head")
    return await call(client, "search", args)


def ids(result: dict) -> list[str]:
    return [h["id"] for h in result["results"]]


async def test_tools_are_listed_read_only_with_output_schemas(server):
    async with http_client(server.mcp_url) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"search", "get_document", "document_freshness", "changes", "list_collections"}
        for t in tools.values():
            assert t.annotations and t.annotations.read_only_hint is True, t.name
            assert t.output_schema and t.output_schema.get("type") == "object", t.name
        search_props = tools["search"].input_schema["properties"]
        for arg in ("query", "collection", "k", "mode", "filter", "vector", "consistency", "max_wait_ms"):
            assert arg in search_props
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["freshet://{collection}/{id}", "freshet://{collection}/changes"]


async def test_create_is_searchable_with_correct_stamps(server, topics, producer):
    token = word()
    doc_id = f"a-{token}"
    event_ms = int(datetime.now(timezone.utc).timestamp() * 1000) - 1500
    where = producer.send(topics["articles"], key=doc_id, partition=1,
                          value=article(doc_id, f"The {token} service restarts nightly.", updated_at=iso(event_ms)))
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=token, collection="articles", mode="bm25")
        assert ids(res) == [doc_id]
        hit = res["results"][0]
        assert hit["collection"] == "articles"
        assert hit["title"] == "Test article"
        assert f"**{token}**" in hit["snippet"]
        assert hit["metadata"]["category"] == "runbook"
        stamp = hit["freshness"]
        assert (stamp["topic"], stamp["partition"], stamp["offset"]) == (topics["articles"], where.partition, where.offset)
        assert stamp["event_time"] == iso(event_ms)
        event, ingested, indexed = (parse_time(stamp[k]) for k in ("event_time", "ingested_at", "indexed_at"))
        assert event < ingested <= indexed
        assert stamp["index_delay_ms"] == round((indexed - event).total_seconds() * 1000)
        assert stamp["age_ms"] >= stamp["index_delay_ms"]
        wm = res["freshness"]
        assert wm["caught_up"] is True
        parts = {(p["topic"], p["partition"]): p for p in wm["partitions"]}
        assert set(parts) == {(topics["articles"], 0), (topics["articles"], 1)}
        p1 = parts[(topics["articles"], 1)]
        assert p1["applied_offset"] >= where.offset and p1["lag"] == 0

        doc = await call(client, "get_document", {"collection": "articles", "id": doc_id})
        assert doc["document"]["text"] == f"Test article\n\nThe {token} service restarts nightly."
        assert doc["document"]["freshness"]["offset"] == where.offset


async def test_update_replaces_old_text_everywhere(server, topics, producer):
    old, new = word(), word()
    doc_id = f"u-{old}"
    producer.send(topics["articles"], key=doc_id, value=article(doc_id, f"first version mentions {old}", vec=1))
    async with http_client(server.mcp_url) as client:
        assert ids(await search(client, query=old, collection="articles", mode="bm25")) == [doc_id]
        second = producer.send(topics["articles"], key=doc_id,
                               value=article(doc_id, f"second version mentions {new}", vec=2))
        assert ids(await search(client, query=old, collection="articles", mode="bm25")) == []
        res = await search(client, query=new, collection="articles", mode="bm25")
        assert ids(res) == [doc_id]
        assert res["results"][0]["freshness"]["offset"] == second.offset
        doc = await call(client, "get_document", {"collection": "articles", "id": doc_id})
        assert new in doc["document"]["text"] and old not in doc["document"]["text"]
        # The vector moved too: the old vector's neighbourhood no longer returns this version twice.
        res = await search(client, vector=unit(2), collection="articles", mode="vector", k=100)
        assert ids(res).count(doc_id) == 1


async def test_tombstone_and_debezium_delete_remove_from_view_and_both_indexes(server, topics, producer):
    token = word()
    doc_id = f"d-{token}"
    producer.send(topics["articles"], key=doc_id, value=article(doc_id, f"soon gone {token}", vec=5))
    async with http_client(server.mcp_url) as client:
        assert doc_id in ids(await search(client, query=token, collection="articles", mode="hybrid", vector=unit(5)))
        producer.send(topics["articles"], key=doc_id, value=None)
        assert ids(await search(client, query=token, collection="articles", mode="bm25")) == []
        assert doc_id not in ids(await search(client, vector=unit(5), collection="articles", mode="vector", k=100))
        err = await tool_error(client, "get_document", {"collection": "articles", "id": doc_id})
        assert "not found" in err
        fresh = await call(client, "document_freshness", {"collection": "articles", "ids": [doc_id]})
        assert fresh["documents"] == [{"id": doc_id, "status": "not_found"}]


async def test_debezium_fixtures_of_every_kind(server, topics, producer):
    t = topics["customers"]
    key_1004 = fixture("serde-unnested-delete-key-withschema.json")  # {schema, payload: {id: 1004}}
    renamed = fixture("serde-update.json")
    renamed["after"]["first_name"] = "Annette"  # a real change, so the update is visible
    records = [
        ({"id": 1}, fixture("postgresql-create-event.docs.json")),        # c, Postgres, full schema
        ({"id": 1004}, fixture("serde-without-schema.json")),             # c, payload only
        ({"id": 1004}, renamed),                                          # u
    ]
    producer.send_many(t, records)
    async with http_client(server.mcp_url) as client:
        res = await search(client, query="Annette Kretchmar", collection="customers")
        assert res["mode"] == "bm25" and "fell back to bm25" in res["notes"][0]
        assert ids(res)[0] == "1004"
        doc = (await call(client, "get_document", {"collection": "customers", "id": "1004"}))["document"]
        assert doc["text"] == "Annette\n\nKretchmar\n\nannek@noanswer.org"
        assert doc["metadata"] == {"email": "annek@noanswer.org"}
        assert doc["freshness"]["event_time"] == iso(1465491411815)  # envelope ts_ms (source.ts_ms is 0)
        pg = (await call(client, "get_document", {"collection": "customers", "id": "1"}))["document"]
        assert pg["freshness"]["event_time"] == iso(1559033904863)  # Postgres source.ts_ms

        # d with the schema-wrapped key, then the tombstone Debezium sends after it.
        producer.send(t, key=key_1004, value=fixture("serde-unnested-delete-val-withschema.json"))
        producer.send(t, key=key_1004, value=None)
        await search(client, query="Kretchmar", collection="customers")
        assert (await call(client, "document_freshness", {"collection": "customers", "ids": ["1004", "1"]}))[
            "documents"][0]["status"] == "not_found"

        # Re-created with the full {schema, payload} envelope; then the flattened (unwrap) form.
        producer.send(t, key=key_1004, value=fixture("serde-with-schema.json"))
        producer.send(t, key={"id": 1005}, value=fixture("serde-unwrapped.json"))
        res = await search(client, query="Kretchmar", collection="customers", k=10)
        assert set(ids(res)) == {"1", "1004", "1005"}
        counts = next(c for c in (await call(client, "list_collections", {}))["collections"]
                      if c["name"] == "customers")["ingest"]
        assert counts["deletes"] == 2 and counts["upserts"] == 5 and counts["poison"] == {}


async def test_snapshot_read_op_r_and_composite_free_key(server, topics, producer):
    # An `r` (snapshot read) event for another table, keyed {order_number: 10004}.
    producer.send(topics["customers"], key=fixture("serde-unnested-order-key-withschema.json"),
                  value=fixture("serde-unnested-order-val-withschema.json"))
    async with http_client(server.mcp_url) as client:
        await search(client, query="anything", collection="customers")
        fresh = await call(client, "document_freshness", {"collection": "customers", "ids": ["10004"]})
        assert fresh["documents"][0]["status"] == "found"


async def test_filters_apply_inside_both_retrievers(server, topics, producer):
    token = word()
    docs = [article(f"f{i}-{token}", f"{token} filter probe {i}", category=cat, vec=i, tags=tags)
            for i, (cat, tags) in enumerate([("alpha", ["x"]), ("beta", ["y"]), ("gamma", ["x", "y"])])]
    # Many unfiltered documents that outrank the filtered ones for this query.
    noise = [article(f"n{i}-{token}", f"{token} {token} {token} noise", category="noise", vec=0) for i in range(30)]
    producer.send_many(topics["articles"], [(d["id"], d) for d in noise + docs])
    async with http_client(server.mcp_url) as client:
        res = await search(client, query=token, collection="articles", mode="bm25", k=3, filter={"category": "beta"})
        assert ids(res) == [f"f1-{token}"]
        res = await search(client, query=token, collection="articles", mode="bm25", k=5,
                           filter={"category": ["alpha", "gamma"]})
        assert sorted(ids(res)) == sorted([f"f0-{token}", f"f2-{token}"])
        res = await search(client, query=token, collection="articles", mode="bm25", k=5,
                           filter={"category": ["alpha", "gamma"], "tags": "y"})
        assert ids(res) == [f"f2-{token}"]
        # Vector retriever: the nearest vectors belong to noise docs, the filter still fills k.
        res = await search(client, vector=unit(0), collection="articles", mode="vector", k=2,
                           filter={"category": ["alpha", "beta"]})
        assert sorted(ids(res)) == sorted([f"f0-{token}", f"f1-{token}"])
        err = await tool_error(client, "search", {"query": token, "collection": "articles", "filter": {"owner": "x"}})
        assert "owner" in err and "filterable fields" in err and "category" in err


async def test_vector_and_hybrid_modes(server, topics, producer):
    token = word()
    a, b = f"va-{token}", f"vb-{token}"
    producer.send_many(topics["articles"], [
        (a, article(a, f"{token} shares the word", vec=6)),
        (b, article(b, "completely different words", vec=7)),
    ])
    async with http_client(server.mcp_url) as client:
        res = await search(client, vector=unit(7), collection="articles", mode="vector", k=1)
        assert res["mode"] == "vector"
        hit = res["results"][0]
        assert hit["id"] in {b} or hit["score"] == pytest.approx(1.0, abs=1e-5)
        res = await search(client, query=token, vector=unit(7), collection="articles", mode="hybrid", k=50)
        assert res["mode"] == "hybrid" and not res.get("notes")
        assert a in ids(res) and b in ids(res), "hybrid keeps the best of both lists"
        res = await search(client, query=token, collection="articles", mode="hybrid")
        assert res["mode"] == "bm25" and "pass the query's vector" in res["notes"][0]
        err = await tool_error(client, "search", {"query": token, "collection": "articles", "mode": "vector"})
        assert "vector" in err
        err = await tool_error(client, "search", {"vector": [1.0, 0.0], "collection": "articles", "mode": "vector"})
        assert "2 numbers" in err and str(DIM) in err
        err = await tool_error(client, "search", {"query": "x", "collection": "notes", "mode": "vector"})
        assert "no vectors" in err


async def test_consistency_head_returns_a_record_produced_just_before(server, topics, producer):
    async with http_client(server.mcp_url) as client:
        for _ in range(5):
            token = word()
            producer.send(topics["notes"], key=f"h-{token}", value={"title": "head", "body": token})
            res = await call(client, "search", {"query": token, "collection": "notes", "consistency": "head",
                                                "max_wait_ms": 5000})
            assert ids(res) == [f"h-{token}"], res
            assert res["freshness"]["caught_up"] is True


async def test_poison_records_are_counted_skipped_and_dead_lettered(server, topics, producer, broker):
    t = topics["notes"]
    before = next(c for c in await _collections(server) if c["name"] == "notes")["ingest"]["poison"]
    first, second = word(), word()
    sent = producer.send_many(t, [
        {"key": f"p1-{first}", "value": {"title": "good", "body": first}},
        {"key": "bad-json", "value": b"{not json"},
        {"key": None, "value": {"title": "no key, no id", "body": "x"}},
        {"key": "bad-type", "value": {"title": {"nested": True}, "body": "x"}},
        {"key": "too-big", "value": {"title": "big", "body": "x" * 5000}},
        {"key": f"p2-{second}", "value": {"title": "good", "body": second}},
    ])
    async with http_client(server.mcp_url) as client:
        assert ids(await search(client, query=second, collection="notes")) == [f"p2-{second}"]
        assert ids(await search(client, query=first, collection="notes")) == [f"p1-{first}"]
    after = next(c for c in await _collections(server) if c["name"] == "notes")["ingest"]["poison"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta == {"not_json": 1, "missing_id": 1, "bad_field": 1, "oversize": 1}
    log = server.log()
    assert f"partition=0 offset={sent[1].offset}" in log and "skipping record" in log
    dead = kafka_util.consume(broker, topics["dlq"], count=4, timeout=20)
    offsets = sorted(int(dict(r.headers)["freshet.source.offset"]) for r in dead)
    assert offsets == [s.offset for s in sent[1:5]]
    assert {dict(r.headers)["freshet.error.kind"].decode() for r in dead} == set(delta)


async def _collections(server) -> list[dict]:
    async with http_client(server.mcp_url) as client:
        return (await call(client, "list_collections", {}))["collections"]


async def test_list_collections_reports_counts_and_lag(server, topics):
    cols = {c["name"]: c for c in await _collections(server)}
    assert set(cols) == {"articles", "customers", "notes"}
    art = cols["articles"]
    assert art["topics"] == [topics["articles"]]
    assert art["embedding"] == {"provider": "precomputed", "model": None, "dimensions": DIM}
    assert art["filterable_fields"] == ["category", "team", "tags"]
    assert art["modes"] == ["hybrid", "bm25", "vector"]
    assert cols["notes"]["modes"] == ["bm25"]
    assert {p["partition"] for p in art["partitions"]} == {0, 1}
    assert all(p["lag"] is not None for p in art["partitions"])


async def test_bad_arguments_return_actionable_tool_errors(server):
    async with http_client(server.mcp_url) as client:
        assert "k must be between 1 and 100" in await tool_error(client, "search", {"query": "x", "k": 0})
        assert "k must be between 1 and 100" in await tool_error(client, "search", {"query": "x", "k": 101})
        err = await tool_error(client, "search", {"query": "x", "collection": "nope"})
        assert "unknown collection `nope`" in err and "articles" in err
        assert "query is empty" in await tool_error(client, "search", {"query": "  "})
        assert "unknown variant" in await tool_error(client, "search", {"query": "x", "mode": "fuzzy"})
        assert "missing field `id`" in await tool_error(client, "get_document", {"collection": "articles"})
        assert "unknown field" in await tool_error(client, "search", {"query": "x", "bogus": 1})
        assert "ids must hold" in await tool_error(client, "document_freshness", {"collection": "notes", "ids": []})
        assert "max_wait_ms" in await tool_error(client, "search", {"query": "x", "max_wait_ms": 10**9})


async def test_resource_template_reads_a_document(server, topics, producer):
    token = word()
    doc_id = f"r/{token}"  # ids may contain slashes
    producer.send(topics["notes"], key=doc_id, value={"title": "resource", "body": token})
    async with http_client(server.mcp_url) as client:
        await search(client, query=token, collection="notes")
        read = await client.read_resource(f"freshet://notes/r%2F{token}")
        content = read.contents[0]
        assert content.mime_type == "application/json"
        body = json.loads(content.text)
        assert body["document"]["id"] == doc_id and token in body["document"]["text"]
        assert "freshness" in body["document"] and "caught_up" in body["freshness"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_both_protocol_generations_work(server, mode):
    async with http_client(server.mcp_url, mode=mode) as client:
        expected = "2026-07-28" if mode == "auto" else "2025-11-25"
        assert client.protocol_version == expected
        res = await call(client, "list_collections", {})
        assert len(res["collections"]) == 3


def test_origin_validation_rejects_foreign_origins(server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    evil = httpx2.post(server.mcp_url, json=body, headers={**headers, "Origin": "http://evil.example"})
    assert evil.status_code == 403
    ok = httpx2.post(server.mcp_url, json=body, headers={**headers, "Origin": "http://localhost:5173"})
    assert ok.status_code == 200
    rebinding = httpx2.post(server.mcp_url, json=body, headers={**headers, "Host": "evil.example"})
    assert rebinding.status_code == 403


def test_health_and_readiness(server):
    assert httpx2.get(f"{server.url}/healthz").status_code == 200
    assert httpx2.get(f"{server.url}/readyz").status_code == 200

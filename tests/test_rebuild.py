"""A settings change rebuilds a persisted collection in the background (issue 14, item 5):
the previous generation keeps answering, frozen at its checkpoint, while the next one is
read from the topics with the new settings; once caught up and checkpointed, it is swapped
in and the old generation's files are removed. Real binary, real broker, real signals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, tool_error, write_config
from kafka_util import Producer
from test_durability import metric, metrics, unit_vector, wait_applied

pytestmark = pytest.mark.anyio

WORDS = 48  # body words per document: 1 chunk at 256 words, 3 at 16, 2 at 24


def rebuild_config(path: Path, brokers: str, topic: str, chunk_words: int, checkpoint_ms: int = 300) -> Path:
    collection = {"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
                  "text_fields": ["body"], "metadata_fields": ["v"], "chunk_tokens": chunk_words,
                  "chunk_overlap": 0, "vector_field": "vec",
                  "embedding": {"provider": "precomputed", "dimensions": 4}}
    return write_config(path, {"kafka": {"brokers": brokers, "watermark_interval_ms": 100},
                               "snapshot": {"interval_ms": 300, "checkpoint_interval_ms": checkpoint_ms}},
                        [collection])


def produce(producer: Producer, topic: str, start: int, count: int) -> dict[int, int]:
    """Upserts doc-<i> (a body of WORDS words) into partition i % 2, batched as an ordinary
    producer batches; returns the last offset per partition."""
    by_part: dict[int, list] = {}
    for i in range(start, start + count):
        body = " ".join(f"w{i}x{n}" for n in range(WORDS))
        value = {"id": f"doc-{i}", "title": f"title {i}", "body": body, "v": i, "vec": unit_vector(i)}
        by_part.setdefault(i % 2, []).append((f"doc-{i}", value))
    return {part: producer.send_many(topic, records, partition=part)[-1].offset
            for part, records in by_part.items()}


async def answer(server: FreshetServer, i: int) -> dict:
    """A BM25 search for a word only doc-<i> has, with its watermark."""
    async with http_client(server.mcp_url) as client:
        return await call(client, "search", {"query": f"w{i}x7", "collection": "docs", "mode": "bm25"})


async def collection_info(server: FreshetServer) -> dict:
    async with http_client(server.mcp_url) as client:
        return (await call(client, "list_collections", {}))["collections"][0]


async def wait_generation(server: FreshetServer, generation: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        res = await answer(server, 0)
        if res["freshness"]["generations"][0]["generation"] == generation:
            return res
        if time.monotonic() > deadline:
            raise TimeoutError(f"generation {generation} never served: {res['freshness']}\n{server.log()[-3000:]}")
        time.sleep(0.2)


def generation_dirs(data: Path) -> list[str]:
    docs = data / "collections" / "docs"
    return sorted(p.name for p in docs.iterdir())


async def test_settings_change_rebuilds_in_the_background_and_survives_kill_9(broker, tmp_path):
    topic = kafka_util.unique_topic("rebuild")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = tmp_path / "freshet.toml"
    data = tmp_path / "data"
    with Producer(broker) as p:
        last = produce(p, topic, 0, 200)

        # Generation 1: one chunk per document.
        rebuild_config(config, broker.bootstrap, topic, 256)
        first = FreshetServer(config, tmp_path)
        try:
            first.wait_ready()
            await wait_applied(first, topic, last)
            assert (await collection_info(first))["chunks"] == 200
        finally:
            assert first.stop() == 0
        assert generation_dirs(data) == ["text", "vectors"]

        # Smaller chunks: generation 2 is built while generation 1 answers. Its first
        # checkpoint, which the swap waits for, comes 20 s after start: the window in which
        # generation 1 must answer.
        rebuild_config(config, broker.bootstrap, topic, 16, checkpoint_ms=20_000)
        second = FreshetServer(config, tmp_path)
        try:
            second.wait_ready(timeout=15)  # ready at once: the old generation serves
            res = await answer(second, 5)
            assert [h["id"] for h in res["results"]] == ["doc-5"]
            wm = res["freshness"]
            [gen] = wm["generations"]
            assert (gen["collection"], gen["generation"], gen["building"]) == ("docs", 1, 2), wm
            assert wm["caught_up"] is False
            assert "answers come from generation 1" in gen["note"]
            assert any("answers come from generation 1" in n for n in res["notes"]), res["notes"]
            applied = {p["partition"]: p["applied_offset"] for p in wm["partitions"]}
            assert applied == last, "the frozen generation's offsets, from its checkpoint"
            info = await collection_info(second)
            assert (info["documents"], info["chunks"]) == (200, 200), "generation 1 answers"
            assert (info["generation"]["generation"], info["generation"]["building"]) == (1, 2)
            assert info["rebuild"]["remaining"] is not None, info
            # Same vector space: vector search answers from generation 1 too.
            async with http_client(second.mcp_url) as client:
                hits = await call(client, "search", {"query": "", "collection": "docs", "mode": "vector",
                                                     "vector": unit_vector(42), "k": 1})
            assert hits["results"][0]["id"] == "doc-42"
            # New records go to generation 2 only; generation 1 is not updated.
            last = produce(p, topic, 200, 10)
            async with http_client(second.mcp_url) as client:
                missing = await tool_error(client, "get_document", {"collection": "docs", "id": "doc-205"})
            assert "not found" in missing
            samples = metrics(second)
            assert metric(samples, "freshet_collection_generation", collection="docs") == 1
            assert metric(samples, "freshet_rebuild_documents", collection="docs", generation="2") is not None
            assert "gen-2" in generation_dirs(data)

            res = await wait_generation(second, 2)
            [gen] = res["freshness"]["generations"]
            assert "building" not in gen and "note" not in gen, gen
            info = await collection_info(second)
            assert (info["documents"], info["chunks"]) == (210, 630), "the new chunking answers"
            assert info["generation"] == {"collection": "docs", "generation": 2} and "rebuild" not in info
            async with http_client(second.mcp_url) as client:
                doc = await call(client, "get_document", {"collection": "docs", "id": "doc-205"})
            assert doc["document"]["id"] == "doc-205"
            assert metric(metrics(second), "freshet_collection_generation", collection="docs") == 2
            assert generation_dirs(data) == ["gen-2", "generation"], "generation 1's files are gone"
            assert (data / "collections" / "docs" / "generation").read_text() == "2\n"
            assert "serves now" in second.log()
        finally:
            assert second.stop() == 0

        # Again other chunks, killed with SIGKILL during the rebuild: the restart serves
        # generation 2 until generation 3 is rebuilt, then generation 3 alone.
        rebuild_config(config, broker.bootstrap, topic, 24, checkpoint_ms=20_000)
        third = FreshetServer(config, tmp_path)
        try:
            third.wait_ready(timeout=15)
            [gen] = (await answer(third, 5))["freshness"]["generations"]
            assert (gen["generation"], gen["building"]) == (2, 3)
            assert (await collection_info(third))["chunks"] == 630
        finally:
            third.process.kill()  # SIGKILL: no drain, no checkpoint
            third.process.wait(10)
        assert generation_dirs(data) == ["gen-2", "gen-3", "generation"]
        last = produce(p, topic, 210, 10)

    rebuild_config(config, broker.bootstrap, topic, 24)
    fourth = FreshetServer(config, tmp_path)
    try:
        fourth.wait_ready(timeout=15)
        await wait_generation(fourth, 3)
        await wait_applied(fourth, topic, last)
        info = await collection_info(fourth)
        assert (info["documents"], info["chunks"]) == (220, 440), "every document once, in 2 chunks"
        res = await answer(fourth, 215)
        assert [h["id"] for h in res["results"]] == ["doc-215"]
        assert generation_dirs(data) == ["gen-3", "generation"]
        log = fourth.log()
        assert "panicked" not in log
    finally:
        assert fourth.stop() == 0

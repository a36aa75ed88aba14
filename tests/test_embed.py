"""End to end with the in-process embedding model: real broker, real `freshet serve` with
`provider = "local"` (all-MiniLM-L6-v2 installed by scripts/setup.sh), real MCP client.
Raw text goes in; queries are embedded by freshet itself (no `vector` argument)."""

from __future__ import annotations

import uuid

import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import REPO_ROOT, Producer

MODEL_DIR = REPO_ROOT / "models" / "all-MiniLM-L6-v2"
pytestmark = pytest.mark.anyio

DOCS = {
    "kitten": ("Pets", "The kitten is sleeping on the sofa all afternoon."),
    "oil": ("Car care", "Change the engine oil every ten thousand kilometres."),
    "rain": ("Weather", "Heavy rain and strong winds are expected tomorrow."),
    "lag": ("Kafka", "Consumer lag grows when producers write faster than consumers read."),
}


@pytest.fixture(scope="module")
def embed_server(broker, tmp_path_factory):
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.skip(f"{MODEL_DIR} is absent: run scripts/setup.sh to install the model")
    topic = kafka_util.unique_topic("embed")
    kafka_util.create_topic(broker, topic, partitions=1)
    work = tmp_path_factory.mktemp("embed")
    config = write_config(
        work / "freshet.toml",
        {"kafka": {"brokers": broker.bootstrap}},
        [{
            "name": "kb",
            "topics": [topic],
            "format": "json",
            "id_field": "id",
            "title_field": "title",
            "text_fields": ["title", "body"],
            "embedding": {"provider": "local", "model_dir": str(MODEL_DIR)},
        }],
    )
    srv = FreshetServer(config, work)
    try:
        srv.wait_ready()
        yield srv, topic
    finally:
        code = srv.stop()
        print(srv.log()[-3000:])
        assert code == 0, f"freshet exited with {code} on SIGTERM"


async def test_paraphrase_is_found_by_vector_and_hybrid(embed_server, broker):
    srv, topic = embed_server
    run = uuid.uuid4().hex[:8]
    with Producer(broker) as p:
        p.send_many(topic, [
            (f"{key}-{run}", {"id": f"{key}-{run}", "title": title, "body": body})
            for key, (title, body) in DOCS.items()
        ])
    async with http_client(srv.mcp_url) as client:
        # No word in common with the kitten document: only the embeddings can match.
        query = "young kitty napping on a couch"
        for mode in ("vector", "hybrid"):
            res = await call(client, "search", {
                "query": query, "collection": "kb", "mode": mode, "consistency": "head", "k": 3,
            })
            assert res["mode"] == mode and not res.get("notes"), res
            assert res["results"][0]["id"] == f"kitten-{run}", res["results"]
        res = await call(client, "search", {
            "query": "why does the stream processing fall behind", "collection": "kb", "mode": "vector",
        })
        assert res["results"][0]["id"] == f"lag-{run}"

        info = (await call(client, "list_collections", {}))["collections"][0]
        assert info["embedding"] == {"provider": "local", "model": "all-MiniLM-L6-v2", "dimensions": 384}
        assert info["modes"] == ["hybrid", "bm25", "vector"]
        assert info["documents"] >= len(DOCS) and info["chunks"] >= len(DOCS)


async def test_update_and_delete_reach_the_vectors(embed_server, broker):
    srv, topic = embed_server
    doc_id = f"swap-{uuid.uuid4().hex[:8]}"
    with Producer(broker) as p:
        p.send(topic, key=doc_id, value={"id": doc_id, "title": "Note", "body": "Volcanoes erupt molten lava."})
        async with http_client(srv.mcp_url) as client:
            async def top(query: str) -> list[str]:
                res = await call(client, "search", {"query": query, "collection": "kb", "mode": "vector",
                                                    "consistency": "head", "k": 10})
                return [h["id"] for h in res["results"]]

            assert (await top("lava from a volcano"))[0] == doc_id
            p.send(topic, key=doc_id, value={"id": doc_id, "title": "Note", "body": "Bake bread with flour and yeast."})
            assert (await top("baking a loaf of bread"))[0] == doc_id
            assert (await top("lava from a volcano")).count(doc_id) == 1  # old vector masked, not duplicated
            p.send(topic, key=doc_id, value=None)
            assert doc_id not in await top("baking a loaf of bread")

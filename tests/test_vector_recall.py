"""The vector graph measures its own recall and, below `hnsw.min_recall`, answers by exact scan.

Real broker, real `freshet serve`, a batching producer. Two collections of precomputed vectors:
`spread` holds independent random 128-d directions behind a deliberately thin graph (no graph
finds their neighbours), `grouped` holds 8-d vectors under the default graph. Both must report
their measurement in `list_collections` and `/metrics`; `spread` must switch to exact scans
and still return the true nearest neighbours.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import kafka_util
from freshet_util import FreshetServer, call, http_client, serving, write_config
from kafka_util import Producer
from test_durability import metric, metrics

pytestmark = pytest.mark.anyio

DOCS = 1500  # past the 1024 points at which the graph is first measured
SPREAD_DIM, GROUPED_DIM = 128, 8


def unit(v: list[float]) -> list[float]:
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def random_direction(rng: random.Random, dim: int) -> list[float]:
    return unit([rng.gauss(0.0, 1.0) for _ in range(dim)])


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(18)
    return {
        "spread": [random_direction(rng, SPREAD_DIM) for _ in range(DOCS)],
        "grouped": [random_direction(rng, GROUPED_DIM) for _ in range(DOCS)],
    }


@pytest.fixture(scope="module")
def server(broker, corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("recall")
    topics = {name: kafka_util.unique_topic(name) for name in corpus}
    for topic in topics.values():
        kafka_util.create_topic(broker, topic, partitions=2)
    with Producer(broker) as producer:
        for name, vectors in corpus.items():
            producer.send_many(topics[name], [
                (f"{name}-{i}", {"id": f"{name}-{i}", "body": f"document {i}", "embedding": v})
                for i, v in enumerate(vectors)
            ], partition=None)

    def collection(name: str, dim: int, hnsw: dict | None = None) -> dict:
        c = {"name": name, "topics": [topics[name]], "format": "json", "id_field": "id",
             "text_fields": ["body"], "vector_field": "embedding",
             "embedding": {"provider": "precomputed", "dimensions": dim}}
        if hnsw:
            c["hnsw"] = hnsw
        return c

    config = write_config(work / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}}, [
        collection("spread", SPREAD_DIM, {"m": 4, "ef_construction": 8, "ef_search": 10}),
        collection("grouped", GROUPED_DIM),
    ])
    with serving(config, work) as srv:
        yield srv


async def measured(server: FreshetServer, timeout: float = 60) -> dict[str, dict]:
    """Each collection's `vector_recall` once both have one (the graph is measured between
    insert rounds, shortly after the last insert)."""
    deadline = time.monotonic() + timeout
    async with http_client(server.mcp_url) as client:
        while True:
            listing = (await call(client, "list_collections", {}))["collections"]
            found = {c["name"]: c.get("vector_recall") for c in listing}
            if all(found.values()):
                return found
            assert time.monotonic() < deadline, f"no recall measured in {timeout} s: {found}"
            await asyncio.sleep(0.2)


async def test_the_graph_reports_its_recall_and_a_bad_graph_gives_way_to_exact_scans(server, corpus):
    recall = await measured(server)
    spread, grouped = recall["spread"], recall["grouped"]
    assert spread["measured_at_points"] >= 1024 and grouped["measured_at_points"] >= 1024
    assert spread["recall_at_10"] < 0.9 and spread["exact_scan"] is True, spread
    assert grouped["recall_at_10"] >= 0.9 and grouped["exact_scan"] is False, grouped

    samples = metrics(server)
    assert metric(samples, "freshet_vector_exact_scan", collection="spread") == 1
    assert metric(samples, "freshet_vector_exact_scan", collection="grouped") == 0
    assert metric(samples, "freshet_vector_recall_estimate", collection="spread") == pytest.approx(
        spread["recall_at_10"], abs=1e-6)
    assert "little neighbourhood structure" in server.log()

    # The answers are the true nearest neighbours, not the thin graph's.
    rng = random.Random(7)
    vectors = corpus["spread"]
    async with http_client(server.mcp_url) as client:
        for _ in range(10):
            q = random_direction(rng, SPREAD_DIM)
            truth = sorted(range(DOCS), key=lambda i: -sum(a * b for a, b in zip(vectors[i], q)))[:10]
            res = await call(client, "search", {"vector": q, "collection": "spread", "mode": "vector", "k": 10})
            assert [h["id"] for h in res["results"]] == [f"spread-{i}" for i in truth]

"""Scale-out (issue #19): three `freshet serve` nodes on loopback, each with its own port and
data directory, share a 6-partition topic through a Kafka consumer group on the session's
Apache Kafka broker. A fourth, single-node freshet reads the same topic as the reference.

- every partition is owned by exactly one node of the replica group (KIP-848 protocol);
- a search on any node returns the single node's top-10 ids, and — with the cluster-wide
  BM25 statistics — the same BM25 scores;
- `consistency: "head"` on any node finds a document just produced to any partition;
- `get_document` and `document_freshness` on any node find documents of every partition
  (and say `unavailable`, never `not_found`, for a partition without a reachable owner);
- internal calls need the shared key;
- killing a node (SIGKILL, no goodbye; classic protocol, 6 s session timeout): answers name
  the partitions without a reachable owner until the group reassigns them, and within
  FAILOVER_SECONDS every partition is served again with the single node's results;
- with two replica groups, a killed node costs no coverage: its partitions are served at once
  by the other replica group;
- a node stopped and restarted on its data directory resumes from its checkpoint, the node
  that covered for it drops what it hands back, and every document is served exactly once;
- a rolling restart of a 3-node cluster with two replica groups, under a steady query load
  sent to ready nodes only (as a load balancer with a readiness probe would), loses no query:
  every answer is complete and equal to the single node's.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import threading
import time
from pathlib import Path

import httpx2
import pytest

import kafka_util
from freshet_util import FreshetServer, ToolError, call, http_client, mint_token, write_config
from kafka_util import Producer, free_port
from test_hardening import DIM as EMBED_DIM
from test_hardening import FakeEmbedder, embeddings_server

pytestmark = pytest.mark.anyio

PARTITIONS = 6
DIM = 4
KEY = "cluster-test-key-0123456789"
KEY_ENV = "FRESHET_TEST_CLUSTER_KEY"
# Classic protocol with a 6 s session timeout: the broker notices a dead member after at most
# 6 s, reassigns its partitions, and the new owners replay them from Kafka.
FAILOVER_SECONDS = 30

WORDS = (
    "kafka stream partition offset consumer broker replica leader follower segment "
    "index search vector score ranking fresh latency throughput checkpoint snapshot "
    "tenant audit token query document chunk embedding cluster shard rebalance"
).split()

QUERIES = [
    "kafka partition",
    "vector search ranking",
    "checkpoint snapshot latency",
    "tenant audit token",
    "rebalance shard cluster consumer",
    "fresh document chunk",
    "leader follower replica",
    "broker offset segment index",
]


def corpus(n: int = 120) -> list[dict]:
    rng = random.Random(19)
    docs = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40)))
        vec = [rng.uniform(-1, 1) for _ in range(DIM)]
        docs.append({"id": f"d{i:03d}", "title": " ".join(rng.sample(WORDS, 2)), "body": body, "v": vec})
    return docs


def collection(topic: str) -> dict:
    return {
        "name": "docs",
        "topics": [topic],
        "format": "json",
        "id_field": "id",
        "title_field": "title",
        "text_fields": ["title", "body"],
        "vector_field": "v",
        "embedding": {"provider": "precomputed", "dimensions": DIM},
    }


class Node:
    """One `freshet serve` on a port chosen before start (peers must know it)."""

    def __init__(self, work: Path, port: int, config: Path, env: dict | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = FreshetServer(
            config, work, env={KEY_ENV: KEY, "FRESHET_SERVER__HTTP_ADDR": f"127.0.0.1:{port}", **(env or {})}
        )
        self.server.url = self.url

    def state(self) -> dict:
        r = httpx2.get(f"{self.url}/internal/cluster/state", headers={"x-freshet-cluster-key": KEY}, timeout=5)
        r.raise_for_status()
        return r.json()


def start_cluster(
    work: Path,
    broker,
    topic: str,
    group: str,
    extra: dict,
    replicas: list[int] = [0, 0, 0],
    server: dict | None = None,
    sections: dict | None = None,
    collections: list[dict] | None = None,
    env: dict | None = None,
) -> list[Node]:
    """Nodes on loopback; node i is in replica group `replicas[i]`."""
    ports = [free_port() for _ in replicas]
    peers = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        d = work / f"node{i}"
        d.mkdir()
        config = write_config(
            d / "freshet.toml",
            {
                "server": {"data_dir": str(d / "data"), **(server or {})},
                "kafka": {"brokers": broker.bootstrap},
                "cluster": {
                    "group": group,
                    "peers": peers,
                    "advertise_url": peers[i],
                    "key_env": KEY_ENV,
                    "handoff_grace_ms": 2000,
                    "replicas": max(replicas) + 1,
                    "replica": replicas[i],
                    **extra,
                },
                **(sections or {}),
            },
            collections or [collection(topic)],
        )
        nodes.append(Node(d, port, config, env))
    return nodes


def restart(node: Node) -> None:
    """SIGTERM (must exit 0), then the same node again on its port and data directory (its
    log so far is kept as `<log>.before-restart`)."""
    assert node.server.stop() == 0
    node.server.log_path.rename(node.server.log_path.with_suffix(".log.before-restart"))
    again = FreshetServer(
        node.server.config,
        node.server.config.parent,
        env={KEY_ENV: KEY, "FRESHET_SERVER__HTTP_ADDR": f"127.0.0.1:{node.port}"},
    )
    again.url = node.url
    node.server = again


def stop_all(nodes: list[Node]) -> None:
    for n in nodes:
        n.server.stop()
        print(n.server.log()[-2500:])


def owners(nodes: list[Node]) -> dict[int, list[str]]:
    """Partition → the nodes that say they own it."""
    owned: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for n in nodes:
        for p in n.state()["partitions"]:
            owned.setdefault(p["partition"], []).append(n.url)
    return owned


def wait_split(nodes: list[Node], timeout: float = 60) -> None:
    """Until the group has given every partition to exactly one node and every node some."""
    wait_for(
        lambda: all(len(v) == 1 for v in owners(nodes).values()) and all(n.state()["partitions"] for n in nodes),
        timeout,
        "the partitions split over the nodes",
    )


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx2.HTTPError, AssertionError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


async def tool(url: str, name: str, args: dict) -> dict:
    async with http_client(f"{url}/mcp") as client:
        return await call(client, name, args)


async def search(url: str, query: str, **args) -> dict:
    async with http_client(f"{url}/mcp") as client:
        return await call(client, "search", {"query": query, "collection": "docs", "k": 10, **args})


async def wait_complete(url: str, total: int, timeout: float) -> dict:
    """Waits until a search on `url` sees every document and says it is caught up."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await search(url, "kafka", mode="bm25", k=100)
        covered = {p["partition"] for p in last["freshness"]["partitions"] if p["lag"] == 0}
        if last["freshness"]["caught_up"] and covered == set(range(PARTITIONS)):
            return last
        time.sleep(0.3)
    raise AssertionError(f"{url} not caught up on every partition within {timeout}s: {last}")


async def feed(url: str, limit: int, since: str | None = None) -> tuple[list[tuple], str]:
    """Every change `changes` gives from `since` on, page by page: (id, kind, partition,
    offset) each, and the last page's `next` cursor."""
    out = []
    async with http_client(f"{url}/mcp") as client:
        while True:
            args = {"collection": "docs", "limit": limit, **({"since": since} if since else {})}
            page = await call(client, "changes", args)
            assert not page["truncated"], page["notes"]
            out += [(c["id"], c["kind"], c["freshness"]["partition"], c["freshness"]["offset"]) for c in page["changes"]]
            since = page["next"]
            if not page["more"]:
                return out, since


@pytest.fixture
def topic(broker):
    """A fresh topic per test. The corpus is produced once the group's assignment has
    settled (see `produce_corpus`)."""
    name = kafka_util.unique_topic("cluster")
    kafka_util.create_topic(broker, name, partitions=PARTITIONS)
    return name, corpus()


def produce_corpus(broker, name: str, docs: list[dict]) -> None:
    # Produced after the nodes' assignment settled: a node that read a partition and then
    # dropped it (its group moved it while the cluster formed) keeps the dropped chunks in
    # tantivy's BM25 statistics until its segments merge, and these tests compare scores
    # with a single node exactly (docs/CLUSTER.md, "Exactness and its limits").
    with Producer(broker, **{"linger.ms": 20, "compression.type": "lz4"}) as p:
        # The key partitioner spreads documents the way real producers do.
        p.send_many(name, [{"key": d["id"], "value": d} for d in docs], partition=None)


@pytest.fixture
def single(broker, topic, tmp_path):
    work = tmp_path / "single"
    work.mkdir()
    config = write_config(
        work / "freshet.toml", {"kafka": {"brokers": broker.bootstrap}}, [collection(topic[0])]
    )
    srv = FreshetServer(config, work)
    try:
        yield srv
    finally:
        srv.stop()


async def same_as_single(single_url: str, node_url: str, queries=QUERIES) -> None:
    for q in queries:
        for mode, args in (("bm25", {}), ("hybrid", {"vector": [0.3, -0.2, 0.9, 0.1]})):
            want = await search(single_url, q, mode=mode, consistency="head", **args)
            got = await search(node_url, q, mode=mode, **args)
            assert [h["id"] for h in got["results"]] == [h["id"] for h in want["results"]], (q, mode)
            if mode == "bm25":
                # Global statistics: the shards' BM25 scores are the single node's.
                for g, w in zip(got["results"], want["results"]):
                    assert g["score"] == pytest.approx(w["score"], rel=1e-4), (q, g["id"])
            assert got["mode"] == want["mode"]
            assert got["freshness"]["caught_up"], got["freshness"]


async def test_partitions_are_shared_and_any_node_answers_like_one(broker, topic, single, tmp_path):
    name, docs = topic
    nodes = start_cluster(tmp_path, broker, name, kafka_util.unique_topic("grp"), {})
    try:
        for n in nodes:
            n.server.wait_ready(90)
        # Every partition is owned by exactly one node, and every node owns some.
        owned = wait_for(
            lambda: (o := owners(nodes)) and all(len(v) == 1 for v in o.values()) and o,
            60,
            "every partition owned exactly once",
        )
        assert sorted(owned) == list(range(PARTITIONS))
        assert {v[0] for v in owned.values()} == {n.url for n in nodes}
        produce_corpus(broker, name, docs)

        for n in nodes:
            full = await wait_complete(n.url, len(docs), 60)
            assert len(full["freshness"]["partitions"]) == PARTITIONS
        # Until a checkpoint commits them (1 s), chunks are scored from the fresh tier, which
        # counts field lengths by their one-byte codes: scores would differ in the 4th digit.
        await search(single.url, "kafka", consistency="head", max_wait_ms=10000)
        time.sleep(2.5)
        single.wait_ready()
        for n in nodes:
            await same_as_single(single.url, n.url)
            # Any node's list_collections shows the same ownership: each partition once.
            view = (await tool(n.url, "list_collections", {}))["cluster"]
            assert {v["url"]: sorted(p["partition"] for p in v["partitions"]) for v in view["nodes"]} == {
                url: [p for p, o in owned.items() if o == [url]] for url in (m.url for m in nodes)
            }, view
            assert view["uncovered"] == [{"replica": 0, "partitions": []}]

        # Every node audits what it served: a search on node 0 leaves its `search` line
        # there (which covers node 0's own partitions) and a `cluster/search` line on each
        # other node, under node 0's request id, naming only documents of that node's
        # partitions; together they hold every document the answer returned.
        got = await search(nodes[0].url, "kafka", mode="bm25", k=100)
        lines = [json.loads(x) for x in (nodes[0].server.config.parent / "data" / "audit.jsonl").read_text().splitlines()]
        request_id = [x for x in lines if x["tool"] == "search"][-1]["request_id"]
        assert not [
            x for x in lines if x["tool"] == "cluster/search" and x["request_id"] == request_id
        ], "node 0 asked itself over HTTP"
        own = {p["partition"] for p in nodes[0].state()["partitions"]}
        served = {h["id"] for h in got["results"] if h["freshness"]["partition"] in own}
        for n in nodes[1:]:
            path = n.server.config.parent / "data" / "audit.jsonl"
            shard_lines = [
                x for x in map(json.loads, path.read_text().splitlines())
                if x["tool"] == "cluster/search" and x["request_id"] == request_id
            ]
            assert len(shard_lines) == 1, (n.url, shard_lines)
            line = shard_lines[0]
            assert line["outcome"] == "ok" and line["client"] == f"freshet cluster node {nodes[0].url}"
            mine = {p["partition"] for p in n.state()["partitions"]}
            assert {r["partition"] for r in line["results"]} <= mine, (n.url, mine)
            served |= {r["id"] for r in line["results"]}
        assert {h["id"] for h in got["results"]} <= served

        # Lookups by id find a document on whichever node owns its partition.
        ids = [d["id"] for d in docs[:12]] + ["no-such-id"]
        want = await tool(single.url, "document_freshness", {"collection": "docs", "ids": ids})
        for n in nodes:
            got = await tool(n.url, "document_freshness", {"collection": "docs", "ids": ids})
            assert got["documents"] == want["documents"] or [
                (d["id"], d["status"], (d.get("freshness") or {}).get("offset")) for d in got["documents"]
            ] == [(d["id"], d["status"], (d.get("freshness") or {}).get("offset")) for d in want["documents"]]
            assert got["documents"][-1]["status"] == "not_found"
            assert len(got["freshness"]["partitions"]) == PARTITIONS and got["freshness"]["caught_up"]
            for doc_id in ids[:4]:
                one = await tool(n.url, "get_document", {"collection": "docs", "id": doc_id})
                ref = await tool(single.url, "get_document", {"collection": "docs", "id": doc_id})
                assert one["document"]["text"] == ref["document"]["text"]
                assert one["document"]["freshness"]["offset"] == ref["document"]["freshness"]["offset"]
                assert len(one["freshness"]["partitions"]) == PARTITIONS

        # The change feed from any node: paging through `changes` from the oldest change
        # gives every change of every partition once, each partition in offset order, like
        # the single node's feed; the `freshet://` resources answer for every partition too.
        want_feed, _ = await feed(single.url, limit=1000)
        assert len(want_feed) == len(docs)
        cursors = {}
        for n in nodes:
            got, cursors[n.url] = await feed(n.url, limit=25)
            assert sorted(got) == sorted(want_feed)
            for partition in range(PARTITIONS):
                offsets = [o for _, _, p, o in got if p == partition]
                assert offsets == sorted(offsets), (partition, offsets)
            async with http_client(f"{n.url}/mcp") as client:
                for doc_id in ids[:6]:
                    read = await client.read_resource(f"freshet://docs/{doc_id}")
                    assert json.loads(read.contents[0].text)["document"]["id"] == doc_id
                page = json.loads((await client.read_resource("freshet://docs/changes")).contents[0].text)
                assert len(page["changes"]) == 100 and page["more"], page["notes"]

        # Read-your-writes on any node: a document just produced, whichever partition and
        # node it lands on, is found at once with consistency "head".
        with Producer(broker) as p:
            for i, n in enumerate(nodes):
                word = f"zqhead{i}n{random.randrange(10**9)}"
                doc = {"id": f"h{i}", "title": "fresh", "body": word, "v": [1.0, 0.0, 0.0, 0.0]}
                p.send(name, key=doc["id"], value=doc, partition=None)
                got = await search(n.url, word, mode="bm25", consistency="head", max_wait_ms=5000)
                assert [h["id"] for h in got["results"]] == [doc["id"]], got
                assert got["freshness"]["caught_up"], got

        # Each node's cursor, taken before those writes, continues with exactly them.
        for n in nodes:
            got, _ = await feed(n.url, limit=2, since=cursors[n.url])
            assert sorted(i for i, *_ in got) == ["h0", "h1", "h2"], got

        # Internal calls need the shared key.
        r = httpx2.get(f"{nodes[0].url}/internal/cluster/state", timeout=5)
        assert r.status_code == 401
        r = httpx2.post(
            f"{nodes[0].url}/internal/cluster/stats",
            headers={"x-freshet-cluster-key": KEY[:-1] + "x"},
            json={},
            timeout=5,
        )
        assert r.status_code == 401
    finally:
        stop_all(nodes)


async def test_a_killed_nodes_partitions_are_served_again(broker, topic, single, tmp_path):
    name, docs = topic
    nodes = start_cluster(
        tmp_path,
        broker,
        name,
        kafka_util.unique_topic("grp"),
        {"group_protocol": "classic", "session_timeout_ms": 6000},
    )
    try:
        for n in nodes:
            n.server.wait_ready(90)
        wait_for(
            lambda: all(len(v) == 1 for v in owners(nodes).values()) and {
                v[0] for v in owners(nodes).values()
            } == {n.url for n in nodes},
            60,
            "every partition owned exactly once, by all three nodes",
        )
        produce_corpus(broker, name, docs)
        await wait_complete(nodes[0].url, len(docs), 60)
        victim = nodes[2]
        lost = sorted(p["partition"] for p in victim.state()["partitions"])
        assert lost
        victim.server.process.send_signal(signal.SIGKILL)
        victim.server.process.wait(10)
        killed_at = time.monotonic()

        # Until the group notices, an answer is either complete or says what it lacks.
        first = await search(nodes[0].url, "kafka", mode="bm25", k=100)
        if not first["freshness"]["caught_up"]:
            text = " ".join(first["notes"])
            assert all(f"{name}/{p}" in text for p in lost), first["notes"]
        # A document of a lost partition is never reported as not existing.
        await search(single.url, "kafka", consistency="head", max_wait_ms=10000)
        where = await tool(single.url, "document_freshness", {"collection": "docs", "ids": [d["id"] for d in docs]})
        in_lost = [d["id"] for d in where["documents"] if d["freshness"]["partition"] in lost][:5]
        got = await tool(nodes[0].url, "document_freshness", {"collection": "docs", "ids": in_lost})
        assert {d["status"] for d in got["documents"]} <= {"found", "unavailable"}, got

        survivors = nodes[:2]
        wait_for(
            lambda: all(len(v) == 1 for v in owners(survivors).values()),
            FAILOVER_SECONDS,
            "the dead node's partitions reassigned",
        )
        remaining = FAILOVER_SECONDS - (time.monotonic() - killed_at)
        await wait_complete(nodes[0].url, len(docs), max(remaining, 1))
        print(f"served again {time.monotonic() - killed_at:.1f} s after the kill")
        # The new owners hold the replayed documents in the fresh tier until their checkpoint
        # commit (1 s), and the fresh tier counts field lengths by their one-byte codes, not
        # exactly: BM25 scores differ in the 4th digit until then (ranking did not).
        time.sleep(3)
        single.wait_ready()
        for n in survivors:
            await same_as_single(single.url, n.url, QUERIES[:3])
    finally:
        stop_all(nodes)


async def test_with_two_replica_groups_a_dead_node_costs_no_coverage(broker, topic, single, tmp_path):
    """Replica group 0 = nodes 0 and 1, replica group 1 = node 2 (all partitions). Killing
    node 1: node 0 answers completely at once, from node 2 for node 1's partitions, without
    waiting for its group to notice."""
    name, docs = topic
    nodes = start_cluster(
        tmp_path, broker, name, kafka_util.unique_topic("grp"), {}, replicas=[0, 0, 1]
    )
    try:
        for n in nodes:
            n.server.wait_ready(90)
        def split() -> bool:
            a, b, c = ({p["partition"] for p in n.state()["partitions"]} for n in nodes)
            return bool(a) and bool(b) and not a & b and a | b == c == set(range(PARTITIONS))

        wait_for(
            split,
            60,
            "replica group 0 split over two nodes, replica group 1 whole on one",
        )
        assert {n.state()["replica"] for n in nodes} == {0, 1}
        produce_corpus(broker, name, docs)
        await wait_complete(nodes[0].url, len(docs), 60)
        await search(single.url, "kafka", consistency="head", max_wait_ms=10000)
        want = await search(single.url, "kafka", mode="bm25", k=100)

        # The cluster view in list_collections: who owns what, per replica group.
        assert "cluster" not in await tool(single.url, "list_collections", {})
        view = (await tool(nodes[0].url, "list_collections", {}))["cluster"]
        by_url = {n["url"]: n for n in view["nodes"]}
        assert set(by_url) == {n.url for n in nodes} and all(n["reachable"] for n in view["nodes"])
        assert [by_url[n.url]["replica"] for n in nodes] == [0, 0, 1]
        for n in nodes:
            assert sorted(p["partition"] for p in by_url[n.url]["partitions"]) == sorted(
                p["partition"] for p in n.state()["partitions"]
            )
        assert all(p["lag"] == 0 for p in by_url[nodes[0].url]["partitions"]), view
        assert view["uncovered"] == [{"replica": 0, "partitions": []}, {"replica": 1, "partitions": []}]
        lost = sorted(f"{name}/{p['partition']}" for p in by_url[nodes[1].url]["partitions"])

        nodes[1].server.process.send_signal(signal.SIGKILL)
        nodes[1].server.process.wait(10)
        got = await search(nodes[0].url, "kafka", mode="bm25", k=100)
        assert sorted(h["id"] for h in got["results"]) == sorted(h["id"] for h in want["results"])
        assert got["freshness"]["caught_up"], got
        assert not got.get("notes"), got["notes"]
        assert len(got["freshness"]["partitions"]) == PARTITIONS

        # The view says the dead node is unreachable and what its group now lacks (the
        # group has not noticed yet: KIP-848's default session timeout is 45 s).
        view = (await tool(nodes[0].url, "list_collections", {}))["cluster"]
        dead = next(n for n in view["nodes"] if n["url"] == nodes[1].url)
        assert not dead["reachable"] and dead["error"] and dead["partitions"] == []
        uncovered = {u["replica"]: sorted(u["partitions"]) for u in view["uncovered"]}
        assert uncovered == {0: lost, 1: []}, view
    finally:
        stop_all(nodes)


async def test_a_restarted_node_resumes_from_its_checkpoint_and_nothing_is_lost(broker, topic, single, tmp_path):
    """Two nodes; node 1 stops (SIGTERM: it leaves the group, node 0 takes everything), more
    records arrive, node 1 starts again on its data directory: the group splits the
    partitions again, node 0 drops what it handed back, and every document is served once."""
    name, docs = topic
    nodes = start_cluster(tmp_path, broker, name, kafka_util.unique_topic("grp"), {}, replicas=[0, 0])
    try:
        for n in nodes:
            n.server.wait_ready(90)
        # Node 1 must hold (and have applied) a share before it stops, or there is nothing
        # for it to resume: the group can take seconds to give it its partitions.
        wait_split(nodes)
        produce_corpus(broker, name, docs[:60])
        await wait_complete(nodes[0].url, 60, 60)
        wait_for(
            lambda: all(p["caught_up"] and p.get("applied_offset") is not None for p in nodes[1].state()["partitions"]),
            30,
            "node 1 caught up on its partitions",
        )
        assert nodes[1].server.stop() == 0
        wait_for(lambda: len(nodes[0].state()["partitions"]) == PARTITIONS, 60, "node 0 owns all")
        produce_corpus(broker, name, docs[60:])
        restart(nodes[1])
        nodes[1].server.wait_ready(90)
        assert "opened the persisted collections" in nodes[1].server.log()
        wait_for(
            lambda: all(len(v) == 1 for v in owners(nodes).values())
            and all(n.state()["partitions"] for n in nodes),
            60,
            "the partitions split over both nodes again",
        )
        # Node 0 drops the documents of the partitions it handed back after the grace (2 s).
        wait_for(
            lambda: "dropped a partition another node owns now" in nodes[0].server.log(),
            30,
            "node 0 dropping the partitions it handed back",
        )
        await search(single.url, "kafka", consistency="head", max_wait_ms=10000)
        want = await search(single.url, "kafka", mode="bm25", k=100)
        assert len(want["results"]) < 100, "the comparison below needs every match on one page"
        for n in nodes:
            got = await wait_complete(n.url, len(docs), 60)
            assert sorted(h["id"] for h in got["results"]) == sorted(h["id"] for h in want["results"])
            assert not got.get("notes"), got["notes"]
    finally:
        stop_all(nodes)


class QueryLoad:
    """Searches sent one after another, each to the next node that passed its last readiness
    probe — a load balancer probing `/readyz` every PROBE_SECONDS, so it goes on sending to a
    node for up to that long after the node turned unready — from a thread of its own while
    the test restarts nodes. Records every answer or error, and the phase it fell in."""

    PROBE_SECONDS = 0.5

    def __init__(self, nodes: list[Node], queries: list[str]):
        self.nodes, self.queries = nodes, queries
        self.phase = "steady"
        self.outcomes: list[tuple[str, str, str, dict | None, str | None]] = []
        self._ready: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _probe(self) -> None:
        async with httpx2.AsyncClient(timeout=1) as probe:
            while not self._stop.is_set():
                ready = set()
                for node in self.nodes:
                    try:
                        if (await probe.get(f"{node.url}/readyz")).status_code == 200:
                            ready.add(node.url)
                    except httpx2.HTTPError:
                        pass
                self._ready = ready
                await asyncio.sleep(self.PROBE_SECONDS)

    async def _run(self) -> None:
        prober = asyncio.create_task(self._probe())
        turn = 0
        while not self._stop.is_set():
            turn += 1
            ready = sorted(self._ready)
            if not ready:
                await asyncio.sleep(0.05)
                continue
            url = ready[turn % len(ready)]
            query = self.queries[turn % len(self.queries)]
            phase = self.phase
            try:
                got = await search(url, query, mode="bm25", k=100)
                self.outcomes.append((phase, url, query, got, None))
            except Exception as e:  # noqa: BLE001 - every failure is a lost query
                self.outcomes.append((phase, url, query, None, repr(e)))
        await prober

    def __enter__(self) -> "QueryLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


async def test_a_rolling_restart_under_query_load_loses_no_query(broker, topic, single, tmp_path):
    """Replica group 0 = nodes 0 and 1, replica group 1 = node 2. Each node in turn is
    stopped with SIGTERM (it turns not-ready, leaves its group and keeps answering for
    `server.shutdown_drain_ms`, longer than the load balancer's probe period), started again
    on its data directory, and waited for until both groups cover every partition again;
    queries run throughout."""
    name, docs = topic
    nodes = start_cluster(
        tmp_path,
        broker,
        name,
        kafka_util.unique_topic("grp"),
        {},
        replicas=[0, 0, 1],
        server={"shutdown_drain_ms": 1500},
    )

    def covered() -> bool:
        a, b, c = ({p["partition"] for p in n.state()["partitions"]} for n in nodes)
        return not a & b and a | b == c == set(range(PARTITIONS))

    try:
        for n in nodes:
            n.server.wait_ready(90)
        wait_for(covered, 60, "both replica groups covering every partition")
        produce_corpus(broker, name, docs)
        for n in nodes:
            await wait_complete(n.url, len(docs), 60)
        await search(single.url, "kafka", consistency="head", max_wait_ms=10000)
        # Queries whose matches all fit on one page: the comparison is then of sets, which
        # BM25 statistics drifting during handoffs cannot change.
        want = {}
        for q in ["kafka", "tenant", "rebalance shard", "vector", "checkpoint"]:
            ids = sorted(h["id"] for h in (await search(single.url, q, mode="bm25", k=100))["results"])
            if 0 < len(ids) < 100:
                want[q] = ids
        assert len(want) >= 3, want

        with QueryLoad(nodes, list(want)) as load:
            time.sleep(2)
            for i in (2, 0, 1):
                load.phase = f"restarting node {i}"
                restart(nodes[i])
                nodes[i].server.wait_ready(90)
                wait_for(covered, 60, f"both groups covering every partition after node {i}")
                load.phase = f"after node {i}"
            time.sleep(2)

        assert load.outcomes, "no query ran"
        lost = [(phase, url, q, error) for phase, url, q, got, error in load.outcomes if error]
        assert not lost, lost
        for phase, url, q, got, _ in load.outcomes:
            assert sorted(h["id"] for h in got["results"]) == want[q], (phase, url, q, got["notes"])
            assert not got.get("notes"), (phase, url, q, got["notes"])
        phases = {}
        for phase, *_ in load.outcomes:
            phases[phase] = phases.get(phase, 0) + 1
        print(f"{len(load.outcomes)} queries, by phase: {phases}")
        for i in (2, 0, 1):
            assert phases.get(f"restarting node {i}", 0) >= 3, phases
    finally:
        stop_all(nodes)


JWT_ENV = "FRESHET_TEST_CLUSTER_JWT"
JWT_SECRET = "cluster-test-jwt-secret-" + "7e2a" * 8
ISSUER, AUDIENCE = "https://issuer.cluster.test", "freshet-cluster-test"


async def test_the_callers_token_and_tenant_hold_on_every_shard(broker, topic, tmp_path):
    """JWT auth on two nodes; documents of two tenants. A caller of tenant `a` gets, through
    either node, exactly the tenant-`a` documents of every partition and never a tenant-`b`
    one; the token is checked where the call arrives (none: 401), the shards apply the
    tenant filter themselves, and each shard's audit line names the caller."""
    name, docs = topic
    tenanted = {
        **collection(name),
        "metadata_fields": ["tenant"],
        "tenant_field": "tenant",
    }
    nodes = start_cluster(
        tmp_path,
        broker,
        name,
        kafka_util.unique_topic("grp"),
        {},
        replicas=[0, 0],
        sections={"auth": {"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "hs256_secret_env": JWT_ENV}},
        collections=[tenanted],
        env={JWT_ENV: JWT_SECRET},
    )
    for i, d in enumerate(docs):
        d["tenant"] = "a" if i % 2 else "b"
    token = mint_token(JWT_ENV, JWT_SECRET, "alice", collections=["docs"], tenant="a", issuer=ISSUER, audience=AUDIENCE)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for n in nodes:
            n.server.wait_ready(90)
        wait_split(nodes)
        produce_corpus(broker, name, docs)
        want = sorted(d["id"] for d in docs if d["tenant"] == "a" and "kafka" in f"{d['title']} {d['body']}".split())
        assert 0 < len(want) < 100
        by_id = {d["id"]: d for d in docs}
        r = httpx2.post(f"{nodes[0].url}/mcp", json={}, timeout=5)
        assert r.status_code == 401
        for n in nodes:
            async with http_client(f"{n.url}/mcp", headers=headers) as client:
                got = await call(client, "search", {
                    "query": "kafka", "collection": "docs", "mode": "bm25", "k": 100,
                    "consistency": "head", "max_wait_ms": 10000,
                })
                assert sorted(h["id"] for h in got["results"]) == want, got["notes"]
                # A tenant-b document is not there for this caller, whichever node holds it.
                for doc_id in [d["id"] for d in docs if d["tenant"] == "b"][:4]:
                    with pytest.raises(ToolError):
                        await call(client, "get_document", {"collection": "docs", "id": doc_id})
                for doc_id in want[:4]:
                    one = await call(client, "get_document", {"collection": "docs", "id": doc_id})
                    assert one["document"]["metadata"]["tenant"] == "a" and by_id[doc_id]["tenant"] == "a"
        # Node 1 audited what it served node 0's last search for alice.
        lines = [json.loads(x) for x in (nodes[1].server.config.parent / "data" / "audit.jsonl").read_text().splitlines()]
        shard = [x for x in lines if x["tool"] == "cluster/search"]
        assert shard and all(x["principal"]["sub"] == "alice" for x in shard), shard[-1:]
        assert all(by_id[r["id"]]["tenant"] == "a" for x in shard for r in x["results"])
    finally:
        stop_all(nodes)


class CountingEmbedder(FakeEmbedder):
    """The hardening tests' OpenAI-compatible embedder, remembering every text it embeds."""

    texts: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        body = json.loads(raw)
        self.texts.extend(body["input"] if isinstance(body["input"], list) else [body["input"]])
        # Hand the same request to the parent, which reads it from rfile.
        self.rfile = io.BytesIO(raw)
        super().do_POST()


async def test_a_hybrid_query_is_embedded_once_for_the_whole_cluster(broker, topic, tmp_path):
    """Two nodes whose collection embeds text through an OpenAI-compatible server: a hybrid
    search on node 0 is embedded by node 0 alone, and node 1 ranks with that vector."""
    name, docs = topic
    with embeddings_server(CountingEmbedder) as url:
        embedded = {
            **collection(name),
            "embedding": {"provider": "openai", "url": url, "model": "fake", "dimensions": EMBED_DIM},
        }
        del embedded["vector_field"]
        nodes = start_cluster(tmp_path, broker, name, kafka_util.unique_topic("grp"), {},
                              replicas=[0, 0], collections=[embedded])
        try:
            for n in nodes:
                n.server.wait_ready(90)
            wait_split(nodes)
            produce_corpus(broker, name, docs)
            await wait_complete(nodes[0].url, len(docs), 60)
            query = "kafka partition zqonce"
            CountingEmbedder.texts.clear()
            got = await search(nodes[0].url, query, mode="hybrid")
            assert got["mode"] == "hybrid" and got["results"], got
            assert {h["freshness"]["partition"] for h in got["results"]} - {
                p["partition"] for p in nodes[0].state()["partitions"]
            }, "no hit from node 1's partitions: the test shows nothing"
            assert CountingEmbedder.texts.count(query) == 1, CountingEmbedder.texts
        finally:
            stop_all(nodes)

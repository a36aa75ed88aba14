"""Scale-out (issue #19): ingest capacity with 1, 2 and 3 cluster nodes on this machine.

For each node count in turn: a fresh 6-partition topic, that many `freshet serve` nodes (one
replica group, a fresh consumer group and fresh data directories); once the group has given
every partition to one node, synthetic documents with 384-d precomputed vectors
(bench/harness.py's corpus, clustered; serialized beforehand) are produced as fast as a bulk
producer goes (far faster than the nodes ingest, so a backlog forms at once), and the run
times the first record
produced to every partition caught up (lag 0, seen through node 0's `search` watermark) and
to every vector in its node's HNSW graph, with each node's CPU time over that span and the
documents it holds. `records_per_second` is records ÷ the second span.

All nodes share this machine's two cores (with the broker), so more nodes cannot ingest
faster here; what the run measures is the CPU each record costs per node, which is the input
of the per-node projection in docs/BENCHMARKS.md ("Cluster (issue 19)").

    .venv-bench/bin/python bench/cluster_ingest.py [--documents 20000] [--nodes 1,2,3] [--broker HOST:PORT]

Needs the release binary (`cargo build --release --bins`) or FRESHET_BIN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
import kafka_util  # noqa: E402
import scifact  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from cluster import PARTITIONS, cluster_nodes, cpu_seconds, documents_held, wait_assignment  # noqa: E402
from freshet_util import FreshetServer, call, http_client  # noqa: E402


def start_nodes(work: Path, broker: str, topic: str, count: int) -> list[FreshetServer]:
    """`count` nodes of one replica group, each with its own port and data directory."""
    collection = {
        "name": "docs", "topics": [topic], "format": "json", "id_field": "id",
        "title_field": "title", "text_fields": ["title", "body"], "vector_field": "embedding",
        "embedding": {"provider": "precomputed", "dimensions": harness.DIM}, "hnsw": dict(harness.HNSW),
    }
    return cluster_nodes(work, broker, collection, count, 10_000, prefix=f"n{count}-node")


async def caught_up(node: FreshetServer, records: int, timeout: float) -> None:
    """Until `node`'s answers cover every partition at lag 0 and the end offsets sum to
    `records` (so nothing produced is still unread)."""
    deadline = time.monotonic() + timeout
    async with http_client(node.mcp_url) as client:
        while True:
            try:
                res = await call(client, "search", {"query": "the", "collection": "docs", "mode": "bm25", "k": 1})
                f = res["freshness"]
                applied = sum((p["applied_offset"] or -1) + 1 for p in f["partitions"])
                if (f["caught_up"] and len(f["partitions"]) == PARTITIONS
                        and all(p["lag"] == 0 for p in f["partitions"]) and applied >= records):
                    return
            except Exception:  # noqa: BLE001 - not answering yet while starting
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not caught up after {timeout}s")
            await asyncio.sleep(0.5)


def serialized(corpus: Any, documents: int) -> list[tuple[bytes, bytes]]:
    """Every record's key and value, built before the clock starts: serializing 384 floats
    as JSON in Python is slower than freshet ingests them."""
    out = []
    for i in range(documents):
        doc = corpus.doc(i)
        out.append((doc["id"].encode(), json.dumps(doc).encode()))
    return out


def produce(broker: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """A bulk loader's settings (as bench/harness.py's): long linger, large lz4 batches."""
    p = Producer({"bootstrap.servers": broker, "linger.ms": 100, "batch.num.messages": 2000,
                  "queue.buffering.max.messages": 200000, "compression.type": "lz4"})
    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(300)


def run(work: Path, broker: str, count: int, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """`count` nodes on a fresh topic: once the group has settled (every partition owned by
    one node, every node owning some), the documents are produced as fast as the producer
    goes, and the time from the first record produced to every partition caught up is the
    measure (the producer is faster than the nodes, so a backlog forms at once)."""
    topic = kafka_util.unique_topic(f"cluster-ingest-{count}")
    kafka_util.create_topic(broker, topic, partitions=PARTITIONS)
    nodes = start_nodes(work, broker, topic, count)
    try:
        for n in nodes:
            n.wait_ready(300)
        assignment = wait_assignment(nodes, 120)
        cpu_before = {i: cpu_seconds(n.process.pid) for i, n in enumerate(nodes)}
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        produce(broker, topic, records)
        produced_s = time.perf_counter() - started
        asyncio.run(caught_up(nodes[0], len(records), 3600))
        searchable_s = time.perf_counter() - started
        # Records are searchable before their vectors are in the graph (the graph's backlog is
        # scanned exactly); the work is done when every node's graph has them all.
        for n in nodes:
            asyncio.run(harness.wait_graph_backlog_empty(n, 3600))
        seconds = time.perf_counter() - started
        cpu = {f"node{i}": round(cpu_seconds(n.process.pid) - cpu_before[i], 2) for i, n in enumerate(nodes)}
        held = [asyncio.run(documents_held(n)) for n in nodes]
        assert sum(held) == len(records), f"nodes hold {held} documents, {len(records)} were produced"
        total_cpu = sum(cpu.values())
        return {
            "nodes": count,
            "assignment": assignment,
            "produce_seconds": round(produced_s, 1),
            "seconds_to_caught_up": round(searchable_s, 1),
            "seconds_to_all_in_graph": round(seconds, 1),
            "records_per_second": round(len(records) / seconds, 1),
            "cpu_seconds": cpu,
            "cpu_ms_per_record": round(total_cpu * 1000 / len(records), 3),
            "documents_per_node": held,
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        }
    finally:
        for n in nodes:
            code = n.stop()
            if code not in (0, None):
                print(n.log()[-3000:], file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--documents", type=int, default=20_000)
    ap.add_argument("--nodes", default="1,2,3", help="node counts to run, in order")
    ap.add_argument("--broker", default="", help="bootstrap servers; default: start Apache Kafka here")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster-ingest.json")
    args = ap.parse_args()
    os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
    os.environ.setdefault("FRESHET_LOG", "warn")
    work = ROOT / "bench" / "work" / "cluster-ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker = None
    bootstrap = args.broker
    if not bootstrap:
        broker = kafka_util.start_kafka(work / "kafka")
        bootstrap = broker.bootstrap
    result: dict[str, Any] = {
        "documents": args.documents, "dimensions": harness.DIM, "partitions": PARTITIONS,
        "cpus": os.cpu_count(), "binary": os.environ["FRESHET_BIN"], "commit": harness.git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": [],
    }
    try:
        records = serialized(harness.Corpus(args.documents), args.documents)
        for count in (int(c) for c in args.nodes.split(",")):
            r = run(work, bootstrap, count, records)
            result["runs"].append(r)
            print(r, flush=True)
    finally:
        if broker is not None:
            broker.stop()
    scifact.write_result(result, args.out)


if __name__ == "__main__":
    main()

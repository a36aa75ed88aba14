"""Scale-out (issue #19): ingest capacity with 1, 2 and 3 cluster nodes on this machine.

Produces a backlog of synthetic documents with 384-d precomputed vectors (bench/harness.py's
corpus, clustered) to a 6-partition topic, then for each node count in turn starts that
many `freshet serve` nodes (one replica group, a fresh consumer group and fresh data
directories), and times how long the cluster takes from the nodes' start to every partition
caught up (lag 0, seen through node 0's `search` watermark), with each node's CPU time and
documents held. The time includes the group forming (a partition read by one node and then
handed to another costs that node's work too): what bringing N nodes up on a backlog costs.

All nodes share this machine's two cores (with the broker), so more nodes cannot ingest
faster here; what the run measures is the CPU each record costs per node, which is the input
of the per-node projection in docs/BENCHMARKS.md ("Cluster (issue 19)").

    .venv-bench/bin/python bench/cluster_ingest.py [--documents 20000] [--nodes 1,2,3] [--broker HOST:PORT]

Needs the release binary (`cargo build --release --bins`) or FRESHET_BIN.
"""

from __future__ import annotations

import argparse
import asyncio
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
from cluster import KEY, KEY_ENV, PARTITIONS, cpu_seconds, documents_held  # noqa: E402
from freshet_util import FreshetServer, call, http_client, write_config  # noqa: E402


def start_nodes(work: Path, broker: str, topic: str, count: int) -> list[FreshetServer]:
    """`count` nodes of one replica group, each with its own port and data directory."""
    ports = [kafka_util.free_port() for _ in range(count)]
    peers = [f"http://127.0.0.1:{p}" for p in ports]
    group = kafka_util.unique_topic(f"ingest-{count}")
    collection = {
        "name": "docs", "topics": [topic], "format": "json", "id_field": "id",
        "title_field": "title", "text_fields": ["title", "body"], "vector_field": "embedding",
        "embedding": {"provider": "precomputed", "dimensions": harness.DIM}, "hnsw": dict(harness.HNSW),
    }
    nodes = []
    for i, port in enumerate(ports):
        d = work / f"n{count}-node{i}"
        d.mkdir(parents=True)
        config = write_config(d / "freshet.toml", {
            "server": {"data_dir": str(d / "data")},
            "kafka": {"brokers": broker},
            "cluster": {"group": group, "peers": peers, "advertise_url": peers[i], "key_env": KEY_ENV,
                        "handoff_grace_ms": 2000, "request_timeout_ms": 10000},
        }, [collection])
        node = FreshetServer(config, d, env={KEY_ENV: KEY, "FRESHET_SERVER__HTTP_ADDR": f"127.0.0.1:{port}"})
        node.port, node.url = port, peers[i]
        nodes.append(node)
    return nodes


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


def run(work: Path, broker: str, topic: str, count: int, records: int, documents: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    nodes = start_nodes(work, broker, topic, count)
    try:
        asyncio.run(caught_up(nodes[0], records, 3600))
        seconds = time.perf_counter() - started
        cpu = {f"node{i}": round(cpu_seconds(n.process.pid), 2) for i, n in enumerate(nodes)}
        held = [asyncio.run(documents_held(n)) for n in nodes]
        assert sum(held) == documents, f"nodes hold {held} documents, {documents} were produced"
        total_cpu = sum(cpu.values())
        return {
            "nodes": count,
            "seconds_to_caught_up": round(seconds, 1),
            "records_per_second": round(records / seconds, 1),
            "cpu_seconds": cpu,
            "cpu_ms_per_record": round(total_cpu * 1000 / records, 3),
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
        topic = kafka_util.unique_topic("cluster-ingest")
        kafka_util.create_topic(bootstrap, topic, partitions=PARTITIONS)
        corpus = harness.Corpus(args.documents)
        produced_at = time.perf_counter()
        records = harness.produce_all(bootstrap, topic, corpus, args.documents)
        print(f"produced {records} records in {time.perf_counter() - produced_at:.1f}s", flush=True)
        for count in (int(c) for c in args.nodes.split(",")):
            r = run(work, bootstrap, topic, count, records, args.documents)
            result["runs"].append(r)
            print(r, flush=True)
    finally:
        if broker is not None:
            broker.stop()
    scifact.write_result(result, args.out)


if __name__ == "__main__":
    main()

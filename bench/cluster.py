"""Scale-out (issue #19): SciFact through a cluster (3 nodes, or `--nodes N`) against a single node.

Starts Apache Kafka (or uses --broker), a 6-partition topic, one single-node `freshet serve`
(the reference) and the cluster's nodes (one replica group) on loopback, waits until the
group has given every partition to exactly one node, then produces the SciFact corpus the
way a real producer does (key partitioner, batching, compression). Then:

- quality: every query through MCP `search` on the single node and on cluster node 0, per
  mode: nDCG@10 of each (bench/scifact.py's evaluation), the share of queries whose top-10
  ids are identical, and the largest BM25 score difference;
- throughput: bench/loadgen.py closed loop (default 4 clients, `bm25`, k = 10) against the
  single node and against cluster node 0 (which fans out to the others), with the load
  average and each process's CPU time per query (from /proc), the inputs of the paper
  projection in docs/BENCHMARKS.md ("Cluster (issue 19)").

Default `--provider none` (BM25 only): embedding SciFact twice (single node + cluster) with
the local model takes far longer than the rest on 2 shared cores. `--provider local` adds
the vector and hybrid modes.

    .venv/bin/python bench/cluster.py [--nodes 3] [--broker HOST:PORT] [--provider local] [--seconds 20]

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

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import kafka_util  # noqa: E402
import loadgen  # noqa: E402
import scifact  # noqa: E402
from freshet_util import FreshetServer, call, http_client, write_config  # noqa: E402

PARTITIONS = 6
DEFAULT_NODES = 3
KEY = "bench-cluster-key-0123456789abcdef"
KEY_ENV = "FRESHET_BENCH_CLUSTER_KEY"


def collection(topic: str, provider: str, model_dir: Path) -> dict:
    return {
        "name": "scifact", "topics": [topic], "format": "json", "id_field": "id",
        "title_field": "title", "text_fields": ["title", "text"],
        "embedding": {"provider": "local", "model_dir": str(model_dir)} if provider == "local"
        else {"provider": "none"},
    }


def start_nodes(work: Path, broker: str, topic: str, coll: dict, timeout_ms: int,
                count: int) -> tuple[FreshetServer, list[FreshetServer]]:
    """The single reference node and the cluster's nodes (same collection, one replica group)."""
    single_dir = work / "single"
    single_dir.mkdir(parents=True)
    single = FreshetServer(write_config(single_dir / "freshet.toml", {
        "kafka": {"brokers": broker}, "server": {"data_dir": str(single_dir / "data")}}, [coll]), single_dir)
    return single, cluster_nodes(work, broker, coll, count, timeout_ms)


def cluster_nodes(work: Path, broker: str, coll: dict, count: int, timeout_ms: int,
                  prefix: str = "node") -> list[FreshetServer]:
    """`count` nodes of one replica group in a fresh consumer group, each with its own port
    and data directory `<work>/<prefix><i>`."""
    ports = [kafka_util.free_port() for _ in range(count)]
    peers = [f"http://127.0.0.1:{p}" for p in ports]
    group = kafka_util.unique_topic("bench-grp")
    nodes = []
    for i, port in enumerate(ports):
        d = work / f"{prefix}{i}"
        d.mkdir(parents=True)
        config = write_config(d / "freshet.toml", {
            "server": {"data_dir": str(d / "data")},
            "kafka": {"brokers": broker},
            "cluster": {"group": group, "peers": peers, "advertise_url": peers[i], "key_env": KEY_ENV,
                        "handoff_grace_ms": 2000, "request_timeout_ms": timeout_ms},
        }, [coll])
        node = FreshetServer(config, d, env={KEY_ENV: KEY, "FRESHET_SERVER__HTTP_ADDR": f"127.0.0.1:{port}"})
        node.port, node.url = port, peers[i]
        nodes.append(node)
    return nodes


def owned(node: FreshetServer) -> list[int]:
    r = httpx2.get(f"{node.url}/internal/cluster/state", headers={"x-freshet-cluster-key": KEY}, timeout=5)
    r.raise_for_status()
    return sorted(p["partition"] for p in r.json()["partitions"])


def wait_assignment(nodes: list[FreshetServer], timeout: float) -> dict[str, list[int]]:
    """Until every partition is owned by exactly one node and every node owns some: the corpus
    is produced after that, so that no node holds (and counts in its BM25 statistics) chunks
    of a partition it handed off while the group formed (docs/CLUSTER.md)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = {n.url: owned(n) for n in nodes}
            flat = sorted(p for ps in last.values() for p in ps)
            if flat == list(range(PARTITIONS)) and all(last.values()):
                return last
        except httpx2.HTTPError as e:
            last = e
        time.sleep(0.3)
    raise TimeoutError(f"assignment did not settle in {timeout}s: {last}")


async def wait_cluster(node: FreshetServer, timeout: float) -> None:
    """Until a search on `node` is caught up on every partition (lag 0 everywhere)."""
    deadline = time.monotonic() + timeout
    async with http_client(node.mcp_url) as client:
        while True:
            res = await call(client, "search", {"query": "cell", "collection": "scifact", "mode": "bm25", "k": 1})
            f = res["freshness"]
            if f["caught_up"] and len(f["partitions"]) == PARTITIONS and all(p["lag"] == 0 for p in f["partitions"]):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not caught up after {timeout}s: {f}")
            await asyncio.sleep(0.5)


async def documents_held(node: FreshetServer) -> int:
    async with http_client(node.mcp_url) as client:
        return (await call(client, "list_collections", {}))["collections"][0]["documents"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(target: FreshetServer, procs: dict[str, FreshetServer], queries: list[str],
               clients: int, seconds: float) -> dict[str, Any]:
    bodies = [loadgen.mcp_body("search", {"query": q, "collection": "scifact", "mode": "bm25", "k": 10}, i)
              for i, q in enumerate(queries)]
    before = {name: cpu_seconds(p.process.pid) for name, p in procs.items()}
    load_before = os.getloadavg()[0]
    res = loadgen.closed_loop("127.0.0.1", target.port, "/mcp", loadgen.mcp_headers("search"), bodies,
                              clients, seconds, must_contain=b'"results"')
    load_after = os.getloadavg()[0]
    done = res["n"]
    res["cpu_ms_per_query"] = {name: round((cpu_seconds(p.process.pid) - before[name]) * 1000 / max(done, 1), 3)
                               for name, p in procs.items()}
    res["load_average_1m"] = {"before": round(load_before, 2), "after": round(load_after, 2)}
    for k in ("p50", "p95", "p99", "max", "mean", "qps"):
        if k in res:
            res[k] = round(res[k], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data" / "scifact")
    ap.add_argument("--broker", default="", help="bootstrap servers; default: start Apache Kafka here")
    ap.add_argument("--provider", default="none", choices=["none", "local"])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster nodes (2 to 6)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--request-timeout-ms", type=int, default=2000,
                    help="cluster.request_timeout_ms (the default is 2000; a debug build needs more)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster.json")
    args = ap.parse_args()
    if not args.data.exists():
        args.data = Path("/work/shared/data/scifact")

    os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
    os.environ.setdefault("FRESHET_LOG", "warn")
    work = ROOT / "bench" / "work" / "cluster"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus, queries, qrels = scifact.load_beir(args.data)
    rels = qrels[args.split]
    qids = sorted(q for q in rels if q in queries)
    modes = ["bm25"] + (["vector", "hybrid"] if args.provider == "local" else [])

    broker = None
    bootstrap = args.broker
    if not bootstrap:
        broker = kafka_util.start_kafka(work / "kafka")
        bootstrap = broker.bootstrap
    topic = kafka_util.unique_topic("scifact-cluster")
    kafka_util.create_topic(bootstrap, topic, partitions=PARTITIONS)
    single, nodes = start_nodes(work, bootstrap, topic, collection(topic, args.provider, args.model_dir),
                                args.request_timeout_ms, args.nodes)
    result: dict[str, Any] = {
        "dataset": str(args.data), "documents": len(corpus), "split": args.split, "queries": len(qids),
        "partitions": PARTITIONS, "nodes": args.nodes, "provider": args.provider, "cpus": os.cpu_count(),
        "binary": os.environ["FRESHET_BIN"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        for s in [single, *nodes]:
            s.wait_ready(300)
        result["assignment"] = wait_assignment(nodes, 120)
        print(f"assignment {result['assignment']}", flush=True)
        produce_s = scifact.produce(bootstrap, topic, corpus)
        print(f"produced {len(corpus)} records in {produce_s:.1f}s", flush=True)
        started = time.perf_counter()
        asyncio.run(scifact.wait_documents(single, len(corpus), 3600))
        asyncio.run(wait_cluster(nodes[0], 3600))
        result["ingest_seconds_both"] = round(time.perf_counter() - started, 1)
        held = [asyncio.run(documents_held(n)) for n in nodes]
        result["documents_per_node"] = held
        assert sum(held) == len(corpus), f"nodes hold {held} documents, the corpus has {len(corpus)}"
        # Chunks not yet committed are scored from the fresh tier (field lengths by their
        # one-byte codes); wait for the checkpoint commit so both sides score committed chunks.
        time.sleep(3)

        result["quality"] = {}
        for mode in modes:
            ref_scored: dict[str, list] = {}
            got_scored: dict[str, list] = {}
            ref, _ = asyncio.run(scifact.run_queries(single.mcp_url, queries, qids, mode, ref_scored))
            got, lat = asyncio.run(scifact.run_queries(nodes[0].mcp_url, queries, qids, mode, got_scored))
            same = sum(1 for q in qids if ref[q][:10] == got[q][:10])
            diffs = {q: max((abs(a[1] - b[1]) for a, b in zip(ref_scored[q][:10], got_scored[q][:10])
                             if a[0] == b[0]), default=0.0) for q in qids}
            diff = max(diffs.values(), default=0.0)
            r = {
                "single ndcg@10": scifact.evaluate(ref, rels)["ndcg@10"],
                "cluster ndcg@10": scifact.evaluate(got, rels)["ndcg@10"],
                "identical top-10 share": round(same / len(qids), 4),
                "max score diff (same id, top 10)": round(diff, 6),
                "queries with a score diff > 1e-3": sum(1 for d in diffs.values() if d > 1e-3),
                "queries with different top-10": {q: {"single": ref[q][:10], "cluster": got[q][:10]}
                                                  for q in qids if ref[q][:10] != got[q][:10]},
                "cluster latency ms p50 (k=100, sequential)": round(scifact.percentile(lat, 50) * 1000, 1),
            }
            result["quality"][mode] = r
            print(f"{mode}: {r}", flush=True)

        texts = [queries[q] for q in qids]
        procs = {"single": single, **{f"node{i}": n for i, n in enumerate(nodes)}}
        result["throughput"] = {}
        for name, target in (("single node", single), (f"{args.nodes}-node cluster (via node0)", nodes[0])):
            r = throughput(target, procs, texts, args.clients, args.seconds)
            result["throughput"][name] = r
            print(f"{name}: {r}", flush=True)
    finally:
        for s in [single, *nodes]:
            code = s.stop()
            if code not in (0, None):
                print(s.log()[-3000:], file=sys.stderr)
        if broker is not None:
            broker.stop()
    scifact.write_result(result, args.out)


if __name__ == "__main__":
    main()

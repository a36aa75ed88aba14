"""Where a query's time goes (issue 18, target 3).

Starts a private Apache Kafka broker and a release freshet over the bench corpus (the same
documents, vectors and query bodies as bench/harness.py), waits until every vector is in the
graph, then for each mode and client count runs closed-loop clients (bench/loadgen.py) while
`perf` samples the server, and prints the latency beside a flat CPU profile grouped by
component: HTTP + MCP (hyper, axum, rmcp, JSON), BM25 (tantivy), graph (the HNSW graph, hnsw_rs
in builds before 446c4b8, + distance kernels), fusion and ranking, rendering (snippets,
stamps), the async runtime, the allocator and the kernel.

The broker's data and freshet's data_dir live under --work and are reused by the next run
with the same --work and --docs (a persisted freshet opens in seconds), so a change can be
measured before and after without producing and indexing again:

    .venv-bench/bin/python bench/query_profile.py --docs 100000 --work .tools/bench/profile-100k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import harness
from harness import Corpus, FreshetServer, FreshetTarget, freshet_config, kafka_util, loadgen

#: Symbol substrings → component, first match wins (order matters: a tantivy symbol that
#: mentions serde is still BM25).
COMPONENTS = [
    ("graph", ("hnsw_rs", "freshet::index::vector", "anndists", "DistDot", "dot_avx", "kernel")),
    ("bm25", ("tantivy", "fresh_text", "freshet::index::text")),
    ("fusion+ranking", ("fusion", "ranking", "search_collection", "current_best", "merge_collections",
                        "RankJob", "freshet::index::filter")),
    ("rendering", ("snippet", "Snippet", "StampOut", "chunk_text", "freshet::mcp::tools")),
    ("http+mcp", ("hyper", "axum", "rmcp", "tower", "h2::", "http::", "serde_json", "serde::",
                  "freshet::mcp", "freshet::api", "httparse", "bytes::")),
    ("view", ("dashmap", "freshet::view")),
    ("runtime", ("tokio", "parking_lot", "crossbeam", "std::sync", "futex")),
    ("allocator", ("malloc", "free", "realloc", "memcpy", "memmove", "memset", "_int_", "jemalloc",
                   "mi_", "cfree")),
]


def component(symbol: str, dso: str) -> str:
    if dso.startswith("[kernel") or symbol.startswith("[k]"):
        return "kernel"
    for name, needles in COMPONENTS:
        if any(n in symbol for n in needles):
            return name
    return "other"


def perf_profile(pid: int, seconds: float, out: Path) -> dict:
    """Samples `pid` for `seconds` (flat, every thread); returns self time per component and
    the top symbols, as shares of all samples."""
    data = out.with_suffix(".data")
    subprocess.run(["perf", "record", "-q", "-F", "997", "-p", str(pid), "-o", str(data), "--",
                    "sleep", str(seconds)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--sort", "dso,symbol", "--percent-limit", "0.05", "-q"],
                            capture_output=True, text=True, check=True).stdout
    data.unlink(missing_ok=True)
    by_component: dict[str, float] = defaultdict(float)
    top = []
    for line in report.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or not parts[0].endswith("%"):
            continue
        share, dso, symbol = float(parts[0].rstrip("%")), parts[1], parts[3].strip()
        by_component[component(symbol, dso)] += share
        if len(top) < 25:
            top.append({"percent": share, "dso": dso, "symbol": symbol[:160]})
    return {"components_percent": dict(sorted(by_component.items(), key=lambda kv: -kv[1])),
            "top_symbols": top}


async def prepared_server(args, work: Path) -> tuple[object, FreshetServer, Corpus]:
    broker = kafka_util.start_kafka(work / "kafka")
    corpus = Corpus(args.docs, args.vectors)
    marker = work / f"produced-{args.docs}-{args.vectors}"
    if not marker.exists():
        kafka_util.create_topic(broker, "bench", partitions=args.partitions)
        records = harness.produce_all(broker.bootstrap, "bench", corpus, args.docs)
        marker.write_text(str(records))
        print(f"produced {records} records", flush=True)
    config = freshet_config(work, broker.bootstrap, ["bench"], "bench")
    server = FreshetServer(config, work, env={"FRESHET_LOG": "warn"})
    t = time.monotonic()
    server.wait_ready(timeout=args.ready_timeout)
    backlog = await harness.wait_graph_backlog_empty(server, args.ready_timeout)
    print(f"freshet ready in {time.monotonic() - t:.1f} s (graph backlog empty {backlog:.1f} s later), "
          f"rss {harness.rss_bytes(server.process.pid) / 2**20:.0f} MiB", flush=True)
    return broker, server, corpus


async def main_async(args) -> dict:
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    broker, server, corpus = await prepared_server(args, work)
    target = FreshetTarget(server, "bench")
    result: dict = {"docs": args.docs, "vectors": args.vectors, "commit": harness.git_commit(),
                    "load_avg_at_start": os.getloadavg()[0], "runs": []}
    try:
        for mode in args.modes:
            bodies = target.query_bodies(corpus, mode)
            for clients in args.clients:
                run: dict = {"mode": mode, "clients": clients, "load_avg": os.getloadavg()[0]}
                loop = asyncio.get_running_loop()
                latency = loop.run_in_executor(None, lambda: loadgen.closed_loop(
                    "127.0.0.1", server.port, "/mcp", loadgen.mcp_headers("search"), bodies, clients,
                    args.seconds, must_contain=b'"isError":false'))
                if args.perf:
                    await asyncio.sleep(1)  # past the clients' start-up
                    run["profile"] = await loop.run_in_executor(
                        None, perf_profile, server.process.pid, max(1.0, args.seconds - 2), work / "perf")
                run["latency"] = await latency
                lat = run["latency"]
                print(f"{mode} x{clients}: p50={lat['p50']:.2f} p99={lat['p99']:.2f} ms "
                      f"qps={lat['qps']:.0f} errors={lat.get('errors', 0)} load={run['load_avg']:.1f}", flush=True)
                if "profile" in run:
                    parts = ", ".join(f"{k} {v:.1f}%" for k, v in run["profile"]["components_percent"].items())
                    print(f"  cpu: {parts}", flush=True)
                    for s in run["profile"]["top_symbols"][:args.top]:
                        print(f"    {s['percent']:5.1f}%  {s['symbol'][:110]}", flush=True)
                result["runs"].append(run)
    finally:
        await target.aclose()
        server.stop()
        broker.stop()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--vectors", choices=["clustered", "uniform"], default="clustered")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["bm25", "vector", "hybrid"])
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 4])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--top", type=int, default=8, help="top symbols printed per run")
    ap.add_argument("--no-perf", dest="perf", action="store_false", help="latency only")
    ap.add_argument("--work", type=Path, default=harness.ROOT / ".tools" / "bench" / "profile")
    ap.add_argument("--ready-timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args()
    if args.perf and not shutil.which("perf"):
        sys.exit("query_profile: `perf` is not installed (apt-get install linux-perf), or pass --no-perf")
    result = asyncio.run(main_async(args))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

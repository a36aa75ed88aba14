"""Catch-up rate, memory, recall@10 and idle query latency of two freshet binaries back to
back on one broker and one topic: an A/B for changes to the vector index (issue 18).

    .venv-bench/bin/python bench/ingest_ab.py --bins f32=.tools/ab/freshet-after,f16=target/release/freshet \
        [--docs 100000] [--vectors clustered] [--rounds 1] [--clients 1,4]

Each round starts every binary in turn on an empty data directory (freshet's default
persistence, as bench/run.sh's ingest phase since 2026-12-02; runs before that were in
memory), times `/readyz` (the whole topic applied), reads its resident
memory, waits for the graph backlog, then measures recall@10 (200 queries against exact
search) and idle `vector` and `hybrid` latency. Writes bench/results/ingest-ab-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import kafka_util  # noqa: E402
from freshet_util import FreshetServer  # noqa: E402
from harness import (Corpus, FreshetTarget, freshet_config, git_commit, latency_matrix,  # noqa: E402
                     phase_recall, produce_all, time_to_ready, wait_graph_backlog_empty)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def smaps_rollup(pid: int) -> dict[str, int]:
    """Resident memory by kind (KiB): `Anonymous` is the heap, the rest of `Rss` file pages."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bins", required=True,
                    help="name=path,name=path; name=path:int8 sets the collection's vector_storage")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--vectors", choices=["clustered", "uniform"], default="clustered")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--latency-seconds", type=float, default=8)
    ap.add_argument("--partitions", type=int, default=2)
    args = ap.parse_args()
    bins = dict(item.split("=", 1) for item in args.bins.split(","))
    clients = [int(c) for c in args.clients.split(",")]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = ROOT / ".tools" / "bench" / f"ingest-ab-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    broker = kafka_util.start_kafka(work / "kafka")
    result = {"commit": git_commit(), "bins": bins, "docs": args.docs, "vectors": args.vectors,
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": []}
    corpus = Corpus(args.docs, args.vectors)
    topic = "docs"
    kafka_util.create_topic(broker, topic, partitions=args.partitions)
    records = produce_all(broker.bootstrap, topic, corpus, args.docs)
    print(f"produced {records} records", flush=True)
    try:
        for round_no in range(args.rounds):
            for name, spec in bins.items():
                path, _, storage = spec.partition(":")
                os.environ["FRESHET_BIN"] = str(Path(path).resolve())
                run_dir = work / f"r{round_no}{name}"
                run_dir.mkdir()
                # The harness's recall phase queries the collection `bench`.
                server = FreshetServer(freshet_config(run_dir, broker.bootstrap, [topic], "bench",
                                                      vector_storage=storage or None), run_dir,
                                       env={"FRESHET_LOG": "warn"})
                target = FreshetTarget(server, "bench")
                run = {"bin": name, "round": round_no, "load_average_at_start": load_average()}
                try:
                    ingest = time_to_ready(server, records, 7200, [])
                    run["ingest"] = {**ingest, "rss_bytes_per_doc": ingest["rss_bytes"] / args.docs}
                    run["graph_backlog_after_ready_s"] = await wait_graph_backlog_empty(server)
                    run["smaps_rollup_kib"] = smaps_rollup(server.process.pid)
                    run["load_average_after_ingest"] = load_average()
                    print(f"{name} round {round_no}: {run['ingest']['records_per_s']:.0f} records/s, "
                          f"{run['ingest']['rss_bytes_per_doc'] / 1024:.2f} KiB/doc, load {run['load_average_at_start']}"
                          f" -> {run['load_average_after_ingest']}", flush=True)
                    run["recall"] = await phase_recall(server, corpus, args.docs)
                    print(f"{name} recall {run['recall']}", flush=True)
                    run["load_average_before_latency"] = load_average()
                    run["latency"] = latency_matrix(
                        lambda mode, c: target.latency(corpus, mode, c, args.latency_seconds),
                        ["vector", "hybrid"], clients, name)
                    result["runs"].append(run)
                finally:
                    await target.aclose()
                    server.stop()
    finally:
        broker.stop()
    out = ROOT / "bench" / "results" / f"ingest-ab-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

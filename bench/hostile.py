"""Hostile-load test: do `/healthz` and a cheap `search` keep answering while attackers send
the most expensive queries they can?

One run, against a real Apache Kafka broker (scripts/kafka.sh, or --brokers) and a release
`freshet serve` with default settings:

1. `--docs` documents (BM25 only) are produced, freshet starts and catches up.
2. baseline — a probe alternates `GET /healthz` and a cheap `search` (two words, k=5,
   bm25) over one keep-alive connection each, for `--seconds`; p50/p99/max per probe.
3. hostile — the same probe while `--attackers` processes send, in closed loop over MCP HTTP,
   queries of ~4.5 MB, ~270 KB and of exactly the allowed bounds (16 KiB, 128 distinct
   terms: the most expensive query freshet still serves). Attacker answers are counted by
   HTTP status and by tool outcome.

    .venv/bin/python bench/hostile.py                     # ~2 minutes
    .venv/bin/python bench/hostile.py --seconds 60 --attackers 8

Writes bench/results/hostile-<time>.json and prints a markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import kafka_util  # noqa: E402
from freshet_util import FreshetServer, write_config  # noqa: E402
from kafka_util import Producer  # noqa: E402
from loadgen import mcp_body, mcp_headers, mcp_result, percentiles  # noqa: E402

WORDS = ["kafka", "stream", "offset", "replica", "tantivy", "vector", "freshness", "audit",
         "partition", "broker", "consumer", "index", "search", "latency", "snapshot", "topic"]


def start_kafka(work: Path) -> tuple[subprocess.Popen, str]:
    """A private single-node Kafka (scripts/kafka.sh run) on a free loopback port."""
    port = kafka_util.free_port()
    log = open(work / "kafka.log", "wb")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "kafka.sh"), "run", str(work / "kafka"), str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={"KAFKA_HEAP": "512m", **os.environ},
                            preexec_fn=kafka_util._die_with_parent)
    brokers = f"127.0.0.1:{port}"
    kafka_util.wait_ready(brokers, timeout=120)
    return proc, brokers


def broker_for(brokers: str | None, work: Path) -> tuple[subprocess.Popen | None, str]:
    """`brokers` when given, else a private Kafka started in `work` (and its process)."""
    if brokers:
        return None, brokers
    return start_kafka(work)


def stop_all(server: FreshetServer | None, kafka: subprocess.Popen | None) -> None:
    """Stops freshet, then the private broker (when this run started one)."""
    if server:
        server.stop()
    if kafka:
        kafka.terminate()
        kafka.wait(30)


def document(i: int) -> dict[str, Any]:
    body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(60))
    return {"id": f"d{i}", "title": f"Document {i}", "body": f"{body} serial{i}"}


def produce(brokers: str, topic: str, start: int, n: int) -> None:
    with Producer(brokers, **{"linger.ms": 20, "compression.type": "lz4"}) as producer:
        for at in range(start, start + n, 2000):
            producer.send_many(topic, [(f"d{i}", document(i)) for i in range(at, min(start + n, at + 2000))])


def start_freshet(work: Path, brokers: str, topic: str, extra_server: dict[str, Any] | None = None) -> FreshetServer:
    config = write_config(work / "freshet.toml", {
        "server": {"data_dir": str(work / "data"), **(extra_server or {})},
        "kafka": {"brokers": brokers},
    }, [{"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
         "text_fields": ["title", "body"]}])
    return FreshetServer(config, work, env={"FRESHET_LOG": "warn"})


HOSTILE_QUERIES = [
    " ".join(f"h{i}" for i in range(600_000)),            # ~4.5 MB
    " ".join(f"h{i}" for i in range(40_000)),             # ~270 KB
    " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(127)) + " kafka " * 1500,  # at the bounds
]


def _attacker(port: int, seed: int, stop_at: float, out: Any) -> None:
    counts: dict[str, int] = {}
    i = seed
    while time.time() < stop_at:
        query = HOSTILE_QUERIES[i % len(HOSTILE_QUERIES)]
        i += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("POST", "/mcp", mcp_body("search", {"query": query, "mode": "bm25"}), mcp_headers("search"))
            resp = conn.getresponse()
            data = resp.read()
            key = f"http {resp.status}"
            if resp.status == 200:
                msg = mcp_result(data)
                result = msg.get("result", {})
                key = "tool error" if result.get("isError") else ("rpc error" if "error" in msg else "served")
        except (OSError, http.client.HTTPException, ValueError) as e:
            key = f"connection: {type(e).__name__}"
        finally:
            conn.close()
        counts[key] = counts.get(key, 0) + 1
    out.put(counts)


def probe(port: int, seconds: float) -> dict[str, Any]:
    """Alternates /healthz and a cheap search, 10 rounds a second; latencies in ms."""
    health = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    mcp = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = mcp_body("search", {"query": "replica offset", "mode": "bm25", "k": 5})
    h_lat: list[float] = []
    s_lat: list[float] = []
    failures = 0
    end = time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        try:
            health.request("GET", "/healthz")
            ok = health.getresponse()
            ok.read()
            h_lat.append((time.perf_counter() - t0) * 1000)
            failures += ok.status != 200
        except (OSError, http.client.HTTPException):
            failures += 1
            health = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.perf_counter()
        try:
            mcp.request("POST", "/mcp", body, mcp_headers("search"))
            resp = mcp.getresponse()
            data = resp.read()
            s_lat.append((time.perf_counter() - t0) * 1000)
            result = mcp_result(data).get("result", {}) if resp.status == 200 else {}
            failures += resp.status != 200 or bool(result.get("isError")) or not result.get("structuredContent", {}).get("results")
        except (OSError, http.client.HTTPException, ValueError):
            failures += 1
            mcp = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        time.sleep(0.1)
    return {"healthz_ms": percentiles(h_lat), "search_ms": percentiles(s_lat), "failures": failures}


def hostile_phase(port: int, attackers: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    stop_at = time.time() + seconds + 1
    procs = [ctx.Process(target=_attacker, args=(port, k, stop_at, out), daemon=True) for k in range(attackers)]
    for p in procs:
        p.start()
    time.sleep(1)
    measured = probe(port, seconds)
    counts: dict[str, int] = {}
    for _ in procs:
        for k, v in out.get(timeout=300).items():
            counts[k] = counts.get(k, 0) + v
    for p in procs:
        p.join(10)
    measured["attacker_answers"] = counts
    return measured


def row(name: str, m: dict[str, Any]) -> str:
    h, s = m["healthz_ms"], m["search_ms"]
    return (f"| {name} | {h['p50']:.1f} | {h['p99']:.1f} | {h['max']:.1f} | {s['p50']:.1f} | {s['p99']:.1f} "
            f"| {s['max']:.1f} | {m['failures']} | {m.get('attacker_answers', '—')} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", help="an existing Kafka (default: start a private one)")
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--attackers", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freshet-hostile-"))
    kafka, brokers = broker_for(args.brokers, work)
    server = None
    try:
        topic = kafka_util.unique_topic("hostile")
        kafka_util.create_topic(brokers, topic)
        produce(brokers, topic, 0, args.docs)
        server = start_freshet(work, brokers, topic)
        server.wait_ready(timeout=600)
        baseline = probe(server.port, args.seconds)
        hostile = hostile_phase(server.port, args.attackers, args.seconds)
        alive = server.process.poll() is None
    finally:
        stop_all(server, kafka)
        shutil.rmtree(work, ignore_errors=True)
    result = {"when": datetime.now(timezone.utc).isoformat(), "binary": os.environ["FRESHET_BIN"],
              "docs": args.docs, "seconds": args.seconds, "attackers": args.attackers, "cpus": os.cpu_count(),
              "baseline": baseline, "hostile": hostile, "server_alive_after": alive}
    out = ROOT / "bench" / "results" / f"hostile-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print("| phase | /healthz p50 | p99 | max | cheap search p50 | p99 | max | probe failures | attacker answers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row("baseline", baseline))
    print(row(f"{args.attackers} attackers", hostile))
    print(f"wrote {out}")
    return 0 if alive and hostile["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak test: a release `freshet serve` under mixed ingest and queries at a moderate rate, with
a hostile client mixed in, for an hour (or `--minutes`). Reports memory over time, error
counts and latency percentiles, and whether memory levels off.

Load, all against a real Apache Kafka (scripts/kafka.sh, or --brokers):
- ingest: `--ingest-rate` records/s (lz4-compressed, batched): upserts over a fixed id space
  of `--ids` documents (so the live set is bounded and every upsert replaces a version),
  2 % tombstones, 0.5 % poison records;
- queries: `--query-rate` calls/s over MCP (2026-07-28, stateless), a mix of `search`
  (bm25, random words, random filters), `get_document`, `document_freshness` and
  `list_collections`; every call checked (status, no `isError` except for ids that were
  deleted);
- sessions: a 2025-11-25 session opened every 2 s, half of them closed, half left to expire;
- callers: JWT auth on; the agent and the attacker have their own tokens (sessions are
  capped per token subject, so the attacker's flood does not take the agent's sessions);
- hostile: one process sending, in turn, bound-size queries (16 KiB, 128 terms), a 4 MB body,
  40 half-open connections held until freshet drops them, a 20 KB header, 200 sessions;
- every 10 s: resident memory, threads and open fds of the freshet process, the live
  document count, and `/healthz` latency.

    .venv/bin/python bench/soak.py                 # 60 minutes
    .venv/bin/python bench/soak.py --minutes 10

Writes bench/results/soak-<time>.json and prints a summary for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import random
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import kafka_util  # noqa: E402
from hostile import HOSTILE_QUERIES, WORDS, broker_for, stop_all  # noqa: E402
from freshet_util import FreshetServer, mint_token, write_config  # noqa: E402
from kafka_util import Producer  # noqa: E402
from loadgen import mcp_body, mcp_headers, mcp_result, percentiles  # noqa: E402

KINDS = ["note", "ticket", "page", "mail"]
SECRET_ENV = "FRESHET_SOAK_SECRET"
SECRET = "soak-only-secret-" + "c0ffee" * 6
ISSUER = "https://issuer.soak.test"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "soak", "version": "1"}}}


def doc(i: int, rng: random.Random) -> dict[str, Any]:
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120)))
    return {"id": f"d{i}", "title": f"Doc {i}", "kind": rng.choice(KINDS), "body": f"{body} serial{i}",
            "updated_at": int(time.time() * 1000)}


def ingest(brokers: str, topic: str, ids: int, rate: float, stop: threading.Event, counts: dict) -> None:
    rng = random.Random(1)
    with Producer(brokers, **{"linger.ms": 20, "compression.type": "lz4"}) as producer:
        tick = 0.2
        per_tick = max(1, int(rate * tick))
        while not stop.is_set():
            started = time.monotonic()
            batch = []
            for _ in range(per_tick):
                i = rng.randrange(ids)
                roll = rng.random()
                if roll < 0.02:
                    batch.append((f"d{i}", None))
                    counts["tombstones"] += 1
                elif roll < 0.025:
                    batch.append((f"bad{i}", b"{not json"))
                    counts["poison"] += 1
                else:
                    batch.append((f"d{i}", doc(i, rng)))
                    counts["upserts"] += 1
            producer.send_many(topic, batch)
            time.sleep(max(0.0, tick - (time.monotonic() - started)))


def _queries(port: int, token: str, rate: float, ids: int, stop_at: float, seed: int, out: Any) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    examples: list[str] = []
    next_at = time.time()
    while time.time() < stop_at:
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.time()))
        roll = rng.random()
        if roll < 0.6:
            tool, args = "search", {"query": " ".join(rng.sample(WORDS, rng.randint(1, 4))), "mode": "bm25",
                                    "k": rng.choice([5, 10, 20])}
            if rng.random() < 0.3:
                args["filter"] = {"kind": rng.choice(KINDS)}
        elif roll < 0.8:
            tool, args = "get_document", {"collection": "docs", "id": f"d{rng.randrange(ids)}"}
        elif roll < 0.95:
            tool, args = "document_freshness", {"collection": "docs", "ids": [f"d{rng.randrange(ids)}" for _ in range(20)]}
        else:
            tool, args = "list_collections", {}
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/mcp", mcp_body(tool, args), {**mcp_headers(tool), **bearer(token)})
            resp = conn.getresponse()
            data = resp.read()
            ms = (time.perf_counter() - t0) * 1000
            ok = resp.status == 200
            if ok:
                result = mcp_result(data).get("result", {})
                # A deleted (tombstoned) id is a correct not-found answer.
                ok = not result.get("isError") or (tool == "get_document" and "not found" in json.dumps(result))
            if ok:
                lat.setdefault(tool, []).append(ms)
            else:
                errors[tool] = errors.get(tool, 0) + 1
                if len(examples) < 5:
                    examples.append(f"{tool} {resp.status}: {data[:200]!r}")
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors[tool] = errors.get(tool, 0) + 1
            if len(examples) < 5:
                examples.append(f"{tool}: {type(e).__name__} {e}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out.put((lat, errors, examples))


def _hostile(port: int, token: str, stop_at: float, out: Any) -> None:
    answers: dict[str, int] = {}

    def note(key: str) -> None:
        answers[key] = answers.get(key, 0) + 1

    step = 0
    while time.time() < stop_at:
        step += 1
        kind = step % 5
        try:
            if kind in (0, 1):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                query = HOSTILE_QUERIES[2] if kind == 0 else HOSTILE_QUERIES[0]
                conn.request("POST", "/mcp", mcp_body("search", {"query": query, "mode": "bm25"}),
                             {**mcp_headers("search"), **bearer(token)})
                resp = conn.getresponse()
                resp.read()
                note(f"{'bound query' if kind == 0 else '4 MB body'}: http {resp.status}")
                conn.close()
            elif kind == 2:
                socks = []
                for _ in range(40):
                    s = socket.create_connection(("127.0.0.1", port), timeout=30)
                    s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    socks.append(s)
                closed = sum(1 for s in socks if s.recv(4096) == b"")
                note(f"half-open connections closed by freshet: {closed}/40")
                for s in socks:
                    s.close()
            elif kind == 3:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/healthz", headers={"X-Junk": "x" * 20_000})
                resp = conn.getresponse()
                resp.read()
                note(f"20 KB header: http {resp.status}")
                conn.close()
            else:
                for _ in range(200):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("POST", "/mcp", json.dumps(INIT), {"content-type": "application/json",
                                                                   "accept": "application/json, text/event-stream",
                                                                   **bearer(token)})
                    resp = conn.getresponse()
                    resp.read()
                    note(f"session flood: http {resp.status}")
                    conn.close()
        except (OSError, http.client.HTTPException) as e:
            note(f"connection: {type(e).__name__}")
        time.sleep(2)
    out.put(answers)


def sessions(port: int, token: str, stop: threading.Event, counts: dict) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/mcp", json.dumps(INIT), {"content-type": "application/json",
                                                           "accept": "application/json, text/event-stream",
                                                           **bearer(token)})
            resp = conn.getresponse()
            resp.read()
            sid = resp.getheader("mcp-session-id")
            counts[f"open {resp.status}"] = counts.get(f"open {resp.status}", 0) + 1
            if sid and n % 2 == 0:
                conn.request("DELETE", "/mcp", headers={"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25",
                                                       **bearer(token)})
                r = conn.getresponse()
                r.read()
                counts[f"close {r.status}"] = counts.get(f"close {r.status}", 0) + 1
        except (OSError, http.client.HTTPException) as e:
            counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
        finally:
            conn.close()
        stop.wait(2)


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    field = {l.split(":")[0]: l.split(":")[1].strip() for l in status.splitlines() if ":" in l}
    return {"rss_mb": int(field["VmRSS"].split()[0]) / 1024, "threads": int(field["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def sample(server: FreshetServer, token: str, started: float) -> dict[str, Any]:
    s: dict[str, Any] = {"t_s": round(time.time() - started, 1), **proc_stats(server.process.pid)}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        s["healthz_ms"] = (time.perf_counter() - t0) * 1000
        conn.request("GET", "/metrics", headers=bearer(token))
        text = conn.getresponse().read().decode()
        for line in text.splitlines():
            if line.startswith("freshet_documents{"):
                s["documents"] = float(line.split()[-1])
    except (OSError, http.client.HTTPException) as e:
        s["healthz_error"] = type(e).__name__
    finally:
        conn.close()
    return s


def slope_mb_per_h(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if var == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / var * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--brokers", help="an existing Kafka (default: start a private one)")
    ap.add_argument("--ids", type=int, default=20_000, help="id space of the documents")
    ap.add_argument("--ingest-rate", type=float, default=50, help="records/s")
    ap.add_argument("--query-rate", type=float, default=20, help="calls/s in all (two clients)")
    args = ap.parse_args()
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="freshet-soak-"))
    kafka, brokers = broker_for(args.brokers, work)
    server = None
    samples: list[dict[str, Any]] = []
    ingest_counts = {"upserts": 0, "tombstones": 0, "poison": 0}
    session_counts: dict[str, int] = {}
    try:
        topic = kafka_util.unique_topic("soak")
        kafka_util.create_topic(brokers, topic, partitions=2)
        rng = random.Random(0)
        with Producer(brokers, **{"linger.ms": 20, "compression.type": "lz4"}) as producer:
            for at in range(0, args.ids, 2000):
                producer.send_many(topic, [(f"d{i}", doc(i, rng)) for i in range(at, min(args.ids, at + 2000))],
                                   partition=None)
        config = write_config(work / "freshet.toml", {
            "server": {"data_dir": str(work / "data"), "session_idle_timeout_ms": 60_000},
            "kafka": {"brokers": brokers, "dead_letter_topic": f"{topic}-dlq"},
            "auth": {"mode": "jwt", "issuer": ISSUER, "audience": "freshet", "hs256_secret_env": SECRET_ENV},
            "snapshot": {"interval_ms": 60_000},
        }, [{"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
             "text_fields": ["title", "body"], "metadata_fields": ["kind"], "event_time_field": "updated_at"}])
        server = FreshetServer(config, work, env={"FRESHET_LOG": "warn", SECRET_ENV: SECRET})
        agent = mint_token(SECRET_ENV, SECRET, "agent", collections=["*"], ttl="24h", issuer=ISSUER, audience="freshet")
        attacker = mint_token(SECRET_ENV, SECRET, "attacker", collections=["*"], ttl="24h", issuer=ISSUER,
                              audience="freshet")
        server.wait_ready(timeout=600)
        started = time.time()
        stop_at = started + seconds
        stop = threading.Event()
        threads = [threading.Thread(target=ingest, args=(brokers, topic, args.ids, args.ingest_rate, stop, ingest_counts)),
                   threading.Thread(target=sessions, args=(server.port, agent, stop, session_counts))]
        for t in threads:
            t.start()
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        procs = [ctx.Process(target=_queries, args=(server.port, agent, args.query_rate / 2, args.ids, stop_at, k, out),
                             daemon=True)
                 for k in range(2)]
        hostile_out = ctx.Queue()
        procs.append(ctx.Process(target=_hostile, args=(server.port, attacker, stop_at, hostile_out), daemon=True))
        for p in procs:
            p.start()
        while time.time() < stop_at:
            samples.append(sample(server, agent, started))
            last = samples[-1]
            print(f"soak: {last['t_s']:>7.0f} s  rss {last['rss_mb']:.0f} MB  threads {last['threads']}  "
                  f"fds {last['fds']}  docs {last.get('documents', '?')}  healthz {last.get('healthz_ms', -1):.1f} ms",
                  file=sys.stderr, flush=True)
            time.sleep(min(10, max(0, stop_at - time.time())))
        stop.set()
        for t in threads:
            t.join(30)
        results = [out.get(timeout=120) for _ in range(2)]
        hostile = hostile_out.get(timeout=300)
        for p in procs:
            p.join(10)
        samples.append(sample(server, agent, started))
        alive = server.process.poll() is None
    finally:
        stop_all(server, kafka)
        shutil.rmtree(work, ignore_errors=True)
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    examples: list[str] = []
    for lat, errs, ex in results:
        for k, v in lat.items():
            latencies.setdefault(k, []).extend(v)
        for k, v in errs.items():
            errors[k] = errors.get(k, 0) + v
        examples += ex
    rss = [(s["t_s"], s["rss_mb"]) for s in samples]
    half = [p for p in rss if p[0] >= seconds / 2]
    summary = {
        "when": datetime.now(timezone.utc).isoformat(), "binary": os.environ["FRESHET_BIN"], "minutes": args.minutes,
        "ids": args.ids, "ingest_rate": args.ingest_rate, "query_rate": args.query_rate, "cpus": os.cpu_count(),
        "server_alive_after": alive, "ingest": ingest_counts, "sessions": session_counts, "hostile": hostile,
        "latency_ms": {k: percentiles(v) for k, v in latencies.items()},
        "errors": errors, "error_examples": examples[:10],
        "healthz_ms": percentiles([s["healthz_ms"] for s in samples if "healthz_ms" in s]),
        "rss_mb": {"start": rss[0][1], "max": max(p[1] for p in rss), "end": rss[-1][1],
                   "slope_whole_mb_per_h": slope_mb_per_h(rss), "slope_second_half_mb_per_h": slope_mb_per_h(half)},
        "threads": {"start": samples[0]["threads"], "max": max(s["threads"] for s in samples), "end": samples[-1]["threads"]},
        "fds": {"start": samples[0]["fds"], "max": max(s["fds"] for s in samples), "end": samples[-1]["fds"]},
        "samples": samples,
    }
    out_path = ROOT / "bench" / "results" / f"soak-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    out_path.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))
    print(f"wrote {out_path}")
    return 0 if alive and not errors else 1


if __name__ == "__main__":
    sys.exit(main())

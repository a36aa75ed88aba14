"""freshet benchmark harness (see bench/run.sh for the one command that runs it).

Phases, each against a release `freshet serve` fed by a private tansu broker, measured over
MCP streamable HTTP with the Python SDK, on this machine, in one run:

1. ingest   — N documents with 384-d precomputed vectors are produced first; freshet starts and
              catches up; records/s to ready, and resident memory per document.
2. recall   — HNSW top-10 (mode "vector") against exact search over the same vectors (numpy).
3. latency  — p50/p99 of `search` per mode (bm25, vector, hybrid) with 1, 4 and 16 concurrent
              clients, idle and while a producer updates documents at a steady rate.
4. freshness — records produced at fixed rates, each carrying its produce time as event time:
              produce → searchable measured by polling `get_document` (a sample) and from the
              `index_delay_ms` stamps (all), next to the produce → consume floor of a plain
              librdkafka consumer reading the same topic in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import kafka_util  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from freshet_util import FreshetServer, call, http_client, write_config  # noqa: E402

SCALES = {"small": 10_000, "medium": 100_000, "large": 1_000_000}
DIM = 384
VOCAB = [f"w{i:04d}" for i in range(5000)]


def now_ms() -> float:
    return time.time() * 1000.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    xs = sorted(values)

    def pct(p: float) -> float:
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

    return {"n": len(xs), "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": xs[-1],
            "mean": statistics.fmean(xs)}


class Corpus:
    """Deterministic documents: Zipf-ish words and unit vectors."""

    def __init__(self, n: int, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        ranks = np.arange(1, len(VOCAB) + 1)
        self.word_p = (1 / ranks) / (1 / ranks).sum()
        self.rng = rng

    def text(self, words: int) -> str:
        return " ".join(VOCAB[i] for i in self.rng.choice(len(VOCAB), size=words, p=self.word_p))

    def doc(self, i: int, **extra) -> dict:
        return {"id": f"d{i}", "title": self.text(6), "body": self.text(60),
                "embedding": np.round(self.vectors[i], 5).tolist(), **extra}


def config_for(work: Path, brokers: str, topic: str) -> Path:
    return write_config(work / "freshet.toml",
                        {"kafka": {"brokers": brokers}, "snapshot": {"interval_ms": 0}},
                        [{"name": "bench", "topics": [topic], "format": "json", "id_field": "id",
                          "title_field": "title", "text_fields": ["title", "body"],
                          "event_time_field": "produced_at", "vector_field": "embedding",
                          "embedding": {"provider": "precomputed", "dimensions": DIM}}])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def produce_all(brokers: str, topic: str, corpus: Corpus, n: int) -> None:
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 2000,
                  "queue.buffering.max.messages": 200000, "compression.type": "lz4"})
    for i in range(n):
        doc = corpus.doc(i, produced_at=int(now_ms()))
        while True:
            try:
                p.produce(topic, key=doc["id"], value=json.dumps(doc).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    # The last record alone, so tansu reports the log end exactly (see README: Known limits).
    p.flush(120)
    doc = corpus.doc(0, produced_at=int(now_ms()))
    p.produce(topic, key=doc["id"], value=json.dumps(doc).encode())
    p.flush(30)


async def phase_recall(server: FreshetServer, corpus: Corpus, n: int, queries: int = 200) -> dict:
    rng = np.random.default_rng(11)
    hits = 0
    async with http_client(server.mcp_url) as client:
        for _ in range(queries):
            q = corpus.vectors[rng.integers(n)] + 0.5 * rng.standard_normal(DIM).astype(np.float32)
            q /= np.linalg.norm(q)
            exact = {f"d{i}" for i in np.argsort(-(corpus.vectors[:n] @ q))[:10]}
            res = await call(client, "search", {"vector": q.tolist(), "mode": "vector", "k": 10,
                                                "collection": "bench"})
            hits += len(exact & {h["id"] for h in res["results"]})
    return {"recall_at_10": hits / (10 * queries), "queries": queries}


async def phase_latency(server: FreshetServer, corpus: Corpus, clients: int, mode: str,
                        seconds: float) -> dict:
    latencies: list[float] = []
    ready = asyncio.Event()
    connected = 0
    deadline = float("inf")

    async def one_client(seed: int) -> None:
        nonlocal connected, deadline
        rng = random.Random(seed)
        async with http_client(server.mcp_url) as client:
            # Sessions are opened first: the clock measures queries, not handshakes.
            connected += 1
            if connected == clients:
                deadline = time.monotonic() + seconds
                ready.set()
            await ready.wait()
            while time.monotonic() < deadline:
                args = {"collection": "bench", "k": 10, "mode": mode}
                if mode != "vector":
                    args["query"] = " ".join(rng.choice(VOCAB[:500]) for _ in range(3))
                if mode != "bm25":
                    args["vector"] = corpus.vectors[rng.randrange(len(corpus.vectors))].tolist()
                t0 = time.perf_counter()
                await call(client, "search", args)
                latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one_client(s) for s in range(clients)))
    out = percentiles(latencies)
    out["qps"] = len(latencies) / seconds
    return out


class SteadyProducer(threading.Thread):
    """Updates existing documents at a fixed rate until stopped."""

    def __init__(self, brokers: str, topic: str, corpus: Corpus, n: int, rate: float):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": brokers, "linger.ms": 1})
        self.topic, self.corpus, self.n, self.rate = topic, corpus, n, rate
        self.stop_flag = threading.Event()

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self.stop_flag.is_set():
            doc = self.corpus.doc(i % self.n, produced_at=int(now_ms()))
            self.p.produce(self.topic, key=doc["id"], value=json.dumps(doc).encode())
            self.p.poll(0)
            i += 1
            wait = start + i / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self.p.flush(10)


async def phase_freshness(server: FreshetServer, brokers: str, topic: str, corpus: Corpus,
                          rate: int, seconds: float, sample_every: int) -> dict:
    """Produces new documents at `rate`/s; measures produce → searchable three ways."""
    floor: list[float] = []
    stop = threading.Event()
    prefix = f"f{rate}-{int(time.time())}-"

    def plain_consumer() -> None:
        c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-floor", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 10})
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p))[1])
                  for p in parts])
        while not stop.is_set():
            msg = c.poll(0.05)
            if msg is None or msg.error() or not msg.key() or not msg.key().decode().startswith(prefix):
                continue
            floor.append(now_ms() - json.loads(msg.value())["produced_at"])
        c.close()

    floor_thread = threading.Thread(target=plain_consumer, daemon=True)
    floor_thread.start()
    time.sleep(1.0)

    queue: asyncio.Queue = asyncio.Queue()
    polled: list[float] = []
    produced: list[str] = []

    async def poller() -> None:
        async with http_client(server.mcp_url) as client:
            while True:
                item = await queue.get()
                if item is None:
                    return
                doc_id, t0 = item
                while True:
                    res = await client.call_tool("get_document", {"collection": "bench", "id": doc_id})
                    if not res.is_error:
                        polled.append(now_ms() - t0)
                        break
                    await asyncio.sleep(0.002)

    pollers = [asyncio.create_task(poller()) for _ in range(8)]
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        doc = corpus.doc(i % len(corpus.vectors), produced_at=0)
        doc["id"] = f"{prefix}{i}"
        doc["produced_at"] = t0 = int(now_ms())
        p.produce(topic, key=doc["id"], value=json.dumps(doc).encode())
        p.poll(0)
        produced.append(doc["id"])
        if i % sample_every == 0:
            queue.put_nowait((doc["id"], t0))
        i += 1
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif i % 50 == 0:
            await asyncio.sleep(0)
    p.flush(30)
    achieved = i / (time.monotonic() - start)
    for _ in pollers:
        queue.put_nowait(None)
    await asyncio.gather(*pollers)
    await asyncio.sleep(1.0)
    stop.set()
    floor_thread.join()

    stamps: list[float] = []
    async with http_client(server.mcp_url) as client:
        for k in range(0, len(produced), 1000):
            res = await call(client, "document_freshness", {"collection": "bench", "ids": produced[k:k + 1000]})
            stamps += [d["freshness"]["index_delay_ms"] for d in res["documents"] if d["status"] == "found"]
    return {"rate": rate, "achieved_rate": achieved, "produced": len(produced),
            "polled_get_document_ms": percentiles(polled), "stamp_index_delay_ms": percentiles(stamps),
            "plain_consumer_floor_ms": percentiles(floor)}


async def run(args: argparse.Namespace) -> dict:
    n = args.docs or SCALES[args.scale]
    work = ROOT / ".tools" / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    broker = kafka_util.start_tansu(work / "tansu")
    topic = "bench"
    kafka_util.create_topic(broker, topic, partitions=args.partitions)
    corpus = Corpus(n)
    result: dict = {"scale": args.scale, "docs": n, "dim": DIM, "partitions": args.partitions,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    server = None
    try:
        t = time.monotonic()
        produce_all(broker.bootstrap, topic, corpus, n)
        result["produce_seconds"] = time.monotonic() - t
        print(f"produced {n} documents in {result['produce_seconds']:.1f} s", flush=True)

        server = FreshetServer(config_for(work, broker.bootstrap, topic), work,
                               env={"FRESHET_LOG": "warn"})
        t = time.monotonic()
        server.wait_ready(timeout=args.ready_timeout)
        catch_up = time.monotonic() - t
        rss = rss_bytes(server.process.pid)
        result["ingest"] = {"records": n + 1, "seconds_to_ready": catch_up, "records_per_s": (n + 1) / catch_up,
                            "rss_bytes": rss, "rss_bytes_per_doc": rss / n}
        print(f"ingest: {result['ingest']}", flush=True)

        result["recall"] = await phase_recall(server, corpus, n)
        result["recall"]["hnsw"] = {"m": 16, "ef_construction": 200, "ef_search": 100}
        print(f"recall: {result['recall']}", flush=True)

        result["latency"] = []
        for loaded in (False, True):
            steady = None
            if loaded:
                steady = SteadyProducer(broker.bootstrap, topic, corpus, n, args.load_rate)
                steady.start()
            for mode in ("bm25", "vector", "hybrid"):
                for clients in (1, 4, 16):
                    lat = await phase_latency(server, corpus, clients, mode, args.latency_seconds)
                    lat.update({"mode": mode, "clients": clients,
                                "ingesting_per_s": args.load_rate if loaded else 0})
                    result["latency"].append(lat)
                    print(f"latency {mode} x{clients} load={loaded}: p50={lat.get('p50', 0):.2f} "
                          f"p99={lat.get('p99', 0):.2f} ms qps={lat['qps']:.0f}", flush=True)
            if steady:
                steady.stop_flag.set()
                steady.join()

        result["freshness"] = []
        for rate in args.rates:
            fr = await phase_freshness(server, broker.bootstrap, topic, corpus, rate, args.freshness_seconds,
                                       sample_every=max(1, rate // 100))
            result["freshness"].append(fr)
            print(f"freshness @{rate}/s: polled={fr['polled_get_document_ms']} stamps={fr['stamp_index_delay_ms']} "
                  f"floor={fr['plain_consumer_floor_ms']}", flush=True)
    finally:
        if server:
            server.stop()
        broker.stop()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--docs", type=int, help="override the scale's document count")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 5000])
    ap.add_argument("--freshness-seconds", type=float, default=20)
    ap.add_argument("--latency-seconds", type=float, default=8)
    ap.add_argument("--load-rate", type=float, default=200, help="updates/s while measuring loaded latency")
    ap.add_argument("--ready-timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.scale}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

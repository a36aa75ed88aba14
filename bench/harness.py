"""freshet benchmark harness (see bench/run.sh for the one command that runs it).

Phases, on this machine, in one run, against one private Apache Kafka broker:

1. ingest    — N documents with 384-d precomputed vectors are produced first; a release
               `freshet serve` starts and catches up: records/s to ready, resident memory per
               document.
2. recall    — HNSW top-10 (mode "vector") against exact search over the same vectors (numpy).
3. latency   — p50/p99 of `search` per mode (bm25, vector, hybrid) with 1, 4 and 16 concurrent
               closed-loop clients (bench/loadgen.py: MCP `tools/call` over streamable HTTP),
               idle and while a producer updates documents at a steady rate.
4. freshness — new records produced at fixed rates, each with a unique token and its produce
               time as event time; produce → searchable measured by polling `get_document`, by
               polling `search` for the token, and from the `index_delay_ms` stamps, next to
               the produce → consume floor of a plain librdkafka consumer in the same run.
5. embedder  — a second freshet with the local model (raw text, no vectors in the records):
               ingest rate and freshness at low rates.
6. peer      — Pathway (bench/peer_pathway.py, its own virtualenv) reads the same topic from the
               same broker: catch-up time, memory, query latency and freshness measured the same
               way (freshet is stopped meanwhile, so each has the machine to itself).
7. restart   — the persisted freshet of phases 1–4 (freshet's default persistence) is
               stopped with SIGTERM and started again, then takes steady updates (checkpoint
               cost per batch), is killed with SIGKILL and started again: time to /readyz each
               time against phase 1's first catch-up, resident memory and bytes on disk per
               document. (`--restart-only` produces the documents and runs phase 7 alone, with
               its own first catch-up from an empty data_dir.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The release build (bench/run.sh builds it); the tests' helper would otherwise pick the debug one.
os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import kafka_util  # noqa: E402
import loadgen  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from freshet_util import FreshetServer, call, http_client, write_config  # noqa: E402
from floor import FloorConsumer  # noqa: E402
from loadgen import percentiles  # noqa: E402

SCALES = {"small": 10_000, "medium": 100_000, "large": 1_000_000}
DIM = 384
VOCAB = [f"w{i:04d}" for i in range(5000)]
HNSW = {"m": 16, "ef_construction": 100, "ef_search": 100}  # freshet's defaults

#: Async "is this document visible yet?" check: (document id, its unique token) → bool.
Probe = Callable[[str, str], Awaitable[bool]]


def now_ms() -> float:
    return time.time() * 1000.0


class Corpus:
    """Deterministic documents: Zipf-ish words and unit vectors.

    `clustered` vectors (the default) are topics plus noise, like real text embeddings: a
    centre for every 50 documents, each document at cosine ≈ 0.7 from its centre. `uniform`
    vectors are independent random directions: no structure at all, the worst case for any
    approximate index (every document is almost equally far from every query)."""

    def __init__(self, n: int, vectors: str = "clustered", seed: int = 7):
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((max(1, n // 50), DIM)).astype(np.float32) / np.sqrt(DIM)
        # Filled in chunks: at 1M documents whole-array temporaries would triple the harness's
        # ~1.5 GB of vectors beside a broker and server that need the memory themselves.
        self.vectors = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, 65_536):
            rows = self.vectors[start:start + 65_536]
            rows[:] = rng.standard_normal(rows.shape, dtype=np.float32) / np.float32(np.sqrt(DIM))
            if vectors == "clustered":
                rows += centres[rng.integers(len(centres), size=len(rows))]
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        self.kind = vectors
        ranks = np.arange(1, len(VOCAB) + 1)
        self.word_p = (1 / ranks) / (1 / ranks).sum()
        self.rng = rng

    def text(self, words: int) -> str:
        return " ".join(VOCAB[i] for i in self.rng.choice(len(VOCAB), size=words, p=self.word_p))

    def vector_json(self, i: int) -> str:
        return json.dumps(np.round(self.vectors[i], 5).tolist())

    def doc(self, i: int, vector: bool = True, **extra) -> dict:
        doc = {"id": f"d{i}", "title": self.text(6), "body": self.text(60), **extra}
        if vector:
            doc["embedding"] = np.round(self.vectors[i], 5).tolist()
        return doc


def freshet_config(work: Path, brokers: str, topics: list[str], name: str, local_model: bool = False,
                   persist_ms: int | None = None, vector_storage: str | None = None) -> Path:
    """A collection over `topics`; `persist_ms` None keeps freshet's default persistence (what a
    user gets), 0 keeps everything in memory. `vector_storage` sets the collection's key."""
    collection = {"name": name, "topics": topics, "format": "json", "id_field": "id",
                  "title_field": "title", "text_fields": ["title", "body"],
                  "event_time_field": "produced_at"}
    if local_model:
        collection["embedding"] = {"provider": "local", "model_dir": str(ROOT / "models" / "all-MiniLM-L6-v2")}
    else:
        collection["vector_field"] = "embedding"
        collection["embedding"] = {"provider": "precomputed", "dimensions": DIM}
        collection["hnsw"] = dict(HNSW)
        if vector_storage:
            collection["vector_storage"] = vector_storage
    return write_config(work / f"{name}.toml",
                        {"kafka": {"brokers": brokers},
                         **({} if persist_ms is None else {"snapshot": {"interval_ms": persist_ms}}),
                         "server": {"data_dir": str(work / f"data-{name}")}},
                        [collection])


def cpu_model() -> dict[str, Any]:
    """The CPU's name and whether it has AVX-512 (the distance and matrix kernels pick their
    instructions at run time, so the same build runs at different speeds on different CPUs)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.processor())
    return {"cpu": name, "avx512": " avx512f " in info}


def git_commit() -> str:
    """The commit measured, with "+dirty" when the work tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def produce_all(brokers: str, topic: str, corpus: Corpus, n: int, vector: bool = True) -> int:
    """Produces documents 0..n-1 then document 0 again (an update at the end of the log).
    Returns the number of records."""
    # A bulk loader's settings: long linger, large compressed batches.
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 100, "batch.num.messages": 2000,
                  "queue.buffering.max.messages": 200000, "compression.type": "lz4"})
    for i in range(n):
        doc = corpus.doc(i, vector=vector, produced_at=int(now_ms()))
        while True:
            try:
                p.produce(topic, key=doc["id"], value=json.dumps(doc).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(300)
    doc = corpus.doc(0, vector=vector, produced_at=int(now_ms()))
    p.produce(topic, key=doc["id"], value=json.dumps(doc).encode())
    p.flush(30)
    return n + 1


# ----------------------------------------------------------------------------- freshet access


class FreshetTarget:
    """Lean MCP access to a running freshet: one POST per tool call (2026-07-28 stateless)."""

    def __init__(self, server: FreshetServer, collection: str):
        self.server, self.collection = server, collection
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))

    async def tool(self, name: str, args: dict) -> tuple[bool, dict]:
        r = await self.http.post(self.server.mcp_url, content=loadgen.mcp_body(name, args),
                                 headers=loadgen.mcp_headers(name))
        r.raise_for_status()
        result = loadgen.mcp_result(r.content)["result"]
        return not result.get("isError", False), result.get("structuredContent") or {}

    async def has_document(self, doc_id: str, token: str) -> bool:
        ok, _ = await self.tool("get_document", {"collection": self.collection, "id": doc_id})
        return ok

    async def search_finds(self, doc_id: str, token: str) -> bool:
        ok, res = await self.tool("search", {"collection": self.collection, "query": token,
                                             "mode": "bm25", "k": 1})
        return ok and any(h["id"] == doc_id for h in res.get("results", []))

    def query_bodies(self, corpus: Corpus, mode: str, count: int = 500) -> list[bytes]:
        rng = random.Random(5)
        bodies = []
        for k in range(count):
            args = {"collection": self.collection, "k": 10, "mode": mode}
            if mode != "vector":
                args["query"] = " ".join(rng.choice(VOCAB[:500]) for _ in range(3))
            if mode != "bm25":
                args["vector"] = np.round(corpus.vectors[rng.randrange(len(corpus.vectors))], 5).tolist()
            bodies.append(loadgen.mcp_body("search", args, request_id=k + 1))
        return bodies

    def latency(self, corpus: Corpus, mode: str, clients: int, seconds: float) -> dict:
        return loadgen.closed_loop("127.0.0.1", self.server.port, "/mcp", loadgen.mcp_headers("search"),
                                   self.query_bodies(corpus, mode), clients, seconds,
                                   must_contain=b'"isError":false')

    async def aclose(self) -> None:
        await self.http.aclose()


# ----------------------------------------------------------------------------- phases


async def phase_recall(server: FreshetServer, corpus: Corpus, n: int, queries: int = 200) -> dict:
    rng = np.random.default_rng(11)
    hits = 0
    async with http_client(server.mcp_url) as client:
        for _ in range(queries):
            # A query near a document (cosine ≈ 0.9), like a paraphrase of it.
            q = corpus.vectors[rng.integers(n)] + 0.5 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
            q /= np.linalg.norm(q)
            exact = {f"d{i}" for i in np.argpartition(-(corpus.vectors[:n] @ q), 10)[:10]}
            res = await call(client, "search", {"vector": q.tolist(), "mode": "vector", "k": 10,
                                                "collection": "bench"})
            hits += len(exact & {h["id"] for h in res["results"]})
    return {"recall_at_10": hits / (10 * queries), "queries": queries, "hnsw": dict(HNSW),
            "vectors": corpus.kind}


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


def latency_matrix(measure: Callable[[str, int], dict], modes: list[str], client_counts: list[int],
                   label: str, loaded_rate: float = 0) -> list[dict]:
    rows = []
    for mode in modes:
        for clients in client_counts:
            lat = measure(mode, clients)
            lat.update({"mode": mode, "clients": clients, "ingesting_per_s": loaded_rate})
            rows.append(lat)
            print(f"{label} latency {mode} x{clients} ingest={loaded_rate:.0f}/s: p50={lat.get('p50', 0):.2f} "
                  f"p99={lat.get('p99', 0):.2f} ms qps={lat['qps']:.0f} errors={lat['errors']}", flush=True)
    return rows


async def phase_freshness(brokers: str, topic: str, corpus: Corpus, rate: int, seconds: float,
                          probes: dict[str, Probe], samples_per_s: float = 10, vector: bool = True,
                          floor: bool = True, floor_fetch_wait_ms: int = 10) -> dict:
    """Produces new documents at `rate`/s for `seconds`, each with a unique token; a sample
    (about `samples_per_s` of them a second) is watched by every probe, each sample on its own
    task (so a slow answer never delays the next sample's clock)."""
    prefix = f"f{rate}x{int(time.time()) % 100000}x"
    floor_consumer = FloorConsumer(brokers, topic, prefix, floor_fetch_wait_ms) if floor else None

    observed: dict[str, list[float]] = {label: [] for label in probes}
    timeouts: dict[str, int] = {label: 0 for label in probes}

    async def watch(label: str, probe: Probe, doc_id: str, token: str, t0: float) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if await probe(doc_id, token):
                    observed[label].append(now_ms() - t0)
                    return
            except httpx.HTTPError:
                pass
            # Poll every 2 ms at first, then at 5 % of the time waited so far (at most 20 ms):
            # a fixed fast poll of many slow samples would load the server it measures.
            await asyncio.sleep(min(0.002 + 0.05 * (now_ms() - t0) / 1000, 0.02))
        timeouts[label] += 1

    # Records are serialised before the clock starts: json.dumps of a 384-d vector costs
    # more than producing it, and the producer must keep the rate.
    pool = []
    for k in range(min(2000, len(corpus.vectors))):
        doc = corpus.doc(k, vector=False)
        pool.append((json.dumps(doc["title"]), doc["body"], corpus.vector_json(k) if vector else None))
    tasks = []
    produced: list[str] = []
    sample_every = max(1, int(rate / samples_per_s))
    # librdkafka's default linger (5 ms): what a producer of a live stream typically runs with.
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        title, body, vector_json = pool[i % len(pool)]
        doc_id, token = f"{prefix}{i}", f"{prefix}{i}t"
        t0 = int(now_ms())
        value = (f'{{"id":"{doc_id}","title":{title},"body":"{body} {token}","produced_at":{t0}'
                 + (f',"embedding":{vector_json}}}' if vector_json else "}"))
        p.produce(topic, key=doc_id, value=value.encode())
        p.poll(0)
        produced.append(doc_id)
        if i % sample_every == 0:
            tasks += [asyncio.create_task(watch(label, probe, doc_id, token, t0)) for label, probe in probes.items()]
        i += 1
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif i % 50 == 0:
            await asyncio.sleep(0)
    achieved = i / (time.monotonic() - start)
    p.flush(30)
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)
    floor_ms = floor_consumer.finish() if floor_consumer else []
    result = {"rate": rate, "achieved_rate": achieved, "produced": len(produced), "ids": produced,
              "plain_consumer_floor_ms": percentiles(floor_ms)}
    for label in probes:
        result[label] = percentiles(observed[label])
        result[label]["timeouts"] = timeouts[label]
    return result


async def caught_up(brokers: str, topic: str, corpus: Corpus, finds: Probe, vector: bool = True,
                    timeout: float = 1800) -> float:
    """Produces a marker record and waits until `finds` sees it: everything produced before it
    has been applied. Each phase starts from an idle system, so a backlog left by the
    previous phase (e.g. updates that arrived during loaded queries) is not measured as the
    next phase's latency. Returns the seconds waited."""
    marker = corpus.doc(0, vector=vector, produced_at=int(now_ms()))
    marker["id"] = f"mark{int(time.time() * 1000)}"
    token = f"{marker['id']}t"
    marker["body"] += f" {token}"
    p = Producer({"bootstrap.servers": brokers})
    p.produce(topic, key=marker["id"], value=json.dumps(marker).encode())
    p.flush(30)
    started = time.monotonic()
    while not await finds(marker["id"], token):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not caught up after {timeout}s")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    return time.monotonic() - started


def rfc3339_ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


async def freshet_stamps(target: FreshetTarget, ids: list[str]) -> dict:
    """Percentiles of the records' `index_delay_ms` stamps, and of its two parts: event time →
    freshet's consumer has the record (broker and fetch), and consumer → searchable
    (freshet's own pipeline)."""
    delay, consumed, pipeline = [], [], []
    for k in range(0, len(ids), 1000):
        ok, res = await target.tool("document_freshness", {"collection": target.collection, "ids": ids[k:k + 1000]})
        for d in res.get("documents", []) if ok else []:
            if d["status"] == "found":
                f = d["freshness"]
                event, ingested, indexed = (rfc3339_ms(f[key]) for key in ("event_time", "ingested_at", "indexed_at"))
                delay.append(f["index_delay_ms"])
                consumed.append(ingested - event)
                pipeline.append(indexed - ingested)
    return {"stamp_index_delay_ms": percentiles(delay), "stamp_to_consumer_ms": percentiles(consumed),
            "stamp_consumer_to_searchable_ms": percentiles(pipeline)}


async def apply_stage_totals(target: FreshetTarget) -> dict[str, tuple[float, float]]:
    """(seconds, batches) so far per ingest stage, from freshet's `/metrics`."""
    text = (await target.http.get(f"{target.server.url}/metrics")).text
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        for part, index in (("_sum", 0), ("_count", 1)):
            head = f"freshet_apply_stage_seconds{part}{{stage=\""
            if line.startswith(head):
                stage = line[len(head):].split('"', 1)[0]
                totals.setdefault(stage, [0.0, 0.0])[index] = float(line.split()[-1])
    return {stage: (v[0], v[1]) for stage, v in totals.items()}


def stage_means(before: dict, after: dict, seconds: float) -> dict:
    """Per stage between two `apply_stage_totals`: batches/s and mean ms per batch."""
    out = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            out[stage] = {"batches_per_s": (count - count0) / seconds,
                          "mean_ms": 1000 * (total - total0) / (count - count0)}
    return out


def print_freshness(who: str, fr: dict) -> None:
    keys = [k for k in fr if k.endswith("_ms")]
    summary = ", ".join(f"{k}: p50={fr[k].get('p50', 0):.0f} p99={fr[k].get('p99', 0):.0f} n={fr[k].get('n', 0)}"
                        for k in keys)
    print(f"{who} freshness @{fr['rate']}/s (achieved {fr['achieved_rate']:.0f}): {summary}", flush=True)


# ----------------------------------------------------------------------------- the run


def time_to_ready(server: FreshetServer, records: int, timeout: float, progress: list) -> dict:
    """Waits for /readyz; the catch-up rate and resident memory at that point. Meanwhile
    appends (seconds, documents applied, resident bytes) to `progress` every 10 s, so a
    catch-up that is stopped part way still leaves its rate on record."""
    t = time.monotonic()
    done = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=5) as client:
            while not done.wait(10):
                try:
                    metrics = client.get(f"{server.url}/metrics").text
                    docs = sum(metric_values(metrics, "freshet_documents"))
                    progress.append((round(time.monotonic() - t, 1), int(docs), rss_bytes(server.process.pid)))
                except (httpx.HTTPError, OSError, ValueError):
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        server.wait_ready(timeout=timeout)
    finally:
        done.set()
    catch_up = time.monotonic() - t
    return {"records": records, "seconds_to_ready": catch_up, "records_per_s": records / catch_up,
            "rss_bytes": rss_bytes(server.process.pid)}


async def freshet_freshness(target: FreshetTarget, brokers: str, backlog_topic: str, topic_of_rate,
                            corpus: Corpus, rates: list[int], seconds: float, who: str,
                            vector: bool = True) -> list[dict]:
    """The freshness phase at each rate, every probe freshet offers plus its stamps; each
    rate starts once `backlog_topic` is caught up."""
    out = []
    for rate in rates:
        backlog_s = await caught_up(brokers, backlog_topic, corpus, target.has_document, vector=vector)
        stages_before, clock = await apply_stage_totals(target), time.monotonic()
        fr = await phase_freshness(brokers, topic_of_rate(rate), corpus, rate, seconds,
                                   {"polled_get_document_ms": target.has_document,
                                    "polled_search_ms": target.search_finds}, vector=vector)
        fr["apply_stages"] = stage_means(stages_before, await apply_stage_totals(target),
                                         time.monotonic() - clock)
        fr["backlog_wait_s"] = backlog_s
        fr.update(await freshet_stamps(target, fr["ids"]))
        del fr["ids"]
        out.append(fr)
        print_freshness(who, fr)
    return out


async def run_freshet(args, work: Path, broker, topic: str, corpus: Corpus, n: int, result: dict) -> None:
    records = produce_all(broker.bootstrap, topic, corpus, n)
    print(f"produced {records} records", flush=True)
    # Each freshness rate writes to a topic of its own, so every phase starts on an empty
    # partition whatever ran before it.
    fresh_topics = [f"fresh{rate}" for rate in args.rates]
    for name in fresh_topics:
        kafka_util.create_topic(broker, name, partitions=args.partitions)
    config = freshet_config(work, broker.bootstrap, [topic, *fresh_topics], "bench",
                            vector_storage=args.vector_storage)
    result["_bench_config"] = config
    server = FreshetServer(config, work, env={"FRESHET_LOG": "info,rmcp=warn"})
    target = FreshetTarget(server, "bench")
    try:
        result["ingest_progress"] = []
        ingest = time_to_ready(server, records, args.ready_timeout, result["ingest_progress"])
        result["ingest"] = {**ingest, "rss_bytes_per_doc": ingest["rss_bytes"] / n}
        result["ingest"]["graph_inserts_after_ready_s"] = await wait_graph_backlog_empty(server, args.ready_timeout)
        result["ingest"]["rss_bytes_per_doc_after_graph"] = rss_bytes(server.process.pid) / n
        print(f"freshet ingest: {result['ingest']}", flush=True)

        result["recall"] = await phase_recall(server, corpus, n, args.recall_queries)
        result["recall"]["server_estimate"] = await server_recall_estimate(server)
        print(f"recall: {result['recall']}", flush=True)

        result["latency"] = latency_matrix(
            lambda mode, c: target.latency(corpus, mode, c, args.latency_seconds),
            ["bm25", "vector", "hybrid"], args.clients, "freshet")
        steady = SteadyProducer(broker.bootstrap, topic, corpus, n, args.load_rate)
        steady.start()
        result["latency"] += latency_matrix(
            lambda mode, c: target.latency(corpus, mode, c, args.latency_seconds),
            ["bm25", "vector", "hybrid"], args.clients, "freshet", loaded_rate=args.load_rate)
        steady.stop_flag.set()
        steady.join()

        result["freshness"] = await freshet_freshness(
            target, broker.bootstrap, topic, lambda rate: f"fresh{rate}", corpus, args.rates,
            args.freshness_seconds, "freshet")
        result["rss_bytes_end"] = rss_bytes(server.process.pid)
    finally:
        await target.aclose()
        t = time.monotonic()
        server.stop()
        result["_bench_stopped"] = {"stop_s": time.monotonic() - t, "log": server.log()}


async def run_embedder(args, work: Path, broker, corpus: Corpus, result: dict) -> None:
    """freshet with the local model: records carry text only."""
    topic = "bench_text"
    kafka_util.create_topic(broker.bootstrap, topic, partitions=args.partitions)
    records = produce_all(broker.bootstrap, topic, corpus, args.embed_docs, vector=False)
    server = FreshetServer(freshet_config(work, broker.bootstrap, [topic], "text", local_model=True), work,
                           env={"FRESHET_LOG": "warn"})
    target = FreshetTarget(server, "text")
    try:
        out = {**time_to_ready(server, records, args.ready_timeout, []),
               "model": "all-MiniLM-L6-v2 (local, candle)", "words_per_doc": 66}
        print(f"embedder ingest: {out['records']} records in {out['seconds_to_ready']:.1f}s = "
              f"{out['records_per_s']:.1f}/s", flush=True)
        out["freshness"] = await freshet_freshness(
            target, broker.bootstrap, topic, lambda rate: topic, corpus, args.embed_rates,
            args.freshness_seconds, "embedder", vector=False)
        result["embedder"] = out
    finally:
        await target.aclose()
        server.stop()


async def run_peer(args, work: Path, broker, topic: str, corpus: Corpus, result: dict) -> None:
    import peer_client

    peer = peer_client.PathwayPeer()
    port = kafka_util.free_port()
    out: dict = {"name": "Pathway", "settings": peer_client.SETTINGS}
    t = time.monotonic()
    # The peer's freshness records go to the documents topic itself: Pathway 0.33 given a
    # list of topics never delivered the records of the (then empty) extra topics here.
    peer.start(broker.bootstrap, topic, port, work / "pathway",
               reserved=result["_topic_records"] + int(sum(args.rates) * args.freshness_seconds) + 10_000)
    try:
        # Caught up when the last record produced to the topic is visible (ids from the
        # freshness phases, which came last).
        last_id, last_token = result["_last_doc"]
        async with httpx.AsyncClient(timeout=60) as http:
            deadline = time.monotonic() + args.ready_timeout
            while not await peer.contains(http, last_token, last_id):
                if time.monotonic() > deadline or not peer.alive():
                    raise RuntimeError(f"Pathway did not catch up:\n{peer.log_tail()}")
                await asyncio.sleep(0.25)
            out["seconds_to_caught_up"] = time.monotonic() - t
            out["records"] = result["_topic_records"]
            out["records_per_s"] = out["records"] / out["seconds_to_caught_up"]
            out["rss_bytes"] = peer.rss_bytes()
            print(f"pathway caught up {out['records']} records in {out['seconds_to_caught_up']:.1f}s, "
                  f"rss {out['rss_bytes'] / 2**20:.0f} MiB", flush=True)

            out["latency"] = latency_matrix(
                lambda mode, c: peer.latency(corpus, mode, c, args.latency_seconds, VOCAB),
                peer.modes, args.clients, "pathway")

            async def finds(doc_id: str, token: str) -> bool:
                return await peer.contains(http, token, doc_id)

            out["freshness"] = []
            for rate in args.rates:
                backlog_s = await caught_up(broker.bootstrap, topic, corpus, finds)
                fr = await phase_freshness(broker.bootstrap, topic, corpus, rate, args.freshness_seconds,
                                           {"polled_search_ms": finds})
                fr["backlog_wait_s"] = backlog_s
                del fr["ids"]
                out["freshness"].append(fr)
                print_freshness("pathway", fr)
            out["rss_bytes_end"] = peer.rss_bytes()
    finally:
        peer.stop()
    result["peer"] = out


def kafka_util_end_offsets(brokers: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-count"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


def bytes_under(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def logged_seconds(log: str, message: str) -> list[float]:
    """The `N.N s` figures of every log line containing `message ... in N.N s`."""
    out = []
    for line in log.splitlines():
        if message in line and " in " in line:
            try:
                out.append(float(line.split(message, 1)[1].split(" in ", 1)[1].split(" s", 1)[0]))
            except (IndexError, ValueError):
                pass
    return out


async def server_recall_estimate(server: FreshetServer) -> dict:
    """freshet's own measurement of its graph (`freshet_vector_recall_estimate`) and whether it
    answers vector searches by exact scan because of it."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{server.url}/metrics")).text
    out = {}
    for metric, key in [("freshet_vector_recall_estimate", "recall_at_10"),
                        ("freshet_vector_exact_scan", "exact_scan")]:
        for value in metric_values(text, metric):
            out[key] = value
    return out


def metric_values(text: str, name: str) -> list[float]:
    """The values of metric `name`'s labelled samples in a `/metrics` page."""
    return [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")]


async def wait_graph_backlog_empty(server: FreshetServer, timeout: float = 600) -> float:
    """Seconds until every vector is in the HNSW graph (after /readyz, inserts may still run)."""
    t = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() - t < timeout:
            text = (await http.get(f"{server.url}/metrics")).text
            backlog = metric_values(text, "freshet_vector_graph_backlog")
            if backlog and max(backlog) == 0:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - t


async def run_restart(args, work: Path, broker, topic: str, corpus: Corpus, n: int, records: int,
                      result: dict) -> None:
    """Phase 7: first catch-up, clean restart, kill -9 restart of a persisted freshet.

    After phases 1–4 it restarts their freshet (same config and data_dir, freshet's default
    persistence): the first catch-up is phase 1's, and the stop is that server's. Alone
    (`--restart-only`) it runs its own first catch-up."""
    env = {"FRESHET_LOG": "info,rmcp=warn"}
    out: dict = {"records": records, "docs": n}
    if "_bench_config" in result:
        name = "bench"
        config, stopped = result["_bench_config"], result["_bench_stopped"]
        out["first_catch_up_s"] = result["ingest"]["seconds_to_ready"]
        out["graph_inserts_after_ready_s"] = result["ingest"]["graph_inserts_after_ready_s"]
        out["rss_bytes_per_doc_after_catch_up"] = result["ingest"]["rss_bytes_per_doc_after_graph"]
        out["clean_stop_s"] = stopped["stop_s"]
        out["graph_save_s"] = logged_seconds(stopped["log"], "saved the vector graph")
        out["after_phases"] = "ingest, recall, latency, freshness (same data_dir)"
    else:
        name = "restart"
        config = freshet_config(work, broker.bootstrap, [topic], name, vector_storage=args.vector_storage)
        server = FreshetServer(config, work, env=env)
        try:
            first = time_to_ready(server, records, args.ready_timeout, [])
            out["first_catch_up_s"] = first["seconds_to_ready"]
            out["graph_inserts_after_ready_s"] = await wait_graph_backlog_empty(server, args.ready_timeout)
            out["rss_bytes_per_doc_after_catch_up"] = rss_bytes(server.process.pid) / n
            t = time.monotonic()
        finally:
            server.stop()
        out["clean_stop_s"] = time.monotonic() - t
        out["graph_save_s"] = logged_seconds(server.log(), "saved the vector graph")
    print(f"restart phase: first catch-up {out['first_catch_up_s']:.1f} s, "
          f"{out['rss_bytes_per_doc_after_catch_up']:.0f} B/doc resident", flush=True)
    data = work / f"data-{name}"
    collection = data / "collections" / name
    out["disk_bytes_per_doc"] = bytes_under(data) / n
    out["disk_bytes_per_doc_by_part"] = {
        "text_and_documents": bytes_under(collection / "text") / n,
        "vector_journal": sum(f.stat().st_size for f in (collection / "vectors").glob("journal-*")) / n,
        "vector_graph_dump": sum(f.stat().st_size for f in (collection / "vectors").glob("graph-*")) / n,
    }

    server = FreshetServer(config, work, env=env)
    target = FreshetTarget(server, name)
    try:
        out["clean_restart_s"] = time_to_ready(server, 0, args.ready_timeout, [])["seconds_to_ready"]
        out["clean_restart_open_s"] = logged_seconds(server.log(), "opened the persisted collections")
        out["rss_bytes_per_doc_after_restart"] = rss_bytes(server.process.pid) / n
        out["clean_restart_graph_inserts_s"] = await wait_graph_backlog_empty(server)
        print(f"restart phase: clean restart {out['clean_restart_s']:.1f} s", flush=True)
        # Steady updates: what a checkpoint costs (the `checkpoint` stage: journal fsync + BM25 commit).
        before, clock = await apply_stage_totals(target), time.monotonic()
        steady = SteadyProducer(broker.bootstrap, topic, corpus, n, args.load_rate)
        steady.start()
        await asyncio.sleep(args.restart_update_seconds)
        steady.stop_flag.set()
        steady.join()
        await caught_up(broker.bootstrap, topic, corpus, target.has_document)
        out["updates"] = {"rate": args.load_rate, "seconds": args.restart_update_seconds,
                          "apply_stages": stage_means(before, await apply_stage_totals(target),
                                                      time.monotonic() - clock)}
        out["graph_save_s"] += logged_seconds(server.log(), "saved the vector graph")
        await asyncio.sleep(1)
        server.process.kill()  # SIGKILL: no drain, no graph save
        server.process.wait(30)
    finally:
        await target.aclose()
        server.stop()

    server = FreshetServer(config, work, env=env)
    try:
        out["kill9_restart_s"] = time_to_ready(server, 0, args.ready_timeout, [])["seconds_to_ready"]
        out["kill9_restart_open_s"] = logged_seconds(server.log(), "opened the persisted collections")
        out["kill9_graph_inserts_after_ready_s"] = await wait_graph_backlog_empty(server)
        out["rss_bytes_per_doc_after_kill9_restart"] = rss_bytes(server.process.pid) / n
        print(f"restart phase: kill -9 restart {out['kill9_restart_s']:.1f} s", flush=True)
    finally:
        server.stop()
    for key in ("clean_restart_s", "kill9_restart_s"):
        out[key.replace("_s", "_vs_first_catch_up")] = out[key] / out["first_catch_up_s"]
    result["restart"] = out
    print(f"restart phase: {json.dumps(out)}", flush=True)


async def run(args: argparse.Namespace, result: dict) -> None:
    """Runs every phase, filling `result` as it goes."""
    n = args.docs or SCALES[args.scale]
    work = ROOT / ".tools" / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    broker = kafka_util.start_kafka(work / "kafka")
    topic = "bench"
    kafka_util.create_topic(broker, topic, partitions=args.partitions)
    corpus = Corpus(n, args.vectors)
    result.update({"scale": args.scale, "docs": n, "dim": DIM, "partitions": args.partitions,
                    "clients": args.clients, "latency_seconds": args.latency_seconds,
                    "freshness_seconds": args.freshness_seconds, "load_rate": args.load_rate,
                    "vector_storage": args.vector_storage or "int8",
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                **cpu_model(), "load_avg_at_start": os.getloadavg()[0]},
                    "commit": git_commit(),
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    try:
        if args.restart_only:
            records = produce_all(broker.bootstrap, topic, corpus, n)
            print(f"produced {records} records", flush=True)
            await run_restart(args, work, broker, topic, corpus, n, records, result)
            return
        await run_freshet(args, work, broker, topic, corpus, n, result)
        if not args.no_restart:
            records = sum(kafka_util_end_offsets(broker.bootstrap, topic, args.partitions))
            await run_restart(args, work, broker, topic, corpus, n, records, result)
        if args.embed_docs:
            await run_embedder(args, work, broker, corpus, result)
        if not args.no_peer:
            # A marker document after everything else: the peer has caught up when it sees it.
            p = Producer({"bootstrap.servers": broker.bootstrap})
            marker = corpus.doc(1, produced_at=int(now_ms()))
            marker["id"], marker["body"] = "catchupmarker", "catchupmarkertoken"
            p.produce(topic, key=marker["id"], value=json.dumps(marker).encode())
            p.flush(10)
            result["_last_doc"] = (marker["id"], "catchupmarkertoken")
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-count"})
            result["_topic_records"] = sum(
                c.get_watermark_offsets(TopicPartition(topic, p_), timeout=10)[1] for p_ in range(args.partitions))
            c.close()
            await run_peer(args, work, broker, topic, corpus, result)
    finally:
        broker.stop()
        for private in ("_last_doc", "_bench_config", "_bench_stopped"):
            result.pop(private, None)
        result.pop("_topic_records", None)
    result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--scale", choices=SCALES, default="small")
    ap.add_argument("--docs", type=int, help="override the scale's document count")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--rates", type=ints, default=[100, 1000, 5000], help="freshness produce rates, records/s")
    ap.add_argument("--clients", type=ints, default=[1, 4, 16], help="concurrent query clients")
    ap.add_argument("--freshness-seconds", type=float, default=20)
    ap.add_argument("--latency-seconds", type=float, default=8)
    ap.add_argument("--load-rate", type=float, default=200, help="updates/s while measuring loaded latency")
    ap.add_argument("--embed-docs", type=int, default=1000,
                    help="documents for the local-embedder phase (0 skips it)")
    ap.add_argument("--embed-rates", type=ints, default=[10, 50], help="freshness rates with the local embedder")
    ap.add_argument("--ef-search", type=int, default=HNSW["ef_search"], help="freshet's hnsw.ef_search")
    ap.add_argument("--ef-construction", type=int, default=HNSW["ef_construction"],
                    help="freshet's hnsw.ef_construction")
    ap.add_argument("--vector-storage", choices=["f32", "int8"], default=None,
                    help="freshet's collections[].vector_storage (default: freshet's, int8)")
    ap.add_argument("--vectors", choices=["clustered", "uniform"], default="clustered",
                    help="synthetic vectors: topics plus noise, or independent random directions")
    ap.add_argument("--recall-queries", type=int, default=200, help="queries of the recall phase")
    ap.add_argument("--no-peer", action="store_true", help="skip the Pathway side")
    ap.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    ap.add_argument("--restart-only", action="store_true",
                    help="produce the documents and run only the restart phase")
    ap.add_argument("--restart-update-seconds", type=float, default=20,
                    help="steady updates (at --load-rate) between the clean and the kill -9 restart")
    ap.add_argument("--ready-timeout", type=float, default=7200)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    # A stopped run (SIGTERM) unwinds like an error, so what was measured is written.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    HNSW.update(ef_search=args.ef_search, ef_construction=args.ef_construction)
    result: dict = {}
    try:
        asyncio.run(run(args, result))
        return 0
    except BaseException as e:
        # Keep what was measured: a failure in a late phase must not lose the earlier ones.
        result["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        # A run stopped during catch-up (a signal, a timeout) still keeps its progress.
        if "ingest" in result or result.get("ingest_progress") or "restart" in result:
            args.out.mkdir(parents=True, exist_ok=True)
            suffix = "-failed" if "error" in result else ""
            # f32 and uniform runs are kept beside, not instead of, the scale's default run
            # (int8, clustered) that bench/report.py renders. (Runs named int8-* are from
            # before int8 became freshet's default, when f32 was.)
            prefix = ("f32-" if args.vector_storage == "f32" else "") + \
                ("uniform-" if args.vectors == "uniform" else "")
            path = args.out / f"{prefix}{args.scale}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{suffix}.json"
            path.write_text(json.dumps(result, indent=2))
            print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())

"""Retrieval quality and embedding speed on a BEIR-layout collection (default: SciFact).

Streams the corpus through a real broker into a running `freshet serve` (release build,
`provider = "local"` with all-MiniLM-L6-v2), runs the queries through the MCP `search` tool
(Python `mcp` client) in `bm25`, `vector` and `hybrid` modes, and computes nDCG@10 and
Recall@100. In the same run it computes the same metrics for two reference implementations
on the same files: BM25 from `bm25s` and exact dense retrieval from `sentence-transformers`
with the same model files; and it measures embedding throughput of freshet's embedder and of
sentence-transformers on the same texts.

Run it through bench/scifact.sh, which installs everything and starts the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import kafka_util  # noqa: E402
from freshet_util import FreshetServer, call, http_client, write_config  # noqa: E402

MODES = ("bm25", "vector", "hybrid")
K = 100


# ----------------------------------------------------------------------------- data


def load_beir(data: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, dict[str, int]]]]:
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").open()]
    queries = {}
    for line in (data / "queries.jsonl").open():
        q = json.loads(line)
        queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("train", "test"):
        path = data / "qrels" / f"{split}.tsv"
        if not path.exists():
            continue
        rels: dict[str, dict[str, int]] = {}
        for i, line in enumerate(path.open()):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qid, did, score = parts[0], parts[1], int(parts[2])
            rels.setdefault(qid, {})[did] = score
        qrels[split] = rels
    return corpus, queries, qrels


def doc_text(d: dict) -> str:
    """The text both references embed and index: BEIR's title + " " + text."""
    return f"{d.get('title', '')} {d.get('text', '')}".strip()


# ----------------------------------------------------------------------------- metrics


def ndcg_at(ranking: list[str], rels: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, as trec_eval / pytrec_eval (used by BEIR) compute it."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking: list[str], rels: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranking[:k])) / len(relevant) if relevant else 0.0


def evaluate(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    qids = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    return {
        "ndcg@10": round(sum(ndcg_at(runs.get(q, []), qrels[q]) for q in qids) / len(qids), 4),
        "recall@100": round(sum(recall_at(runs.get(q, []), qrels[q]) for q in qids) / len(qids), 4),
        "queries": len(qids),
    }


# ----------------------------------------------------------------------------- references


def reference_bm25(corpus: list[dict], queries: dict[str, str], qids: list[str]) -> dict[str, list[str]]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = [str(d["_id"]) for d in corpus]
    tokens = bm25s.tokenize([doc_text(d) for d in corpus], stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    q_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    results, _ = retriever.retrieve(q_tokens, k=K, show_progress=False, n_threads=1)
    return {q: [ids[i] for i in row] for q, row in zip(qids, results)}


def reference_dense(model_dir: Path, corpus: list[dict], queries: dict[str, str], qids: list[str],
                    texts: list[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(texts[:16], batch_size=32)  # warm-up
    load = os.getloadavg()[0]
    started = time.perf_counter()
    doc_vecs = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    q_vecs = model.encode([queries[q] for q in qids], batch_size=32, normalize_embeddings=True,
                          convert_to_numpy=True)
    scores = q_vecs @ doc_vecs.T
    ids = [str(d["_id"]) for d in corpus]
    top = np.argsort(-scores, axis=1)[:, :K]
    runs = {q: [ids[i] for i in row] for q, row in zip(qids, top)}
    tokens = sum(min(len(t), model.max_seq_length)
                 for t in model.tokenizer(texts, add_special_tokens=True)["input_ids"])
    speed = {
        "engine": f"sentence-transformers {__import__('sentence_transformers').__version__}, "
                  f"torch {torch.__version__} CPU, {torch.get_num_threads()} threads, batch 32",
        "texts": len(texts), "tokens": tokens, "seconds": round(seconds, 2),
        "texts_per_s": round(len(texts) / seconds, 2), "tokens_per_s": round(tokens / seconds),
        "load_before": round(load, 2),
    }
    return runs, speed


def freshet_throughput(model_dir: Path, texts_file: Path, batch: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    out = subprocess.run(
        [str(ROOT / "target" / "release" / "examples" / "embed_throughput"), str(model_dir),
         str(texts_file), str(batch)],
        check=True, capture_output=True, text=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "engine": f"freshet local embedder (candle + gemm), batch {batch}",
        "texts": r["texts"], "tokens": r["tokens"], "seconds": round(r["seconds"], 2),
        "texts_per_s": round(r["texts_per_s"], 2), "tokens_per_s": round(r["tokens_per_s"]),
        "load_before": round(load, 2),
    }


# ----------------------------------------------------------------------------- freshet


def produce(broker: str, topic: str, corpus: list[dict]) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker, "linger.ms": 20, "compression.type": "zstd"})
    started = time.perf_counter()
    for i, d in enumerate(corpus):
        doc = {"id": str(d["_id"]), "title": d.get("title", ""), "text": d.get("text", "")}
        while True:
            try:
                p.produce(topic, key=doc["id"].encode(), value=json.dumps(doc).encode())
                break
            except BufferError:
                p.poll(0.1)
        if i % 500 == 0:
            p.poll(0)
    remaining = p.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} records not delivered")
    return time.perf_counter() - started


async def measured_recall(server: FreshetServer, timeout: float = 120) -> dict | None:
    """The collection's `vector_recall` (freshet measures its graph once the insert thread is
    idle after the catch-up); None without vectors or when none came within `timeout`."""
    deadline = time.monotonic() + timeout
    async with http_client(server.mcp_url) as client:
        while time.monotonic() < deadline:
            listing = (await call(client, "list_collections", {}))["collections"][0]
            if listing.get("vector_recall") or not listing["embedding"]["dimensions"]:
                return listing.get("vector_recall")
            await asyncio.sleep(0.5)
    return None


async def wait_documents(server: FreshetServer, n: int, timeout: float) -> dict:
    import httpx2

    deadline = time.monotonic() + timeout
    while True:  # the HTTP listener comes up once the model is loaded
        if server.process.poll() is not None:
            raise RuntimeError(f"freshet exited:\n{server.log()[-3000:]}")
        try:
            if httpx2.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        await asyncio.sleep(0.1)
    async with http_client(server.mcp_url) as client:
        while True:
            info = (await call(client, "list_collections", {}))["collections"][0]
            if info["documents"] >= n:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {info['documents']} of {n} documents after {timeout}s")
            await asyncio.sleep(0.5)


async def run_queries(url: str, queries: dict[str, str], qids: list[str], mode: str,
                      scored: dict[str, list[tuple[str, float]]] | None = None
                      ) -> tuple[dict[str, list[str]], list[float]]:
    """Runs every query in one mode; fills `scored` (if given) with each ranking's scores."""
    runs: dict[str, list[str]] = {}
    latencies = []
    async with http_client(url) as client:
        for q in qids:
            started = time.perf_counter()
            res = await call(client, "search", {"query": queries[q], "collection": "scifact", "mode": mode, "k": K})
            latencies.append(time.perf_counter() - started)
            if res.get("notes"):
                raise RuntimeError(f"search notes for {mode}: {res['notes']}")
            runs[q] = [h["id"] for h in res["results"]]
            if scored is not None:
                scored[q] = [(h["id"], h["score"]) for h in res["results"]]
    return runs, latencies


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def write_result(result: dict[str, Any], out: Path) -> None:
    """Stamps the finish time and writes the result as JSON (bench/report.py reads it)."""
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    ap.add_argument("--broker", required=True, help="bootstrap servers, e.g. 127.0.0.1:9092")
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scifact.json")
    ap.add_argument("--splits", default="train,test")
    ap.add_argument("--skip-reference", action="store_true", help="freshet only (faster iterations)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--collection-toml", default="", help="extra keys for the collection, as TOML")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--reuse", action="store_true",
                    help="query the collection the previous run indexed (same broker, topic and data "
                         "directory; freshet restarts from its checkpoint): for fusion and ranking changes")
    ap.add_argument("--dump-runs", type=Path, default=None,
                    help="write every ranking with its scores (split → mode → query → [[id, score]]), "
                         "for offline fusion experiments (bench/fusion.py)")
    ap.add_argument("--no-title-field", action="store_true",
                    help="index the title only as part of the text, not as a boosted field")
    ap.add_argument("--provider", default="local", choices=["local", "none"],
                    help="`none`: BM25 only, no embedding (fast BM25 experiments)")
    args = ap.parse_args()

    corpus, queries, qrels = load_beir(args.data)
    splits = [s for s in args.splits.split(",") if s in qrels]
    all_qids = sorted({q for s in splits for q in qrels[s] if q in queries})
    texts = [doc_text(d) for d in corpus]
    work = ROOT / "bench" / "work"
    work.mkdir(parents=True, exist_ok=True)
    texts_file = work / "texts.jsonl"
    texts_file.write_text("".join(json.dumps(t) + "\n" for t in texts))
    result: dict[str, Any] = {
        "dataset": str(args.data), "documents": len(corpus),
        "queries": {s: sum(1 for q in qrels[s] if q in queries) for s in splits},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {s: {} for s in splits},
    }
    print(f"{len(corpus)} documents, queries: {result['queries']}", flush=True)

    # freshet: stream the corpus in, then query through MCP.
    topic_file = work / "scifact-topic.txt"
    if args.reuse:
        topic = topic_file.read_text().strip()
        print(f"reusing topic {topic} and {work / 'data'}", flush=True)
    else:
        topic = kafka_util.unique_topic("scifact")
        # A data directory left by an earlier run holds another topic's collection: freshet
        # would (rightly) serve it while rebuilding from the new topic. Start empty.
        shutil.rmtree(work / "data", ignore_errors=True)
        kafka_util.create_topic(args.broker, topic, partitions=1)
        produce_s = produce(args.broker, topic, corpus)
        topic_file.write_text(topic)
        print(f"produced {len(corpus)} records in {produce_s:.1f}s", flush=True)
    config = write_config(
        work / "freshet.toml",
        {"kafka": {"brokers": args.broker}, "server": {"data_dir": str(work / "data")}},
        [{"name": "scifact", "topics": [topic], "format": "json", "id_field": "id",
          **({} if args.no_title_field else {"title_field": "title"}), "text_fields": ["title", "text"],
          "embedding": {"provider": "local", "model_dir": str(args.model_dir)}
          if args.provider == "local" else {"provider": "none"}}],
    )
    if args.collection_toml:
        text = config.read_text().replace("[collections.embedding]",
                                          args.collection_toml.replace("\\n", "\n") + "\n[collections.embedding]")
        config.write_text(text)
    os.environ["FRESHET_BIN"] = str(ROOT / "target" / "release" / "freshet")
    os.environ.setdefault("FRESHET_LOG", "warn")
    started = time.perf_counter()
    server = FreshetServer(config, work)
    try:
        info = asyncio.run(wait_documents(server, len(corpus), timeout=3600))
        ingest_s = time.perf_counter() - started
        result["freshet_ingest"] = {
            "documents": info["documents"], "chunks": info["chunks"], "seconds": round(ingest_s, 1),
            "documents_per_s": round(info["documents"] / ingest_s, 2),
            "embedding": info["embedding"],
        }
        print(f"freshet ingested {info['documents']} documents ({info['chunks']} chunks) "
              f"in {ingest_s:.1f}s", flush=True)
        result["freshet_ingest"]["vector_recall"] = asyncio.run(measured_recall(server))
        print(f"freshet's own measurement of its graph: {result['freshet_ingest']['vector_recall']}", flush=True)
        latency: dict[str, list[float]] = {}
        dumped: dict[str, dict[str, dict]] = {}
        for split in splits:
            qids = [q for q in qrels[split] if q in queries]
            for mode in args.modes.split(","):
                scored = dumped.setdefault(split, {}).setdefault(mode, {}) if args.dump_runs else None
                runs, lat = asyncio.run(run_queries(server.mcp_url, queries, qids, mode, scored))
                latency.setdefault(mode, []).extend(lat)
                result["metrics"][split][f"freshet {mode}"] = evaluate(runs, qrels[split])
                print(f"{split:5s} freshet {mode:7s} {result['metrics'][split][f'freshet {mode}']}", flush=True)
        if args.dump_runs:
            args.dump_runs.parent.mkdir(parents=True, exist_ok=True)
            args.dump_runs.write_text(json.dumps(dumped))
        result["freshet_query_latency_ms"] = {
            m: {"p50": round(percentile(v, 50) * 1000, 1), "p95": round(percentile(v, 95) * 1000, 1)}
            for m, v in latency.items()
        }
    finally:
        code = server.stop()
        if code not in (0, None):
            print(server.log()[-3000:], file=sys.stderr)

    if not args.skip_reference:
        started = time.perf_counter()
        bm25_runs = reference_bm25(corpus, queries, all_qids)
        print(f"bm25s reference in {time.perf_counter() - started:.1f}s", flush=True)
        dense_runs, st_speed = reference_dense(args.model_dir, corpus, queries, all_qids, texts)
        result["throughput"] = {"sentence_transformers": st_speed}
        for split in splits:
            rel = qrels[split]
            result["metrics"][split]["bm25s (reference)"] = evaluate(bm25_runs, rel)
            result["metrics"][split]["sentence-transformers exact (reference)"] = evaluate(dense_runs, rel)
            print(f"{split:5s} references {result['metrics'][split]}", flush=True)
    if not args.skip_throughput:
        result.setdefault("throughput", {})["freshet"] = freshet_throughput(args.model_dir, texts_file, 256)
        print(f"throughput {json.dumps(result['throughput'])}", flush=True)

    write_result(result, args.out)


if __name__ == "__main__":
    main()

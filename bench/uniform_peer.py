"""Recall of faiss's HNSW on the harness's corpus and queries: a reference for how much of a
recall miss belongs to the data rather than to freshet's graph.

    python3 -m venv .venv-faiss
    .venv-faiss/bin/pip install -r bench/requirements-faiss.txt
    .venv-faiss/bin/python bench/uniform_peer.py --docs 100000 --vectors uniform

Same documents (`harness.Corpus`, same seed), same queries as the harness's recall phase (a
document's vector plus noise, cosine ≈ 0.9; `--queries population`: fresh independent
directions, as `cargo run --release --example vector_memory` asks freshet's graph on uniform
vectors), same graph shape as freshet's defaults (M 16,
layer 0 keeps 32, ef_construction 100); recall@10 against exact search, for several
`efSearch`, and the time of an exact scan of every vector for comparison. Writes
bench/results/graph-peer-<vectors>-<docs>[-population].json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from harness import DIM, Corpus, cpu_model

ROOT = Path(__file__).resolve().parent.parent


def queries_like_the_harness(corpus: Corpus, n: int, count: int) -> np.ndarray:
    """The recall phase's queries (`harness.phase_recall`: same seed, same noise)."""
    rng = np.random.default_rng(11)
    out = np.empty((count, DIM), dtype=np.float32)
    for i in range(count):
        q = corpus.vectors[rng.integers(n)] + 0.5 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
        out[i] = q / np.linalg.norm(q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--vectors", choices=["clustered", "uniform"], default="uniform")
    ap.add_argument("--queries", choices=["near", "population"], default="near")
    ap.add_argument("--count", type=int, default=1000, help="how many queries")
    ap.add_argument("--ef-search", type=int, nargs="+", default=[100, 400, 1600])
    args = ap.parse_args()

    corpus = Corpus(args.docs, args.vectors)
    vectors = corpus.vectors[:args.docs]
    if args.queries == "population":
        if args.vectors != "uniform":
            ap.error("--queries population needs --vectors uniform (other centres are far from every document)")
        queries = Corpus(args.count, "uniform", seed=99).vectors
    else:
        queries = queries_like_the_harness(corpus, args.docs, args.count)

    started = time.perf_counter()
    exact = np.empty((args.count, 10), dtype=np.int64)
    for start in range(0, args.count, 100):
        scores = queries[start:start + 100] @ vectors.T
        exact[start:start + 100] = np.argpartition(-scores, 10, axis=1)[:, :10]
    scan_ms = (time.perf_counter() - started) * 1000 / args.count

    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    started = time.perf_counter()
    index.add(vectors)
    build_s = time.perf_counter() - started
    print(f"faiss HNSW M16 efC100: {args.docs} {args.vectors} vectors in {build_s:.1f} s "
          f"({args.docs / build_s:,.0f}/s on {faiss.omp_get_max_threads()} threads)", flush=True)

    rows = []
    for ef in args.ef_search:
        index.hnsw.efSearch = ef
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        ms = (time.perf_counter() - started) * 1000 / args.count
        hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist()))
        recall = hits / (10 * args.count)
        rows.append({"ef_search": ef, "recall_at_10": recall, "ms_per_query": ms})
        print(f"  efSearch {ef}: recall@10 {recall:.3f}, {ms:.2f} ms/query", flush=True)
    print(f"  exact scan (numpy, batches of 100): {scan_ms:.2f} ms/query", flush=True)

    suffix = "-population" if args.queries == "population" else ""
    out = ROOT / "bench" / "results" / f"graph-peer-{args.vectors}-{args.docs}{suffix}.json"
    out.write_text(json.dumps({
        "peer": f"faiss-cpu {faiss.__version__} IndexHNSWFlat", "m": 16, "ef_construction": 100,
        "docs": args.docs, "vectors": args.vectors, "queries": args.queries, "count": args.count,
        "build_s": build_s, "exact_scan_ms_per_query": scan_ms, "rows": rows,
        **cpu_model(), "load_avg_at_start": os.getloadavg()[0],
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

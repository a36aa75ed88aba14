"""Offline fusion experiments on rankings dumped by `bench/scifact.py --dump-runs FILE`.

Tunes each fusion method's parameters on the train split and reports them on test, beside
freshet's own hybrid ranking from the same run (to check that the offline replay of its
current fusion matches what the server returned).

    .venv/bin/python bench/fusion.py bench/work/runs.json [--data ../shared/data/scifact]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_qrels(data: Path) -> dict[str, dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split_file in (data / "qrels").glob("*.tsv"):
        split = split_file.stem
        for line in split_file.read_text().splitlines()[1:]:
            q, d, rel = line.split("\t")
            qrels.setdefault(split, {}).setdefault(q, {})[d] = int(rel)
    return qrels


def ndcg10(ranking: list[str], rels: dict[str, int]) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted(rels.values(), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mean_ndcg(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    return sum(ndcg10(runs.get(q, []), rels) for q, rels in qrels.items()) / len(qrels)


def rrf(lists: list[list[tuple[str, float]]], weights: list[float], k: float) -> list[str]:
    score: dict[str, float] = {}
    for ranked, w in zip(lists, weights):
        for rank, (doc, _) in enumerate(ranked):
            score[doc] = score.get(doc, 0.0) + w / (k + rank + 1)
    return sorted(score, key=lambda d: -score[d])


def normalised(ranked: list[tuple[str, float]], how: str) -> dict[str, float]:
    if not ranked:
        return {}
    values = [s for _, s in ranked]
    if how == "minmax":
        lo, hi = min(values), max(values)
        span = hi - lo or 1.0
        return {d: (s - lo) / span for d, s in ranked}
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
    return {d: (s - mean) / sd for d, s in ranked}


def convex(lists: list[list[tuple[str, float]]], alpha: float, how: str) -> list[str]:
    """alpha × normalised BM25 + (1 − alpha) × normalised vector; a document missing from a
    list gets that list's lowest normalised score."""
    bm25, vec = (normalised(r, how) for r in lists)
    floor_b = min(bm25.values(), default=0.0)
    floor_v = min(vec.values(), default=0.0)
    docs = set(bm25) | set(vec)
    score = {d: alpha * bm25.get(d, floor_b) + (1 - alpha) * vec.get(d, floor_v) for d in docs}
    return sorted(score, key=lambda d: -score[d])


def methods():
    for k in (5, 10, 20, 40, 60, 100):
        for w in (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0):
            yield f"rrf k={k} w_bm25={w}", lambda ls, k=k, w=w: rrf(ls, [w, 1.0], k)
    for how in ("minmax", "z"):
        for a in [i / 20 for i in range(21)]:
            yield f"convex {how} alpha={a:.2f}", lambda ls, a=a, how=how: convex(ls, a, how)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    ap.add_argument("--depth", type=int, default=100, help="candidates taken from each retriever")
    args = ap.parse_args()
    dumped = json.loads(args.runs.read_text())
    qrels = load_qrels(args.data)

    def fused(split: str, method) -> dict[str, list[str]]:
        b, v = dumped[split]["bm25"], dumped[split]["vector"]
        return {q: method([b.get(q, [])[: args.depth], v.get(q, [])[: args.depth]]) for q in qrels[split]}

    def served(split: str, mode: str) -> float:
        return mean_ndcg({q: [d for d, _ in r] for q, r in dumped[split][mode].items()}, qrels[split])

    for split in ("train", "test"):
        print(f"{split}: served bm25 {served(split, 'bm25'):.4f}  vector {served(split, 'vector'):.4f}"
              f"  hybrid {served(split, 'hybrid'):.4f}  offline rrf k=60 {mean_ndcg(fused(split, lambda ls: rrf(ls, [1, 1], 60)), qrels[split]):.4f}")
    scored = []
    for name, method in methods():
        scored.append((mean_ndcg(fused("train", method), qrels["train"]), name, method))
    scored.sort(key=lambda t: -t[0])
    print("\nbest on train → the same on test")
    best_per_family: dict[str, tuple] = {}
    for train, name, method in scored:
        family = name.split(" ")[0] + (" " + name.split(" ")[1] if name.startswith("convex") else "")
        best_per_family.setdefault(family, (train, name, method))
    for train, name, method in scored[:10] + list(best_per_family.values()):
        print(f"{name:32s} train {train:.4f}  test {mean_ndcg(fused('test', method), qrels['test']):.4f}")


if __name__ == "__main__":
    main()

"""Smoke check of the Pathway peer: run in .venv-bench as `.venv-bench/bin/python bench/peer_smoke.py`.

Starts a private Apache Kafka broker and the peer, produces 2000 documents to a 2-partition topic and
checks that (a) hybrid and bm25 queries answer, (b) a document's unique token finds it first,
(c) after an update of one id the old token no longer finds it and the new one does, and
(d) measures produce -> searchable for 20 single documents at ~10/s. Exits 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import kafka_util  # noqa: E402
from peer_client import PathwayPeer  # noqa: E402

DIM = 384
VOCAB = [f"w{i:03d}" for i in range(200)]


class Docs:
    def __init__(self, seed: int = 11):
        self.rng = np.random.default_rng(seed)

    def vector(self) -> list[float]:
        v = self.rng.standard_normal(DIM)
        return np.round(v / np.linalg.norm(v), 5).tolist()

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(VOCAB, size=n))

    def doc(self, doc_id: str, token: str) -> dict:
        return {"id": doc_id, "title": self.words(5), "body": f"{self.words(40)} {token}",
                "embedding": self.vector(), "produced_at": int(time.time() * 1000)}


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        raise SystemExit(1)


async def scenario(peer: PathwayPeer, producer: kafka_util.Producer, topic: str,
                   n: int, docs: Docs) -> None:
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        await peer.wait_docs(client, n, timeout=300)
        print(f"     {n} docs indexed {time.monotonic() - started:.1f}s after the peer listened")

        # (a) every mode answers; (b) a unique token ranks its document first.
        probe = docs.doc("probe", "unused")
        for mode in ("hybrid", "bm25", "vector"):
            ids = await peer.query(client, f"u17 {VOCAB[3]}", probe["embedding"], 10, mode)
            check(len(ids) == 10, f"{mode} query answers 10 hits")
        ids = await peer.query(client, "u1234", None, 5, "bm25")
        check(ids[:1] == ["d1234"], f"bm25 'u1234' -> d1234 first (got {ids})")
        ids = await peer.query(client, "u1234", None, 5, "hybrid")
        check(ids[:1] == ["d1234"], f"hybrid without vector 'u1234' -> d1234 first (got {ids})")
        ids = await peer.query(client, "u1234", [0.5, 0.5, 0.5], 5, "hybrid")
        check(ids[:1] == ["d1234"], f"hybrid with a 3-d vector falls back to bm25 (got {ids})")
        junk = await peer.query(client, 'u42: "AND (title:x) -+*', None, 5, "bm25")
        check("d42" in junk, f"query syntax is stripped, not fatal (got {junk})")

        # A record without an embedding is indexed for BM25 (and hybrid) only.
        bare = docs.doc("bare1", "novec1")
        del bare["embedding"]
        producer.send(topic, key="bare1", value=bare, partition=0)
        await peer.wait_contains(client, "novec1", "bare1", timeout=30)
        ids = await peer.query(client, "novec1", probe["embedding"], 3, "hybrid")
        check(ids[:1] == ["bare1"], f"record without embedding: found by hybrid (got {ids})")
        n += 1

        # Query latency on the idle index: sequential per mode, then 8 concurrent clients.
        rss_before = peer.rss_bytes()
        for mode in ("hybrid", "bm25", "vector"):
            lat = []
            for _ in range(60):
                q = docs.doc("q", "")
                t = time.perf_counter()
                await peer.query(client, q["title"], q["embedding"], 10, mode)
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(f"     {mode} latency (sequential, 60): p50 {lat[30]:.1f} ms, "
                  f"p90 {lat[54]:.1f} ms, max {lat[-1]:.1f} ms")

        async def worker(count: int) -> None:
            for _ in range(count):
                q = docs.doc("q", "")
                await peer.query(client, q["title"], q["embedding"], 10, "hybrid")

        t = time.perf_counter()
        await asyncio.gather(*(worker(40) for _ in range(8)))
        print(f"     hybrid, 8 concurrent clients: {320 / (time.perf_counter() - t):.0f} queries/s;"
              f" RSS {rss_before / 2**20:.0f} -> {peer.rss_bytes() / 2**20:.0f} MiB"
              " over 500 queries")

        # The harness's closed-loop load (bench/loadgen.py), if present: 2 clients, 3 s.
        try:
            import loadgen  # noqa: F401
        except ImportError:
            print("     (bench/loadgen.py absent: closed-loop load not tried)")
        else:
            vectors = np.array([docs.vector() for _ in range(50)])
            r = peer.latency(SimpleNamespace(vectors=vectors), "hybrid", 2, 3.0, VOCAB)
            check(r.get("errors") == 0 and r.get("n", 0) > 0,
                  f"closed-loop hybrid, 2 clients: {r.get('qps', 0):.0f} queries/s, "
                  f"p50 {r.get('p50', 0):.1f} ms, p99 {r.get('p99', 0):.1f} ms, "
                  f"errors {r.get('errors')}")
        check(await peer.contains(client, "u1234", "d1234"), "contains('u1234', 'd1234')")

        # (c) update d7: new body token, new vector; produced to the other partition (order by produced_at).
        updated = docs.doc("d7", "v7new")
        producer.send(topic, key="d7", value=updated, partition=0)
        t_gone = await peer.wait_contains(client, "u7", "d7", timeout=30, present=False)
        await peer.wait_contains(client, "v7new", "d7", timeout=30)
        check(True, "update: old token no longer finds d7, new token does")
        ids = await peer.query(client, "", updated["embedding"], 3, "vector")
        check(ids[:1] == ["d7"], f"update: new vector finds d7 first (got {ids})")
        check(await peer.doc_count(client) == n, "update did not add a row")
        del t_gone

        # (d) produce -> searchable, 20 single documents at ~10/s.
        freshness = []
        for i in range(20):
            doc_id = f"f{i}"
            due = time.monotonic() + 0.1
            sent = time.monotonic()
            producer.send(topic, key=doc_id, value=docs.doc(doc_id, f"fresh{i}"),
                          partition=i % 2)
            seen = await peer.wait_contains(client, f"fresh{i}", doc_id, timeout=30)
            freshness.append((seen - sent) * 1000)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        print(f"     freshness produce->searchable (20 docs, ~10/s): "
              f"p50 {statistics.median(freshness):.0f} ms, max {max(freshness):.0f} ms "
              f"(in order: {' '.join(f'{x:.0f}' for x in freshness)})")
        check(await peer.doc_count(client) == n + 20, "20 fresh docs counted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "peer-smoke")
    args = parser.parse_args()

    broker = kafka_util.start_kafka(args.workdir / "kafka")
    peer = PathwayPeer()
    try:
        topic = kafka_util.unique_topic("pathway-smoke")
        kafka_util.create_topic(broker, topic, partitions=2)
        docs = Docs()
        with kafka_util.Producer(broker) as producer:
            producer.send_many(topic, [
                {"key": f"d{i}", "value": docs.doc(f"d{i}", f"u{i}"), "partition": i % 2}
                for i in range(args.docs)
            ])
            listen_s = peer.start(broker.bootstrap, topic, kafka_util.free_port(), args.workdir)
            print(f"     peer listening after {listen_s:.1f}s")
            asyncio.run(scenario(peer, producer, topic, args.docs, docs))
            print(f"     peer RSS {peer.rss_bytes() / 2**20:.0f} MiB")
            t = time.monotonic()
            peer.stop()
            print(f"     peer stopped in {time.monotonic() - t:.1f}s")
        del producer  # before the broker stops: librdkafka would log the lost connection
        print("peer smoke passed")
        return 0
    except BaseException:
        if peer.log_path:
            print(f"peer log ({peer.log_path}):\n{peer.log_tail()}", file=sys.stderr)
        raise
    finally:
        peer.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Client side of the Pathway peer (bench/peer_pathway.py), for the benchmark harness.

Runs in .venv-bench: imports only the standard library and httpx. The peer itself runs in
.venv-pathway as a subprocess, so Pathway never enters the harness's environment.

    peer = PathwayPeer()
    peer.start("127.0.0.1:9092", "docs", port=8711, workdir=Path("bench/work/pathway"))
    async with httpx.AsyncClient() as client:
        await peer.wait_docs(client, 10_000, timeout=600)      # caught up
        ids = await peer.query(client, "w0001 w0042", vector, k=10, mode="hybrid")
    print(peer.rss_bytes())
    peer.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Sequence

import httpx

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = ROOT / "bench" / "peer_pathway.py"
PEER_PYTHON = ROOT / ".venv-pathway" / "bin" / "python"
READY_LINE = "pathway peer ready"

#: What the peer runs with unless `start` is told otherwise (the harness reports these).
#: Input autocommit intervals bound freshness and query latency (see bench/peer_pathway.py).
SETTINGS = {
    "pathway": "0.33.0",  # as pinned in bench/requirements-pathway.txt
    "autocommit_ms": 10,  # Kafka input
    "rest_autocommit_ms": 5,  # query input
    "fetch_wait_ms": 10,  # librdkafka fetch.wait.max.ms (tansu does not wake waiting fetches)
    "threads": 1,
    # Kafka records in flight (0: unlimited). Bounds the minibatches of a catch-up: unlimited,
    # 10k docs arrive as one batch and a query waits ~11 s for it; at 2000, 1.5-3.3 s.
    "max_backlog": 2000,
    "bm25": "tantivy (TantivyBM25)",
    "vector": "usearch HNSW (USearchKnn), cosine",
    "hybrid": "RRF, k = 60",
}


class PeerError(RuntimeError):
    pass


class PathwayPeer:
    """One `peer_pathway.py` process: start, query, measure, stop."""

    modes = ["bm25", "vector", "hybrid"]

    def __init__(self, python: Path = PEER_PYTHON, script: Path = PEER_SCRIPT):
        self.python = python
        self.script = script
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, brokers: str, topic: str, port: int, workdir: Path, *, dim: int = 384,
              autocommit_ms: int = SETTINGS["autocommit_ms"],
              rest_autocommit_ms: int = SETTINGS["rest_autocommit_ms"],
              fetch_wait_ms: int = SETTINGS["fetch_wait_ms"], threads: int = SETTINGS["threads"],
              max_backlog: int = SETTINGS["max_backlog"], reserved: int = 10_000,
              timeout: float = 120.0) -> float:
        """Launch the peer (log: workdir/pathway.log) and wait until its HTTP server listens.
        Returns the seconds that took. Documents may still be loading: see `wait_docs`."""
        if not self.python.exists():
            raise PeerError(f"{self.python} missing: create .venv-pathway from "
                            "bench/requirements-pathway.txt")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log_path = workdir / "pathway.log"
        self._log = open(self.log_path, "wb")
        cmd = [str(self.python), str(self.script), "--brokers", brokers, "--topic", topic,
               "--port", str(port), "--dim", str(dim), "--autocommit-ms", str(autocommit_ms),
               "--rest-autocommit-ms", str(rest_autocommit_ms),
               "--fetch-wait-ms", str(fetch_wait_ms), "--reserved", str(reserved),
               "--max-backlog", str(max_backlog)]
        # PATHWAY_THREADS: worker threads of the engine (Pathway's own variable).
        env = {**os.environ, "PATHWAY_THREADS": str(threads)}
        started = time.monotonic()
        self.process = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise PeerError(f"pathway peer exited with {self.process.returncode}:\n"
                                + self.log_tail())
            if READY_LINE in self.log_path.read_text(errors="replace"):
                return time.monotonic() - started
            time.sleep(0.1)
        self.stop()
        raise PeerError(f"pathway peer not listening after {timeout}s:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s (Pathway may wait on its connectors)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def rss_bytes(self) -> int:
        """Resident memory of the peer process (VmRSS), 0 if it is not running."""
        if not self.alive():
            return 0
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ queries

    async def search(self, client: httpx.AsyncClient, query: str,
                     vector: Sequence[float] | None = None, k: int = 10,
                     mode: str = "hybrid", timeout: float = 30.0) -> tuple[list[str], list[float]]:
        """(ids, scores), best first. mode: hybrid | bm25 | vector. Hybrid without a vector
        is answered by BM25; vector without one answers no hits. Scores: BM25 score, RRF
        sum, or minus the cosine distance."""
        body = {"query": query, "vector": None if vector is None else [float(x) for x in vector],
                "k": int(k), "mode": mode}
        response = await client.post(f"{self.url}/query", json=body, timeout=timeout)
        response.raise_for_status()
        reply = response.json()
        return reply["ids"], reply["scores"]

    async def query(self, client: httpx.AsyncClient, query: str,
                    vector: Sequence[float] | None = None, k: int = 10,
                    mode: str = "hybrid") -> list[str]:
        """Hit ids, best first."""
        return (await self.search(client, query, vector, k, mode))[0]

    async def doc_count(self, client: httpx.AsyncClient) -> int:
        """Distinct ids indexed (as of now)."""
        response = await client.get(f"{self.url}/stats", timeout=30)
        response.raise_for_status()
        return response.json()["docs"]

    async def wait_docs(self, client: httpx.AsyncClient, count: int, timeout: float,
                        interval: float = 0.2) -> float:
        """Wait until at least `count` distinct ids are indexed; returns seconds waited."""
        started = time.monotonic()
        while (n := await self.doc_count(client)) < count:
            if time.monotonic() - started > timeout or not self.alive():
                raise TimeoutError(f"{n} of {count} docs indexed after "
                                   f"{time.monotonic() - started:.1f}s\n" + self.log_tail())
            await asyncio.sleep(interval)
        return time.monotonic() - started

    async def contains(self, client: httpx.AsyncClient, token: str, doc_id: str,
                       k: int = 1) -> bool:
        """Does a BM25 query for `token` rank `doc_id` in its top k?"""
        return doc_id in await self.query(client, token, None, k, "bm25")

    async def wait_contains(self, client: httpx.AsyncClient, token_query: str, doc_id: str,
                            timeout: float, k: int = 10, present: bool = True,
                            interval: float = 0.0) -> float:
        """Poll a BM25 query until `doc_id` is among its top k (or, with present=False, is
        not). Returns the monotonic time of the response that showed it; raises
        TimeoutError. Each poll waits for its answer, so polls never pile up."""
        deadline = time.monotonic() + timeout
        while True:
            ids = await self.query(client, token_query, None, k, "bm25")
            if (doc_id in ids) == present:
                return time.monotonic()
            if time.monotonic() > deadline or not self.alive():
                raise TimeoutError(f"{doc_id} {'not ' if present else 'still '}found by "
                                   f"{token_query!r} after {timeout}s")
            if interval:
                await asyncio.sleep(interval)

    # ------------------------------------------------------------------ load

    def query_bodies(self, vectors, mode: str, vocab: Sequence[str], count: int = 500,
                     seed: int = 5) -> list[bytes]:
        """`count` JSON request bodies for /query: 3 words from the 500 most frequent of
        `vocab` and/or one of `vectors` (rows of an array), k = 10."""
        rng = random.Random(seed)
        bodies = []
        for _ in range(count):
            body = {"query": "", "vector": None, "k": 10, "mode": mode}
            if mode != "vector":
                body["query"] = " ".join(rng.choice(vocab[:500]) for _ in range(3))
            if mode != "bm25":
                body["vector"] = [round(float(x), 5)
                                  for x in vectors[rng.randrange(len(vectors))]]
            bodies.append(json.dumps(body).encode())
        return bodies

    def latency(self, corpus, mode: str, clients: int, seconds: float,
                vocab: Sequence[str]) -> dict:
        """Closed-loop load with bench/loadgen.py (`clients` processes for `seconds`) against
        POST /query; `corpus.vectors` supplies the query vectors."""
        import loadgen  # bench/loadgen.py, on the harness's sys.path

        return loadgen.closed_loop("127.0.0.1", self.port, "/query",
                                   {"content-type": "application/json"},
                                   self.query_bodies(corpus.vectors, mode, vocab),
                                   clients, seconds, must_contain=b'"ids"')

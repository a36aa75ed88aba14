"""Durability and operations with the real binary, a real broker and real signals:
persisted indexes and restarts, damaged files, a full disk, crashes, readiness, metrics, and broker faults."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
import zlib
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import Producer, free_port
from netutil import Proxy

pytestmark = pytest.mark.anyio


def docs_config(path: Path, brokers: str, topic: str, vectors: bool = False,
                vector_storage: str | None = "f32", **sections) -> Path:
    """`vector_storage=None` leaves the key out: freshet's default."""
    collection = {"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
                  "metadata_fields": ["v"]}
    if vectors:
        collection |= {"vector_field": "vec", "embedding": {"provider": "precomputed", "dimensions": 4}}
        if vector_storage is not None:
            collection["vector_storage"] = vector_storage
    return write_config(path, {"kafka": {"brokers": brokers, "watermark_interval_ms": 100},
                               "snapshot": {"interval_ms": 300}, **sections},
                        [collection])


def unit_vector(i: int) -> list[float]:
    """A distinct direction per document, so vector search results say which were indexed."""
    return [1.0, (i % 7) / 7, (i % 11) / 11, (i % 13) / 13]


def metrics(server: FreshetServer) -> dict[tuple[str, tuple], float]:
    """Scrapes /metrics; parsing fails the test if the text is not valid Prometheus format."""
    text = httpx2.get(f"{server.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def state(server: FreshetServer, ids: list[str]) -> dict[str, tuple]:
    async with http_client(server.mcp_url) as client:
        fresh = await call(client, "document_freshness", {"collection": "docs", "ids": ids})
    return {d["id"]: (d["status"], d.get("freshness", {}).get("offset"), d.get("freshness", {}).get("partition"))
            for d in fresh["documents"]}


async def wait_applied(server: FreshetServer, topic: str, last: dict[int, int], timeout: float = 60) -> None:
    """Waits until each partition's applied offset reaches the last produced one."""
    deadline = time.monotonic() + timeout
    while True:
        async with http_client(server.mcp_url) as client:
            parts = (await call(client, "list_collections", {}))["collections"][0]["partitions"]
        applied = {p["partition"]: p["applied_offset"] for p in parts if p["topic"] == topic}
        if all((applied.get(p) or -1) >= off for p, off in last.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"applied {applied}, want {last}\n{server.log()[-3000:]}")
        time.sleep(0.1)


def produce_docs(producer: Producer, topic: str, start: int, count: int, partitions: int = 2,
                 vectors: bool = False) -> dict[int, int]:
    """Upserts doc-<i> into partition i % partitions, batched the way an ordinary producer
    batches (linger, compression); returns the last offset per partition."""
    last = {}
    by_part: dict[int, list] = {}
    for i in range(start, start + count):
        value = {"id": f"doc-{i}", "title": f"title {i}", "body": f"payload number {i}", "v": i}
        if vectors:
            value["vec"] = unit_vector(i)
        by_part.setdefault(i % partitions, []).append((f"doc-{i}", value))
    for part, records in by_part.items():
        last[part] = producer.send_many(topic, records, partition=part)[-1].offset
    return last


async def vector_ids(server: FreshetServer, i: int, k: int = 5) -> list[str]:
    async with http_client(server.mcp_url) as client:
        res = await call(client, "search", {"query": "", "collection": "docs", "mode": "vector", "k": k,
                                            "vector": unit_vector(i)})
    return [h["id"] for h in res["results"]]


@pytest.mark.parametrize("storage", ["f32", "int8"])
async def test_graceful_restart_opens_the_indexes_and_resumes(broker, tmp_path, storage):
    topic = kafka_util.unique_topic("resume")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True, vector_storage=storage)
    with Producer(broker) as p:
        last = produce_docs(p, topic, 0, 100, vectors=True)
        first = FreshetServer(config, tmp_path)
        try:
            first.wait_ready()
            await wait_applied(first, topic, last)
            nearest = await vector_ids(first, 42)
        finally:
            assert first.stop() == 0, "SIGTERM drains and exits cleanly"
        assert "saved the vector graph" in first.log()
        last = produce_docs(p, topic, 100, 10, vectors=True)

    second = FreshetServer(config, tmp_path)
    try:
        second.wait_ready()
        await wait_applied(second, topic, last)
        log = second.log()
        assert "opened the persisted collection" in log, log
        for partition in (0, 1):
            assert re.search(rf'resuming at offset 50 collection="docs" topic="{topic}" partition={partition}', log), log
        assert re.search(r"opened the vector index .*points=100 in_graph=100", log), log
        samples = metrics(second)
        assert metric(samples, "freshet_records_total", topic=topic, outcome="applied") == 10, \
            "only the records written after the checkpoint are read again"
        assert metric(samples, "freshet_documents", collection="docs") == 110
        assert metric(samples, "freshet_vector_points", collection="docs", state="live") == 110
        st = await state(second, [f"doc-{i}" for i in (0, 99, 100, 109)])
        assert all(s == "found" for s, _, _ in st.values())
        assert (await vector_ids(second, 42))[0] == nearest[0] == "doc-42"
    finally:
        assert second.stop() == 0


async def test_an_f32_data_dir_opens_under_the_int8_default(broker, tmp_path):
    """A data_dir written while f32 was the default keeps its checkpoint when the server
    starts with today's default (int8): offsets resume, the graph is built again from the
    vector journal, the same documents are nearest."""
    topic = kafka_util.unique_topic("f32-to-int8")
    kafka_util.create_topic(broker, topic, partitions=2)
    with Producer(broker) as p:
        last = produce_docs(p, topic, 0, 60, vectors=True)
        old = FreshetServer(docs_config(tmp_path / "f32.toml", broker.bootstrap, topic, vectors=True,
                                        vector_storage="f32"), tmp_path)
        try:
            old.wait_ready()
            await wait_applied(old, topic, last)
            nearest = {i: (await vector_ids(old, i))[:3] for i in (5, 42)}
        finally:
            assert old.stop() == 0
        assert "saved the vector graph" in old.log()
        last = produce_docs(p, topic, 60, 6, vectors=True)

    new = FreshetServer(docs_config(tmp_path / "default.toml", broker.bootstrap, topic, vectors=True,
                                    vector_storage=None), tmp_path)
    try:
        new.wait_ready()
        await wait_applied(new, topic, last)
        log = new.log()
        assert "opened the persisted collection" in log, log
        assert re.search(r"holds f32 vectors, the collection now int8: building the graph again", log), log
        samples = metrics(new)
        assert metric(samples, "freshet_records_total", topic=topic, outcome="applied") == 6, \
            "only the records after the checkpoint are read: the storage change costs no replay"
        assert metric(samples, "freshet_vector_points", collection="docs", state="live") == 66
        for i, before in nearest.items():
            assert (await vector_ids(new, i))[:3] == before
        assert (await vector_ids(new, 63))[0] == "doc-63"
    finally:
        assert new.stop() == 0


async def two_runs(broker, tmp_path, topic: str, config: Path) -> dict[int, int]:
    """Two runs, 20 documents each, stopped cleanly: a checkpoint with vectors and a graph."""
    with Producer(broker) as p:
        for batch in range(2):
            last = produce_docs(p, topic, batch * 20, 20, vectors=True)
            server = FreshetServer(config, tmp_path)
            try:
                server.wait_ready()
                await wait_applied(server, topic, last)
            finally:
                assert server.stop() == 0
    return last


async def assert_rebuilt_from_topics(server: FreshetServer, topic: str, last: dict[int, int], says: str):
    server.wait_ready()
    await wait_applied(server, topic, last)
    log = server.log()
    assert says in log and "rebuilding this collection from its topics" in log, log
    assert "panicked" not in log
    samples = metrics(server)
    assert metric(samples, "freshet_records_total", topic=topic, outcome="applied") == 40, "a full replay"
    assert metric(samples, "freshet_documents", collection="docs") == 40
    st = await state(server, [f"doc-{i}" for i in range(40)])
    assert all(s == "found" for s, _, _ in st.values())
    assert (await vector_ids(server, 7))[0] == "doc-7"


async def test_damaged_checkpoint_rebuilds_from_the_topics(broker, tmp_path):
    topic = kafka_util.unique_topic("corrupt")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True)
    last = await two_runs(broker, tmp_path, topic, config)
    meta_path = tmp_path / "data" / "collections" / "docs" / "text" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert '"next_offset":20' in meta["payload"]
    meta["payload"] = meta["payload"].replace('"next_offset":20', '"next_offset":21', 1)
    meta_path.write_text(json.dumps(meta))

    server = FreshetServer(config, tmp_path)
    try:
        await assert_rebuilt_from_topics(server, topic, last, "damaged checkpoint: checksum mismatch")
    finally:
        assert server.stop() == 0


async def test_garbage_journal_record_with_valid_checksum_rebuilds(broker, tmp_path):
    """A vector journal record whose length and checksum are right but whose body is garbage
    (a point count of 2^62) is reported as damage: no abort, no panic, the collection is
    rebuilt from its topics."""
    topic = kafka_util.unique_topic("garbage")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True)
    last = await two_runs(broker, tmp_path, topic, config)
    [journal] = (tmp_path / "data" / "collections" / "docs" / "vectors").glob("journal-*.log")
    data = bytearray(journal.read_bytes())
    length = int.from_bytes(data[:4], "little")
    # The base record: variant 0, dimension 4, then a point count no memory could hold.
    body = (0).to_bytes(4, "little") + (4).to_bytes(8, "little") + (1 << 62).to_bytes(8, "little")
    body += b"\xab" * (length - len(body))
    data[4:8] = zlib.crc32(body).to_bytes(4, "little")
    data[8:8 + length] = body
    journal.write_bytes(bytes(data))

    server = FreshetServer(config, tmp_path)
    try:
        await assert_rebuilt_from_topics(server, topic, last, "cannot be decoded")
    finally:
        assert server.stop() == 0


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


async def test_full_disk_is_reported_once_and_loses_nothing(broker, tmp_path):
    """data_dir on a tiny file system: leftovers of an earlier crash are removed at start,
    failed checkpoints leave no temporary files, the failure shows in /readyz and the gauges
    and is logged once (not at every retry), serving goes on, and once there is space again
    the next checkpoint holds everything: a restart loses nothing."""
    data = tmp_path / "data"
    if not mount_tmpfs(data, "256k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        topic = kafka_util.unique_topic("diskfull")
        kafka_util.create_topic(broker, topic, partitions=1)
        config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True,
                             audit={"path": str(tmp_path / "audit.jsonl")})
        # What a crash in the middle of saving a graph leaves behind, taking space.
        vectors = data / "collections" / "docs" / "vectors"
        vectors.mkdir(parents=True)
        leftover = vectors / ".graph-0000000001-000000000100.meta.tmp"
        leftover.write_bytes(b"\0" * 64 * 1024)
        with Producer(broker) as p:
            # ~1 MB of text that does not compress: no checkpoint fits.
            p.send_many(topic, [(f"doc-{i}", {"id": f"doc-{i}", "title": "t",
                                              "body": f"word{i} " + " ".join(uuid.uuid4().hex for _ in range(300)),
                                              "vec": unit_vector(i)}) for i in range(100)], partition=0)
        server = FreshetServer(config, tmp_path)
        try:
            server.wait_ready()
            assert not leftover.exists(), "leftovers are removed at start"
            deadline = time.monotonic() + 30
            while "disk full" not in httpx2.get(f"{server.url}/readyz").text:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            ready = httpx2.get(f"{server.url}/readyz")
            assert ready.status_code == 200 and "checkpoints failing" in ready.text, ready.text
            samples = metrics(server)
            assert metric(samples, "freshet_checkpoint_disk_full") == 1
            assert metric(samples, "freshet_checkpoint_failing") == 1
            # More attempts, still one log line, and never a temporary file left behind.
            first_failures = metric(samples, "freshet_checkpoint_failures_total")
            with Producer(broker) as p:
                for i in range(100, 105):
                    p.send(topic, key=f"doc-{i}", value={"id": f"doc-{i}", "title": "t", "body": "more",
                                                         "vec": unit_vector(i)}, partition=0)
                    time.sleep(0.3)
                    assert list(data.rglob("*.tmp")) == []
            assert metric(metrics(server), "freshet_checkpoint_failures_total") > first_failures
            assert server.log().count("the disk is full") == 1, server.log()[-3000:]
            # Serving goes on from memory meanwhile.
            assert (await state(server, ["doc-0", "doc-104"])) == {"doc-0": ("found", 0, 0),
                                                                   "doc-104": ("found", 104, 0)}

            # Space again: the next checkpoint succeeds and the warning goes away.
            subprocess.run(["mount", "-o", "remount,size=32m", str(data)], check=True)
            with Producer(broker) as p:
                last = {0: p.send(topic, key="doc-105", value={"id": "doc-105", "title": "t", "body": "after",
                                                                "vec": unit_vector(105)}, partition=0).offset}
            deadline = time.monotonic() + 30
            while metric(metrics(server), "freshet_checkpoint_failing") != 0:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            assert httpx2.get(f"{server.url}/readyz").text == "ready\n"
            assert "checkpoints are written again" in server.log()
        finally:
            assert server.stop() == 0
        again = FreshetServer(config, tmp_path)
        try:
            again.wait_ready()
            await wait_applied(again, topic, last)
            assert "opened the persisted collection" in again.log()
            assert metric(metrics(again), "freshet_records_total", topic=topic, outcome="applied") is None
            st = await state(again, [f"doc-{i}" for i in range(106)])
            assert all(s == "found" for s, _, _ in st.values())
            async with http_client(again.mcp_url) as client:
                res = await call(client, "search", {"query": "word42", "collection": "docs", "mode": "bm25"})
            assert [h["id"] for h in res["results"]] == ["doc-42"]
            assert (await vector_ids(again, 42))[0] == "doc-42"
        finally:
            assert again.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


@pytest.mark.parametrize("storage", ["f32", "int8"])
async def test_kill_9_at_random_points_loses_nothing(broker, tmp_path, storage):
    """Stream upserts (with vectors) and deletes while the server is killed with SIGKILL
    several times; the final view and both indexes equal one clean replay of the topic
    (for int8 storage too: its scores are the exact ones, re-ranked from f32)."""
    topic = kafka_util.unique_topic("crash")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True, vector_storage=storage)
    ids = [f"k{i}" for i in range(60)]
    rng = random.Random(int.from_bytes(uuid.uuid4().bytes[:4], "little"))
    last: dict[int, int] = {}
    done = threading.Event()

    def stream():
        with Producer(broker) as p:
            for n in range(900):
                i = rng.randrange(len(ids))
                value = None if rng.random() < 0.2 else {"id": ids[i], "title": "t", "body": f"payload {n}", "v": n,
                                                         "vec": unit_vector(n)}
                last[i % 2] = p.send(topic, key=ids[i], value=value, partition=i % 2).offset
                time.sleep(0.003)
        done.set()

    producer = threading.Thread(target=stream)
    producer.start()
    kills = 0
    # The kills fall at random points; the test goes on until one of the servers started on
    # a checkpoint an earlier one wrote (a slow start can outlive every server's first
    # checkpoint interval), so the recovery path is always exercised.
    restarted = False
    try:
        while (not done.is_set() or kills < 3 or not restarted) and kills < 40:
            server = FreshetServer(config, tmp_path)
            time.sleep(rng.uniform(0.4, 1.5))
            server.process.kill()  # SIGKILL: no drain, no graph dump
            server.process.wait(10)
            server.stop()
            restarted |= "opened the persisted collection" in server.log()
            kills += 1
    finally:
        producer.join()

    final = FreshetServer(config, tmp_path)
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    clean = FreshetServer(config, replay_dir, env={"FRESHET_SNAPSHOT__INTERVAL_MS": "0"})
    try:
        final.wait_ready()
        clean.wait_ready()
        await wait_applied(final, topic, last)
        await wait_applied(clean, topic, last)
        assert "opened the persisted collection" in final.log(), "the crash test must exercise a restart"
        got, want = await state(final, ids), await state(clean, ids)
        assert got == want
        assert any(s == "not_found" for s, _, _ in want.values()) and any(s == "found" for s, _, _ in want.values())
        async with http_client(final.mcp_url) as a, http_client(clean.mcp_url) as b:
            args = {"query": "payload", "collection": "docs", "k": 100, "mode": "bm25"}
            ra, rb = await call(a, "search", args), await call(b, "search", args)
            assert sorted(h["id"] for h in ra["results"]) == sorted(h["id"] for h in rb["results"])
            for n in (3, 500, 899):
                args = {"query": "", "collection": "docs", "k": 100, "mode": "vector", "vector": unit_vector(n)}
                ra, rb = await call(a, "search", args), await call(b, "search", args)
                assert [(h["id"], round(h["score"], 4)) for h in ra["results"]] == \
                       [(h["id"], round(h["score"], 4)) for h in rb["results"]]
        found = sum(s == "found" for s, _, _ in want.values())
        for server in (final, clean):
            samples = metrics(server)
            # One live point per document: nothing duplicated, nothing resurrected.
            assert metric(samples, "freshet_vector_points", collection="docs", state="live") == found
            assert metric(samples, "freshet_documents", collection="docs") == found
    finally:
        final.stop()
        clean.stop()


async def test_kill_9_after_records_were_searchable_but_not_checkpointed(broker, tmp_path):
    """Records are searchable before their checkpoint (snapshot.checkpoint_interval_ms). A
    SIGKILL before it loses them from disk only: the restart opens the last checkpoint,
    replays exactly the records after it, and ends with the same documents in the view and
    both indexes: updates applied, deletes kept, nothing resurrected or duplicated."""
    topic = kafka_util.unique_topic("unchecked")
    kafka_util.create_topic(broker, topic, partitions=2)
    # Checkpoints only at shutdown: everything after the first run is never checkpointed.
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic, vectors=True,
                         snapshot={"interval_ms": 300, "checkpoint_interval_ms": 600_000})
    with Producer(broker) as p:
        last = produce_docs(p, topic, 0, 20, vectors=True)
        first = FreshetServer(config, tmp_path)
        try:
            first.wait_ready()
            await wait_applied(first, topic, last)
        finally:
            assert first.stop() == 0, "SIGTERM writes the last checkpoint"

        second = FreshetServer(config, tmp_path)
        try:
            second.wait_ready()
            assert "opened the persisted collection" in second.log()
            checkpoints = metric(metrics(second), "freshet_checkpoints_total")
            # An update, a delete and a new document, each with a word of its own.
            p.send(topic, key="doc-4", value={"id": "doc-4", "title": "t", "body": "rewritten zebra", "v": 4,
                                              "vec": unit_vector(104)}, partition=0)
            p.send(topic, key="doc-7", value=None, partition=1)
            p.send(topic, key="doc-20", value={"id": "doc-20", "title": "t", "body": "newcomer yak", "v": 20,
                                               "vec": unit_vector(120)}, partition=0)
            async with http_client(second.mcp_url) as client:
                async def bm25(word: str) -> list[str]:
                    res = await call(client, "search", {"query": word, "collection": "docs", "mode": "bm25",
                                                        "consistency": "head", "max_wait_ms": 10000})
                    return [h["id"] for h in res["results"]]
                assert await bm25("zebra") == ["doc-4"]
                assert await bm25("yak") == ["doc-20"]
                # The old version of doc-4 and the deleted doc-7 are hidden at once.
                assert await bm25("4") == []
                assert await bm25("7") == []
            assert (await vector_ids(second, 120))[0] == "doc-20"
            assert (await state(second, ["doc-7"]))["doc-7"][0] == "not_found"
            samples = metrics(second)
            assert metric(samples, "freshet_checkpoints_total") == checkpoints, "nothing checkpointed meanwhile"
            assert metric(samples, "freshet_documents", collection="docs") == 20
            second.process.kill()  # SIGKILL: no drain, no checkpoint
            second.process.wait(10)
        finally:
            second.stop()

    third = FreshetServer(config, tmp_path)
    try:
        third.wait_ready()
        log = third.log()
        assert "opened the persisted collection" in log
        for partition in (0, 1):
            assert re.search(rf'resuming at offset 10 collection="docs" topic="{topic}" partition={partition}', log), log
        async with http_client(third.mcp_url) as client:
            res = await call(client, "search", {"query": "zebra yak", "collection": "docs", "mode": "bm25",
                                                "consistency": "head", "max_wait_ms": 10000})
            assert sorted(h["id"] for h in res["results"]) == ["doc-20", "doc-4"]
            res = await call(client, "search", {"query": "payload", "collection": "docs", "mode": "bm25", "k": 100})
            ids = {h["id"] for h in res["results"]}
            assert "doc-7" not in ids and "doc-4" not in ids and len(ids) == 18, ids
        samples = metrics(third)
        assert metric(samples, "freshet_records_total", topic=topic, outcome="applied") == 3, \
            "exactly the records after the checkpoint are read again"
        assert metric(samples, "freshet_documents", collection="docs") == 20
        assert metric(samples, "freshet_vector_points", collection="docs", state="live") == 20
        assert (await vector_ids(third, 120))[0] == "doc-20"
        assert (await vector_ids(third, 104))[0] == "doc-4"
        assert (await state(third, ["doc-7"]))["doc-7"][0] == "not_found"
    finally:
        assert third.stop() == 0


async def test_readiness_flips_only_after_catch_up_and_lag_moves(broker, tmp_path):
    topic = kafka_util.unique_topic("ready")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    with Producer(broker) as p:
        last = produce_docs(p, topic, 0, 30000)
    server = FreshetServer(config, tmp_path)
    try:
        statuses, lags = [], []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status = httpx2.get(f"{server.url}/readyz", timeout=2).status_code
                samples = metrics(server)
            except httpx2.HTTPError:
                time.sleep(0.02)
                continue
            statuses.append(status)
            lag = [metric(samples, "freshet_partition_lag", topic=topic, partition=str(i)) for i in (0, 1)]
            lags.append(lag)
            if status == 200:
                break
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
        async with http_client(server.mcp_url) as client:
            listing = (await call(client, "list_collections", {}))["collections"][0]
        # Ready means caught up with what was there at start.
        assert listing["documents"] == 30000
        applied = {p["partition"]: p["applied_offset"] for p in listing["partitions"]}
        assert applied == last
        assert any(l[0] and l[0] > 0 for l in lags), f"lag was never seen above 0: {lags[:5]}"
        final = metrics(server)
        assert metric(final, "freshet_partition_lag", topic=topic, partition="0") == 0
        assert metric(final, "freshet_ready") == 1
        assert metric(final, "freshet_index_delay_seconds_count", collection="docs") == 30000
    finally:
        server.stop()


async def test_broker_down_at_start_then_up(tmp_path):
    port = free_port(4)
    topic = "late"
    config = docs_config(tmp_path / "freshet.toml", f"127.0.0.1:{port}", topic)
    server = FreshetServer(config, tmp_path)
    kafka = None
    try:
        time.sleep(2)
        assert server.process.poll() is None, server.log()
        assert httpx2.get(f"{server.url}/healthz").status_code == 200
        assert httpx2.get(f"{server.url}/readyz").status_code == 503
        async with http_client(server.mcp_url) as client:
            res = await call(client, "search", {"query": "x", "collection": "docs", "mode": "bm25"})
            assert res["freshness"]["caught_up"] is False
        kafka = kafka_util.start_kafka(tmp_path / "kafka", port=port)
        kafka_util.create_topic(kafka, topic, partitions=1)
        with Producer(kafka) as p:
            p.send(topic, key="late-1", value={"id": "late-1", "title": "t", "body": "arrived after the broker"})
        server.wait_ready(timeout=60)
        async with http_client(server.mcp_url) as client:
            res = await call(client, "search", {"query": "arrived", "collection": "docs", "consistency": "head",
                                                "max_wait_ms": 10000})
            assert [h["id"] for h in res["results"]] == ["late-1"]
    finally:
        server.stop()
        if kafka:
            kafka.stop()


async def test_broker_lost_mid_stream_then_back(tmp_path):
    """A network partition between freshet and its broker: the server keeps answering from its
    view, the watermark keeps the last known state while staleness grows, and consuming
    resumes without a restart when the broker is reachable again."""
    proxy_port, broker_port = free_port(), free_port(4)
    proxy = Proxy(proxy_port, broker_port)
    kafka = kafka_util.start_kafka(tmp_path / "kafka", port=broker_port, advertised_port=proxy_port)
    topic = "flaky"
    try:
        kafka_util.create_topic(kafka, topic, partitions=1)
        config = docs_config(tmp_path / "freshet.toml", kafka.bootstrap, topic)
        server = FreshetServer(config, tmp_path)
        with Producer(kafka) as p:
            last = produce_docs(p, topic, 0, 20, partitions=1)
        server.wait_ready()
        await wait_applied(server, topic, last)

        proxy.cut()
        time.sleep(2)
        async with http_client(server.mcp_url) as client:
            res = await call(client, "search", {"query": "payload", "collection": "docs", "mode": "bm25", "k": 50})
            assert len(res["results"]) == 20, "the view still answers without a broker"
            assert res["freshness"]["partitions"][0]["applied_offset"] == 19
            age_before = res["results"][0]["freshness"]["age_ms"]
            time.sleep(0.5)
            res = await call(client, "search", {"query": "payload", "collection": "docs", "mode": "bm25", "k": 1})
            assert res["results"][0]["freshness"]["age_ms"] > age_before, "staleness grows"
            head = await call(client, "search", {"query": "payload", "collection": "docs", "mode": "bm25",
                                                 "consistency": "head", "max_wait_ms": 1500})
            assert head["freshness"]["caught_up"] is False
            assert "could not read the end of 1 partition(s) from the broker" in head["notes"][0], head["notes"]

        # Written while freshet cannot see the broker.
        direct = f"127.0.0.1:{broker_port}"
        proxy.restore()
        with Producer(kafka) as p:
            p.send(topic, key="fresh-1", value={"id": "fresh-1", "title": "t", "body": "after the outage"})
        deadline = time.monotonic() + 60
        while (await state(server, ["fresh-1"]))["fresh-1"][0] != "found":
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
        st = await state(server, ["doc-0", "doc-19", "fresh-1"])
        assert all(s == "found" for s, _, _ in st.values()) and st["fresh-1"][1] == 20
        assert server.process.poll() is None and direct
    finally:
        server.stop()
        proxy.close()
        kafka.stop()


async def test_topic_deleted_and_recreated_under_a_running_server(broker, tmp_path):
    topic = kafka_util.unique_topic("recreate")
    kafka_util.create_topic(broker, topic, partitions=1)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    server = FreshetServer(config, tmp_path)
    try:
        with Producer(broker) as p:
            last = produce_docs(p, topic, 0, 10, partitions=1)
        server.wait_ready()
        await wait_applied(server, topic, last)
        kafka_util.delete_topic(broker, topic)
        time.sleep(1)
        kafka_util.create_topic(broker, topic, partitions=1)
        with Producer(broker) as p:
            p.send(topic, key="new-1", value={"id": "new-1", "title": "t", "body": "second life"})
        deadline = time.monotonic() + 60
        while (await state(server, ["new-1"]))["new-1"][0] != "found":
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.2)
        st = await state(server, [f"doc-{i}" for i in range(10)])
        assert all(s == "not_found" for s, _, _ in st.values())
    finally:
        server.stop()

"""Durability and operations with the real binary, a real broker and real signals:
snapshots and restarts, crashes, readiness, metrics, and broker faults."""

from __future__ import annotations

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


def docs_config(path: Path, brokers: str, topic: str) -> Path:
    return write_config(path, {"kafka": {"brokers": brokers, "watermark_interval_ms": 100},
                               "snapshot": {"interval_ms": 300}},
                        [{"name": "docs", "topics": [topic], "id_field": "id", "title_field": "title",
                          "metadata_fields": ["v"]}])


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


def produce_docs(producer: Producer, topic: str, start: int, count: int, partitions: int = 2) -> dict[int, int]:
    """Upserts doc-<i> into partition i % partitions, batched the way an ordinary producer
    batches (linger, compression); returns the last offset per partition."""
    last = {}
    by_part: dict[int, list] = {}
    for i in range(start, start + count):
        by_part.setdefault(i % partitions, []).append(
            (f"doc-{i}", {"id": f"doc-{i}", "title": f"title {i}", "body": f"payload number {i}", "v": i}))
    for part, records in by_part.items():
        last[part] = producer.send_many(topic, records, partition=part)[-1].offset
    return last


async def test_graceful_restart_resumes_from_the_snapshot(broker, tmp_path):
    topic = kafka_util.unique_topic("resume")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    with Producer(broker) as p:
        last = produce_docs(p, topic, 0, 100)
        first = FreshetServer(config, tmp_path)
        try:
            first.wait_ready()
            await wait_applied(first, topic, last)
        finally:
            assert first.stop() == 0, "SIGTERM drains and exits cleanly"
        assert "wrote snapshot" in first.log()
        last = produce_docs(p, topic, 100, 10)

    second = FreshetServer(config, tmp_path)
    try:
        second.wait_ready()
        await wait_applied(second, topic, last)
        log = second.log()
        for partition in (0, 1):
            assert re.search(rf'resuming at offset 50 collection="docs" topic="{topic}" partition={partition}', log), log
        samples = metrics(second)
        assert metric(samples, "freshet_records_total", topic=topic, outcome="applied") == 10, \
            "only the records written after the snapshot are read again"
        assert metric(samples, "freshet_documents", collection="docs") == 110
        st = await state(second, [f"doc-{i}" for i in (0, 99, 100, 109)])
        assert all(s == "found" for s, _, _ in st.values())
    finally:
        second.stop()


async def test_corrupt_snapshot_is_skipped_for_the_previous_one(broker, tmp_path):
    topic = kafka_util.unique_topic("corrupt")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    with Producer(broker) as p:
        for batch in range(2):
            last = produce_docs(p, topic, batch * 20, 20)
            server = FreshetServer(config, tmp_path)
            try:
                server.wait_ready()
                await wait_applied(server, topic, last)
            finally:
                server.stop()
    snapshots = sorted((tmp_path / "data" / "snapshots").glob("snapshot-*.bin"))
    assert len(snapshots) >= 2
    newest = snapshots[-1]
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))

    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready()
        await wait_applied(server, topic, last)
        log = server.log()
        assert "skipping snapshot" in log and "checksum mismatch" in log, log
        assert "restored snapshot" in log
        st = await state(server, [f"doc-{i}" for i in range(40)])
        assert all(s == "found" for s, _, _ in st.values())
    finally:
        server.stop()


async def test_garbage_snapshot_with_valid_checksum_falls_back(broker, tmp_path):
    """A snapshot whose header, length and checksum are right but whose body is garbage (a
    length field of ~6.8e18) is skipped like any corrupt one: no abort, no panic, the previous
    snapshot is restored and the rest replayed."""
    topic = kafka_util.unique_topic("garbage")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    with Producer(broker) as p:
        for batch in range(2):
            last = produce_docs(p, topic, batch * 20, 20)
            server = FreshetServer(config, tmp_path)
            try:
                server.wait_ready()
                await wait_applied(server, topic, last)
            finally:
                assert server.stop() == 0
    snapshots = sorted((tmp_path / "data" / "snapshots").glob("snapshot-*.bin"))
    assert len(snapshots) >= 2
    newest = snapshots[-1]
    header = newest.read_bytes()[:12]  # magic and format version
    body = (12345).to_bytes(8, "little") + (0x5F00_0000_0000_0000).to_bytes(8, "little") + b"\xab" * 4096
    newest.write_bytes(header + len(body).to_bytes(8, "little") + zlib.crc32(body).to_bytes(4, "little") + body)

    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready()
        await wait_applied(server, topic, last)
        log = server.log()
        assert "skipping snapshot" in log and "cannot decode" in log, log
        assert "restored snapshot" in log and "panicked" not in log
        assert metric(metrics(server), "freshet_documents", collection="docs") == 40
        st = await state(server, [f"doc-{i}" for i in range(40)])
        assert all(s == "found" for s, _, _ in st.values())
    finally:
        assert server.stop() == 0


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


async def test_full_disk_is_reported_once_and_leaves_no_temporary_files(broker, tmp_path):
    """data_dir on a tiny file system: leftovers of an earlier crash are removed at start, each
    failed snapshot removes its temporary file, the failure shows in /readyz and the gauges and
    is logged once (not at every retry), and snapshots resume once there is space."""
    data = tmp_path / "data"
    if not mount_tmpfs(data, "192k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        topic = kafka_util.unique_topic("diskfull")
        kafka_util.create_topic(broker, topic, partitions=1)
        config = write_config(tmp_path / "freshet.toml",
                              {"kafka": {"brokers": broker.bootstrap, "watermark_interval_ms": 100},
                               "snapshot": {"interval_ms": 200},
                               "audit": {"path": str(tmp_path / "audit.jsonl")}},
                              [{"name": "docs", "topics": [topic], "id_field": "id"}])
        # What a crash in the middle of a write leaves behind, taking space.
        (data / "snapshots").mkdir()
        leftover = data / "snapshots" / ".snapshot-000000000000001.bin.tmp"
        leftover.write_bytes(b"\0" * 64 * 1024)
        with Producer(broker) as p:
            # ~400 kB of text: no snapshot fits in 192 kB.
            p.send_many(topic, [(f"d{i}", {"id": f"d{i}", "body": f"word{i} " * 500}) for i in range(100)],
                        partition=0)
        server = FreshetServer(config, tmp_path)
        try:
            server.wait_ready()
            assert not leftover.exists(), "leftovers are removed at start"
            deadline = time.monotonic() + 30
            while "disk full" not in httpx2.get(f"{server.url}/readyz").text:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            ready = httpx2.get(f"{server.url}/readyz")
            assert ready.status_code == 200 and "snapshots failing" in ready.text, ready.text
            samples = metrics(server)
            assert metric(samples, "freshet_snapshot_disk_full") == 1
            assert metric(samples, "freshet_snapshot_failing") == 1
            # More attempts, still one log line, and never a temporary file left behind.
            first_failures = metric(samples, "freshet_snapshot_failures_total")
            with Producer(broker) as p:
                for i in range(5):
                    p.send(topic, key=f"e{i}", value={"id": f"e{i}", "body": "more"}, partition=0)
                    time.sleep(0.3)
                    assert list((data / "snapshots").glob("*.tmp")) == []
            assert metric(metrics(server), "freshet_snapshot_failures_total") > first_failures
            assert server.log().count("the disk is full") == 1, server.log()[-3000:]

            # Space again: the next snapshot succeeds and the warning goes away.
            subprocess.run(["mount", "-o", "remount,size=16m", str(data)], check=True)
            with Producer(broker) as p:
                p.send(topic, key="f", value={"id": "f", "body": "after"}, partition=0)
            deadline = time.monotonic() + 30
            while metric(metrics(server), "freshet_snapshot_failing") != 0:
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)
            assert httpx2.get(f"{server.url}/readyz").text == "ready\n"
            assert "snapshots are written again" in server.log()
            assert list((data / "snapshots").glob("snapshot-*.bin"))
        finally:
            assert server.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


async def test_kill_9_at_random_points_loses_nothing(broker, tmp_path):
    """Stream upserts and deletes while the server is killed with SIGKILL several times; the
    final view equals one clean replay of the topic."""
    topic = kafka_util.unique_topic("crash")
    kafka_util.create_topic(broker, topic, partitions=2)
    config = docs_config(tmp_path / "freshet.toml", broker.bootstrap, topic)
    ids = [f"k{i}" for i in range(60)]
    rng = random.Random(int.from_bytes(uuid.uuid4().bytes[:4], "little"))
    last: dict[int, int] = {}
    done = threading.Event()

    def stream():
        with Producer(broker) as p:
            for n in range(900):
                i = rng.randrange(len(ids))
                value = None if rng.random() < 0.2 else {"id": ids[i], "title": "t", "body": f"payload {n}", "v": n}
                last[i % 2] = p.send(topic, key=ids[i], value=value, partition=i % 2).offset
                time.sleep(0.003)
        done.set()

    producer = threading.Thread(target=stream)
    producer.start()
    kills = 0
    try:
        while not done.is_set() or kills < 3:
            server = FreshetServer(config, tmp_path)
            time.sleep(rng.uniform(0.4, 1.5))
            server.process.kill()  # SIGKILL: no drain, no final snapshot
            server.process.wait(10)
            server.stop()
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
        assert "restored snapshot" in final.log(), "the crash test must exercise snapshot restore"
        got, want = await state(final, ids), await state(clean, ids)
        assert got == want
        assert any(s == "not_found" for s, _, _ in want.values()) and any(s == "found" for s, _, _ in want.values())
        async with http_client(final.mcp_url) as a, http_client(clean.mcp_url) as b:
            args = {"query": "payload", "collection": "docs", "k": 100, "mode": "bm25"}
            ra, rb = await call(a, "search", args), await call(b, "search", args)
        assert sorted(h["id"] for h in ra["results"]) == sorted(h["id"] for h in rb["results"])
    finally:
        final.stop()
        clean.stop()


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

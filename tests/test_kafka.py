"""freshet on Apache Kafka as users run it: batching, compressing, idempotent and
transactional producers, compacted topics, topics recreated (while running and while down),
partitions added, retention passing unapplied records, broker restarts, secure listeners."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx2
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

import kafka_util
from freshet_util import FreshetServer, call, http_client, write_config
from kafka_util import Producer, free_port
from test_durability import metric, metrics

pytestmark = pytest.mark.anyio


def kb_config(path: Path, brokers: str, topics: list[str], properties: dict | None = None,
              snapshot_ms: int = 300, watermark_interval_ms: int = 100) -> Path:
    kafka = {"brokers": brokers, "watermark_interval_ms": watermark_interval_ms}
    if properties:
        kafka["properties"] = properties
    sections = {"kafka": kafka, "snapshot": {"interval_ms": snapshot_ms}}
    return write_config(path, sections,
                        [{"name": "kb", "topics": topics, "id_field": "id", "title_field": "title",
                          "text_fields": ["title", "body"], "metadata_fields": ["gen"]}])


def doc(i: int | str, gen: str = "a", body: str = "") -> tuple[str, dict]:
    return (f"d-{i}", {"id": f"d-{i}", "title": f"doc {i}", "body": body or f"generation {gen} text {i}",
                       "gen": gen})


async def found(server: FreshetServer, ids: list[str]) -> dict[str, str]:
    async with http_client(server.mcp_url) as client:
        fresh = await call(client, "document_freshness", {"collection": "kb", "ids": ids})
    return {d["id"]: d["status"] for d in fresh["documents"]}


async def collection(server: FreshetServer) -> dict:
    async with http_client(server.mcp_url) as client:
        return (await call(client, "list_collections", {}))["collections"][0]


async def head_search(server: FreshetServer, query: str, k: int = 100, max_wait_ms: int = 10000) -> dict:
    async with http_client(server.mcp_url) as client:
        return await call(client, "search", {"query": query, "collection": "kb", "mode": "bm25", "k": k,
                                             "consistency": "head", "max_wait_ms": max_wait_ms})


async def wait_for(predicate, timeout: float, what: str, server: FreshetServer):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout}s\n{server.log()[-4000:]}")
        time.sleep(0.1)


async def wait_caught_up(server: FreshetServer, timeout: float = 30) -> dict:
    async def check():
        c = await collection(server)
        parts = c["partitions"]
        return c if parts and all(p["lag"] == 0 for p in parts) else None
    return await wait_for(check, timeout, "lag 0 on every partition", server)


async def index_then_stop(config: Path, workdir: Path) -> dict:
    """Starts freshet, lets it catch up, stops it gracefully; returns the collection as it was."""
    server = FreshetServer(config, workdir)
    server.wait_ready()
    caught_up = await wait_caught_up(server)
    assert server.stop() == 0, server.log()[-3000:]
    return caught_up


def no_errors_logged(server: FreshetServer) -> None:
    bad = [line for line in server.log().splitlines() if " ERROR " in line or "panicked" in line]
    assert not bad, "\n".join(bad[:20])


# --------------------------------------------------------------------------- producers


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_from_an_idempotent_producer(broker, topic, tmp_path, codec):
    kafka_util.create_topic(broker, topic, partitions=2)
    server = FreshetServer(kb_config(tmp_path / "f.toml", broker.bootstrap, [topic]), tmp_path)
    try:
        with Producer(broker, **{"compression.type": codec, "enable.idempotence": True,
                                 "linger.ms": 20}) as p:
            for part in (0, 1):
                p.send_many(topic, [doc(i, codec) for i in range(part, 400, 2)], partition=part)
        server.wait_ready()
        res = await head_search(server, codec, k=100)
        assert res["freshness"]["caught_up"] is True, res
        status = await found(server, [f"d-{i}" for i in range(400)])
        assert set(status.values()) == {"found"}
        no_errors_logged(server)
    finally:
        server.stop()


async def test_transactions_aborted_records_never_applied_and_markers_do_not_block_readiness(
        broker, topic, tmp_path):
    kafka_util.create_topic(broker, topic, partitions=1)
    txp = KafkaProducer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"tx-{topic}",
                         "linger.ms": 5})
    txp.init_transactions(15)

    def transaction(ids: range, gen: str, commit: bool) -> None:
        txp.begin_transaction()
        for i in ids:
            key, value = doc(i, gen)
            txp.produce(topic, key=key.encode(), value=kafka_util.encode(value), partition=0)
        # Sent before the decision, so the aborted records really are in the log.
        txp.flush(15)
        (txp.commit_transaction if commit else txp.abort_transaction)(15)

    transaction(range(0, 50), "committed", commit=True)
    transaction(range(50, 80), "aborted", commit=False)
    transaction(range(80, 100), "committed", commit=True)
    # The log now ends with a commit marker: an offset no record is delivered for.
    server = FreshetServer(kb_config(tmp_path / "f.toml", broker.bootstrap, [topic]), tmp_path)
    try:
        server.wait_ready(timeout=60)
        status = await found(server, [f"d-{i}" for i in range(100)])
        assert [i for i in range(100) if status[f"d-{i}"] == "found"] == list(range(50)) + list(range(80, 100))
        c = await wait_caught_up(server)
        part = c["partitions"][0]
        assert part["high_watermark"] == 103, "100 records + 3 transaction markers"
        assert part["lag"] == 0
        res = await head_search(server, "committed")
        assert res["freshness"]["caught_up"] is True and not res.get("notes"), res
        assert {h["metadata"]["gen"] for h in res["results"]} == {"committed"}

        # An open transaction: its records are not readable yet, and freshet is still caught
        # up with what is committed.
        txp.begin_transaction()
        key, value = doc("open", "pending")
        txp.produce(topic, key=key.encode(), value=kafka_util.encode(value), partition=0)
        txp.flush(10)
        res = await head_search(server, "pending", max_wait_ms=3000)
        assert res["results"] == [] and res["freshness"]["caught_up"] is True, res
        txp.commit_transaction(15)
        res = await head_search(server, "pending")
        assert [h["id"] for h in res["results"]] == ["d-open"] and res["freshness"]["caught_up"] is True
        assert httpx2.get(f"{server.url}/readyz").status_code == 200
        no_errors_logged(server)
    finally:
        server.stop()


# --------------------------------------------------------------------------- restarts


async def test_restart_after_a_batched_produce_purges_nothing(broker, topic, tmp_path):
    kafka_util.create_topic(broker, topic, partitions=2)
    config = kb_config(tmp_path / "f.toml", broker.bootstrap, [topic])
    with Producer(broker) as p:
        for part in (0, 1):
            p.send_many(topic, [doc(i) for i in range(part, 3000, 2)], partition=part)
    before = await index_then_stop(config, tmp_path)
    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready()
        after = await wait_caught_up(server)
        assert after["documents"] == before["documents"] == 3000
        assert [p["applied_offset"] for p in after["partitions"]] == [1499, 1499]
        m = metrics(server)
        assert metric(m, "freshet_partition_resets_total") == 0
        log = server.log()
        assert "resuming at offset 1500" in log
        assert "recreated" not in log
        no_errors_logged(server)
    finally:
        server.stop()


async def test_topic_recreated_while_down_is_detected_by_its_id(broker, topic, tmp_path):
    kafka_util.create_topic(broker, topic, partitions=1)
    config = kb_config(tmp_path / "f.toml", broker.bootstrap, [topic])
    with Producer(broker) as p:
        p.send_many(topic, [doc(i, "old") for i in range(20)])
    await index_then_stop(config, tmp_path)

    kafka_util.delete_topic(broker, topic)
    kafka_util.wait_topic_gone(broker, topic)
    kafka_util.create_topic(broker, topic, partitions=1)
    # More records than before: a watermark comparison could not tell the new log apart.
    with Producer(broker) as p:
        p.send_many(topic, [doc(i, "new") for i in range(100, 130)])

    for attempt in range(2):  # and once more: the purge happens exactly once
        server = FreshetServer(config, tmp_path)
        try:
            server.wait_ready(timeout=60)
            status = await found(server, [f"d-{i}" for i in list(range(20)) + list(range(100, 130))])
            assert all(status[f"d-{i}"] == "not_found" for i in range(20)), status
            assert all(status[f"d-{i}"] == "found" for i in range(100, 130)), status
            c = await wait_caught_up(server)
            assert c["documents"] == 30 and c["partitions"][0]["applied_offset"] == 29
            resets = metric(metrics(server), "freshet_partition_resets_total")
            assert resets == (1 if attempt == 0 else 0), server.log()[-3000:]
            no_errors_logged(server)
        finally:
            assert server.stop() == 0, server.log()[-3000:]


async def test_topic_recreated_while_running_is_detected_every_time(broker, topic, tmp_path):
    """New logs shorter than, as long as, and longer than the old one."""
    kafka_util.create_topic(broker, topic, partitions=2)
    config = kb_config(tmp_path / "f.toml", broker.bootstrap, [topic])
    with Producer(broker) as p:
        p.send_many(topic, [doc(i, "g0") for i in range(40)], partition=None)
    server = FreshetServer(config, tmp_path)
    try:
        server.wait_ready()
        await wait_caught_up(server)
        for cycle, count in enumerate([10, 40, 90], start=1):
            gen = f"g{cycle}"
            kafka_util.delete_topic(broker, topic)
            kafka_util.wait_topic_gone(broker, topic)
            kafka_util.create_topic(broker, topic, partitions=2)
            with Producer(broker) as p:
                p.send_many(topic, [doc(1000 * cycle + i, gen) for i in range(count)], partition=None)

            async def only_new_generation():
                c = await collection(server)
                if c["documents"] != count or any(p["lag"] != 0 for p in c["partitions"]):
                    return None
                res = await head_search(server, "generation", k=100)
                gens = {h["metadata"]["gen"] for h in res["results"]}
                return res if gens == {gen} and res["freshness"]["caught_up"] else None

            await wait_for(only_new_generation, 60, f"cycle {cycle}: only {gen} documents", server)
            assert metric(metrics(server), "freshet_partition_resets_total") == 2 * cycle
        assert server.process.poll() is None
        no_errors_logged(server)
    finally:
        server.stop()


async def test_partitions_added_while_running_get_watermarks(broker, topic, tmp_path):
    kafka_util.create_topic(broker, topic, partitions=1)
    server = FreshetServer(kb_config(tmp_path / "f.toml", broker.bootstrap, [topic]), tmp_path)
    try:
        with Producer(broker) as p:
            p.send_many(topic, [doc(i) for i in range(10)])
        server.wait_ready()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(15)
        with Producer(broker) as p:
            p.send_many(topic, [doc(i) for i in range(10, 20)], partition=1)
            p.send_many(topic, [doc(i) for i in range(20, 25)], partition=2)

        async def all_three():
            c = await collection(server)
            parts = {p["partition"]: p for p in c["partitions"]}
            ok = (len(parts) == 3 and all(p["high_watermark"] is not None and p["lag"] == 0 for p in parts.values()))
            return c if ok else None

        c = await wait_for(all_three, 30, "three partitions with watermarks", server)
        assert c["documents"] == 25
        res = await head_search(server, "generation")
        assert res["freshness"]["caught_up"] is True and len(res["results"]) == 25
        no_errors_logged(server)
    finally:
        server.stop()


@pytest.mark.parametrize("when", ["while_stopped", "while_paused"])
async def test_retention_passing_unapplied_records_reads_on_without_purging(broker, topic, tmp_path, when):
    """Records removed by retention before freshet read them: noticed exactly once, whether
    freshet was stopped (restart at a position the log no longer has) or running but stalled
    (SIGSTOP, the way a long GC pause or a throttled container stalls a consumer)."""
    kafka_util.create_topic(broker, topic, partitions=1)
    # Watermarks read rarely: noticing the loss must not depend on reading them in time.
    config = kb_config(tmp_path / "f.toml", broker.bootstrap, [topic], watermark_interval_ms=5_000)
    with Producer(broker) as p:
        p.send_many(topic, [doc(i) for i in range(10)])
    server = None
    if when == "while_stopped":
        await index_then_stop(config, tmp_path)
    else:
        server = FreshetServer(config, tmp_path)
        server.wait_ready()
        assert len((await head_search(server, "generation"))["results"]) == 10
        server.process.send_signal(signal.SIGSTOP)
        # A fetch sent just before the stop may still be waiting at the broker
        # (fetch.wait.max.ms) and would carry the next records into the socket: let it be
        # answered empty first, so the records below are really unread while stopped.
        time.sleep(1)
    try:
        with Producer(broker) as p:
            p.send_many(topic, [doc(i) for i in range(10, 40)])
        # What retention does to old segments, for offsets 0..29.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.delete_records([TopicPartition(topic, 0, 30)]).values():
            future.result(15)
        assert kafka_util.low_watermarks(broker, topic) == {0: 30}
        if server is None:
            server = FreshetServer(config, tmp_path)
        else:
            server.process.send_signal(signal.SIGCONT)
        server.wait_ready(timeout=60)
        # Answered once everything the broker holds now is applied.
        assert (await head_search(server, "generation"))["freshness"]["caught_up"] is True
        status = await found(server, [f"d-{i}" for i in range(40)])
        assert all(status[f"d-{i}"] == "found" for i in range(10)), "applied documents stay"
        assert all(status[f"d-{i}"] == "not_found" for i in range(10, 30)), "removed before applied"
        assert all(status[f"d-{i}"] == "found" for i in range(30, 40))
        m = metrics(server)
        assert metric(m, "freshet_partition_truncations_total") == 1
        assert metric(m, "freshet_partition_resets_total") == 0
        assert re.search(r"retention removed offsets 10\.\.29 before they were applied", server.log())
        no_errors_logged(server)
    finally:
        if server is not None:
            server.process.send_signal(signal.SIGCONT)
            server.stop()


async def test_compacted_topic_after_compaction(broker, topic, tmp_path):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "100", "min.compaction.lag.ms": "0"})])[topic].result(15)
    with Producer(broker) as p:
        for version in range(3):
            p.send_many(topic, [doc(i, f"v{version}") for i in range(20)])
        p.send_many(topic, [(f"d-{i}", None) for i in range(10)])  # tombstones
    # Roll the segment and let the cleaner run until the log has shrunk.
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        with Producer(broker) as p:
            p.send(topic, key="roll", value={"id": "roll", "title": "roll", "body": "segment roll", "gen": "x"})
        left = kafka_util.count_records(broker, topic)
        if left < 40:
            break
        assert time.monotonic() < deadline, f"no compaction within 60 s ({left} records left)"
    server = FreshetServer(kb_config(tmp_path / "f.toml", broker.bootstrap, [topic]), tmp_path)
    try:
        server.wait_ready(timeout=60)
        status = await found(server, [f"d-{i}" for i in range(20)])
        assert [i for i in range(20) if status[f"d-{i}"] == "found"] == list(range(10, 20))
        res = await head_search(server, "generation")
        assert {h["metadata"]["gen"] for h in res["results"]} == {"v2"}
        assert res["freshness"]["caught_up"] is True
    finally:
        server.stop()


async def test_broker_restart_while_running(tmp_path):
    port = free_port(4)
    kafka = kafka_util.start_kafka(tmp_path / "kafka", port=port)
    topic = "restarted"
    server = None
    try:
        kafka_util.create_topic(kafka, topic, partitions=1)
        with Producer(kafka) as p:
            p.send_many(topic, [doc(i) for i in range(10)])
        server = FreshetServer(kb_config(tmp_path / "f.toml", kafka.bootstrap, [topic]), tmp_path)
        server.wait_ready()
        kafka.stop()

        async def stale():
            res = await call_search(server)
            return res if res["freshness"]["caught_up"] is False else None
        res = await wait_for(stale, 30, "caught_up false while the broker is down", server)
        assert len(res["results"]) == 10, "serves what it has"

        kafka = kafka_util.start_kafka(tmp_path / "kafka", port=port)
        with Producer(kafka) as p:
            p.send_many(topic, [doc(i) for i in range(10, 15)])
        res = await head_search(server, "generation", max_wait_ms=30000)
        assert len(res["results"]) == 15 and res["freshness"]["caught_up"] is True, res
        assert server.process.poll() is None
        # Broker outages are warnings, said once, not a stream of errors.
        no_errors_logged(server)
    finally:
        if server:
            server.stop()
        kafka.stop()


async def call_search(server: FreshetServer) -> dict:
    async with http_client(server.mcp_url) as client:
        return await call(client, "search", {"query": "generation", "collection": "kb", "mode": "bm25", "k": 50})


# --------------------------------------------------------------------------- secure listeners


def secure_or_skip(broker):
    if getattr(broker, "secure", None) is None:
        pytest.skip("the broker was not started with SCRAM and TLS listeners (external broker)")
    return broker.secure


SCRAM = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
         "sasl.username": kafka_util.SCRAM_USER}


@pytest.mark.parametrize("listener", ["scram", "tls"])
async def test_secure_listener(broker, topic, tmp_path, listener):
    secure = secure_or_skip(broker)
    kafka_util.create_topic(broker, topic, partitions=1)
    with Producer(broker) as p:
        p.send_many(topic, [doc(i, listener) for i in range(5)])
    if listener == "scram":
        bootstrap, props = secure.sasl_bootstrap, {**SCRAM, "sasl.password": kafka_util.SCRAM_PASSWORD}
    else:
        bootstrap, props = secure.ssl_bootstrap, {"security.protocol": "SSL",
                                                  "ssl.ca.location": str(secure.ca_pem)}
    server = FreshetServer(kb_config(tmp_path / "f.toml", bootstrap, [topic], props), tmp_path)
    try:
        server.wait_ready()
        res = await head_search(server, listener)
        assert len(res["results"]) == 5 and res["freshness"]["caught_up"] is True
        no_errors_logged(server)
    finally:
        server.stop()


@pytest.mark.parametrize("mistake", ["wrong password", "untrusted certificate"])
async def test_secure_listener_misconfigured_gives_one_clear_error(broker, topic, tmp_path, mistake):
    secure = secure_or_skip(broker)
    kafka_util.create_topic(broker, topic, partitions=1)
    if mistake == "wrong password":
        bootstrap, props = secure.sasl_bootstrap, {**SCRAM, "sasl.password": "not-the-password"}
        cause = re.compile(r"[Aa]uthentication")
    else:
        # No CA configured: the system store does not trust the test CA.
        bootstrap, props = secure.ssl_bootstrap, {"security.protocol": "SSL"}
        cause = re.compile(r"SSL handshake failed|certificate verify failed")
    server = FreshetServer(kb_config(tmp_path / "f.toml", bootstrap, [topic], props), tmp_path)
    try:
        time.sleep(8)
        assert server.process.poll() is None, server.log()
        assert httpx2.get(f"{server.url}/readyz").status_code == 503
        errors = [line for line in server.log().splitlines() if " ERROR " in line]
        clear = [line for line in errors if cause.search(line) and bootstrap.split(":")[1] in line]
        assert clear, server.log()[-3000:]
        # Once per client and cause, not a stream (three clients: consumer, meta, dead letters).
        assert len(errors) <= 3, "\n".join(errors)
        assert "%3|" not in server.log() and "%4|" not in server.log(), "raw librdkafka lines"
    finally:
        server.stop()

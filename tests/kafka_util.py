"""Kafka helpers for freshet's Python tests: a throwaway Apache Kafka broker, topics,
a producer that returns record coordinates, and watermark/consume helpers.

Everything takes a `broker` that is either a `Broker` or a bootstrap string
("host:port[,host:port]"), so the helpers also work against an external Kafka.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as _KafkaProducer
from confluent_kafka.admin import AdminClient, NewTopic

REPO_ROOT = Path(__file__).resolve().parent.parent

# What an ordinary producer of a live stream runs with: librdkafka's default linger (5 ms),
# so records written close together share a batch, compressed.
PRODUCER_DEFAULTS = {"linger.ms": 5, "compression.type": "lz4"}


# --------------------------------------------------------------------------- broker


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen | None = None  # None for an external broker
    log_path: Path | None = None
    _log_file: Any = field(default=None, repr=False)
    # Set by start_kafka(secure=True).
    secure: "SecureListeners | None" = None

    @property
    def external(self) -> bool:
        return self.process is None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            # A controlled shutdown; the data directory is thrown away or reused as it is.
            stop_process(self.process, 20)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __str__(self) -> str:
        return self.bootstrap


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after `grace` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def bootstrap_of(broker: Broker | str) -> str:
    return broker.bootstrap if isinstance(broker, Broker) else broker


def free_port(span: int = 1) -> int:
    """A free loopback port; with `span` > 1, the first of `span` consecutive free ports."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + span > 65535:
            continue
        if all(_port_free(first + i) for i in range(1, span)):
            return first
    raise RuntimeError(f"no {span} consecutive free ports found")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _die_with_parent() -> None:
    # If pytest is killed outright, the kernel kills the broker too (no orphans in CI).
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


# Credentials of the SCRAM-SHA-512 listener `scripts/kafka.sh run --secure` opens.
SCRAM_USER = "freshet"
SCRAM_PASSWORD = "freshet-secret"


@dataclass
class SecureListeners:
    """The extra listeners of a broker started with `secure=True`."""

    sasl_bootstrap: str  # SASL_PLAINTEXT, SCRAM-SHA-512
    ssl_bootstrap: str  # SSL, server certificate signed by `ca_pem`
    ca_pem: Path


def start_kafka(workdir: Path, port: int | None = None, timeout: float = 90.0,
                secure: bool = False, advertised_port: int | None = None) -> Broker:
    """Start Apache Kafka (single-node KRaft, from scripts/kafka.sh) on 127.0.0.1 and wait
    until it serves metadata. Data lives in `workdir` (reused if already formatted).
    The broker takes `port` .. `port`+3 (PLAINTEXT, SASL, SSL, controller).
    `advertised_port` makes clients reconnect through another port (e.g. a proxy); the
    bootstrap address is then that port too."""
    port = port or free_port(4)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "kafka.log"
    log_file = open(log_path, "ab")
    args = ["bash", str(REPO_ROOT / "scripts" / "kafka.sh"), "run", str(workdir), str(port)]
    if secure:
        args.append("--secure")
    env = dict(os.environ)
    if advertised_port:
        env["KAFKA_ADVERTISED_PORT"] = str(advertised_port)
    process = subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    broker = Broker(f"127.0.0.1:{advertised_port or port}", process, log_path, log_file)
    if secure:
        broker.secure = SecureListeners(
            f"127.0.0.1:{port + 1}", f"127.0.0.1:{port + 2}", workdir / "tls" / "ca.pem"
        )
    try:
        wait_ready(broker, timeout)
    except Exception:
        broker.stop()
        raise
    return broker


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ready(broker: Broker | str, timeout: float = 20.0) -> None:
    """Wait until the first bootstrap address accepts TCP and answers a Metadata request."""
    bootstrap = bootstrap_of(broker)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    # Probe the socket first: librdkafka logs every refused connection to stderr.
    while time.monotonic() < deadline:
        if isinstance(broker, Broker) and not broker.alive():
            raise RuntimeError(
                f"the broker exited with code {broker.process.returncode} during startup;"
                f" log:\n{broker.log_tail()}"
            )
        if _port_open(host.strip("[]"), int(port)):
            try:
                AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
                return
            except KafkaException as e:
                last_error = e
        time.sleep(0.1)
    tail = broker.log_tail() if isinstance(broker, Broker) else ""
    raise TimeoutError(
        f"broker {bootstrap} not ready after {timeout}s (last error: {last_error})"
        + (f"; log:\n{tail}" if tail else "")
    )


# --------------------------------------------------------------------------- topics


def unique_topic(prefix: str = "test") -> str:
    """A topic name no other test (or earlier run against an external broker) uses."""
    prefix = re.sub(r"[^a-zA-Z0-9._-]+", "-", prefix).strip("-")[:100] or "test"
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(broker: Broker | str, name: str, partitions: int = 1, timeout: float = 15.0) -> None:
    """Create `name` with `partitions` partitions (already existing is fine) and wait
    until its metadata shows every partition. Raises if it exists with another count."""
    admin = AdminClient({"bootstrap.servers": bootstrap_of(broker)})
    # replication_factor=-1: the broker's default, so this also works on a real cluster.
    future = admin.create_topics([NewTopic(name, num_partitions=partitions)])[name]
    # .exception(), not try/.result(): a caught exception's traceback would tie the
    # admin client into a reference cycle that outlives the broker and logs errors.
    if not _is_error(future.exception(timeout), KafkaError.TOPIC_ALREADY_EXISTS):
        future.result()

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        # List all topics rather than asking for this one: a Metadata request naming a
        # topic auto-creates it where auto.create.topics.enable is on.
        topic = admin.list_topics(timeout=5).topics.get(name)
        if topic is not None and topic.error is None:
            seen = len(topic.partitions)
            if seen == partitions:
                return
            if seen > partitions:
                break
        time.sleep(0.05)
    raise RuntimeError(f"topic {name}: wanted {partitions} partitions, metadata shows {seen}")


def delete_topic(broker: Broker | str, name: str, timeout: float = 15.0) -> None:
    """Delete `name`; a missing topic is fine."""
    admin = AdminClient({"bootstrap.servers": bootstrap_of(broker)})
    future = admin.delete_topics([name])[name]
    if not _is_error(future.exception(timeout), KafkaError.UNKNOWN_TOPIC_OR_PART):
        future.result()


def wait_topic_gone(broker: Broker | str, name: str, timeout: float = 30.0) -> None:
    """Waits until a deleted topic has left the metadata (deletion completes asynchronously)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_of(broker)})
    deadline = time.monotonic() + timeout
    while name in admin.list_topics(timeout=5).topics:
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} still listed {timeout}s after deletion")
        time.sleep(0.1)


def _is_error(exc: BaseException | None, code: int) -> bool:
    return isinstance(exc, KafkaException) and exc.args[0].code() == code


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    # Through a Consumer: it does not auto-create topics (allow.auto.create.topics=false).
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    return sorted(meta.partitions)


def partitions_of(broker: Broker | str, topic: str) -> list[int]:
    consumer = Consumer(consumer_config(broker))
    try:
        return _partitions(consumer, topic)
    finally:
        consumer.close()


def watermarks(broker: Broker | str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (log start offset, high watermark)}."""
    consumer = Consumer(consumer_config(broker))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in _partitions(consumer, topic)
        }
    finally:
        consumer.close()


def high_watermarks(broker: Broker | str, topic: str) -> dict[int, int]:
    """{partition: high watermark} (the offset the next record will get)."""
    return {p: high for p, (_, high) in watermarks(broker, topic).items()}


def low_watermarks(broker: Broker | str, topic: str) -> dict[int, int]:
    """{partition: log start offset}."""
    return {p: low for p, (low, _) in watermarks(broker, topic).items()}


def count_records(broker: Broker | str, topic: str, timeout: float = 15.0) -> int:
    """How many records every partition of `topic` holds now (reads them all)."""
    consumer = Consumer(consumer_config(broker, **{"enable.partition.eof": True}))
    try:
        parts = _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        count, at_end = 0, set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout}s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            count += 1
        return count
    finally:
        consumer.close()


# --------------------------------------------------------------------------- produce


def encode(data: Any) -> bytes | None:
    """None stays None (a null key, or a tombstone value); bytes pass through;
    str is UTF-8; anything else (dict, list, number, bool) is JSON."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, separators=(",", ":")).encode()


class Delivered(NamedTuple):
    partition: int
    offset: int


class Producer:
    """A synchronous test producer: every send flushes and returns where the record landed.

    >>> with Producer(broker) as p:
    ...     p.send("articles", key="a1", value={"id": "a1", "title": "Hi"})  # Delivered(0, 0)
    ...     p.send("articles", key="a1", value=None)                          # tombstone
    """

    def __init__(self, broker: Broker | str, **config: Any):
        self._producer = _KafkaProducer(
            {"bootstrap.servers": bootstrap_of(broker), **PRODUCER_DEFAULTS, **config}
        )

    def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        partition: int | None = 0,
        headers: dict[str, Any] | list[tuple[str, Any]] | None = None,
        timestamp_ms: int | None = None,
        timeout: float = 15.0,
    ) -> Delivered:
        """Produce one record and wait for it. `partition=None` uses the key partitioner."""
        return self.send_many(
            topic, [dict(key=key, value=value, headers=headers, timestamp_ms=timestamp_ms)],
            partition=partition, timeout=timeout,
        )[0]

    def send_many(
        self,
        topic: str,
        records: Iterable[dict[str, Any] | tuple[Any, Any]],
        partition: int | None = 0,
        timeout: float = 15.0,
    ) -> list[Delivered]:
        """Produce records in order, flush once, return their coordinates in order.
        A record is a `(key, value)` tuple or a dict with `value` and optional `key`,
        `partition`, `headers`, `timestamp_ms`."""
        results: list[Delivered | KafkaError | None] = []

        def on_delivery(index: int):
            def callback(err: KafkaError | None, msg) -> None:
                results[index] = err if err is not None else Delivered(msg.partition(), msg.offset())
            return callback

        for record in records:
            if isinstance(record, tuple):
                record = {"key": record[0], "value": record[1]}
            kwargs: dict[str, Any] = {
                "key": encode(record.get("key")),
                "value": encode(record["value"]),
                "on_delivery": on_delivery(len(results)),
            }
            part = record.get("partition", partition)
            if part is not None:
                kwargs["partition"] = part
            if record.get("headers"):
                headers = record["headers"]
                items = headers.items() if isinstance(headers, dict) else headers
                kwargs["headers"] = [(k, encode(v)) for k, v in items]
            if record.get("timestamp_ms") is not None:
                kwargs["timestamp"] = record["timestamp_ms"]
            results.append(None)
            self._producer.produce(topic, **kwargs)

        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} record(s) to {topic} not delivered in {timeout}s")
        failed = [r for r in results if not isinstance(r, Delivered)]
        if failed:
            raise KafkaException(failed[0])
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._producer.flush(5)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- consume


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes]]

    def json(self) -> Any:
        return None if self.value is None else json.loads(self.value)


def consumer_config(broker: Broker | str, **extra: Any) -> dict[str, Any]:
    # Partitions are assigned explicitly (as freshet does), so the group is never joined.
    return {
        "bootstrap.servers": bootstrap_of(broker),
        "group.id": "freshet-tests",
        "enable.auto.commit": False,
        **extra,
    }


def consume(
    broker: Broker | str, topic: str, count: int, timeout: float = 15.0
) -> list[Record]:
    """Read `count` records from every partition of `topic`, starting at the beginning.
    Order is per partition; across partitions it is arbitrary."""
    consumer = Consumer(consumer_config(broker))
    try:
        # Same consumer for metadata and assign: assigning before it knows the leaders
        # makes librdkafka retry the OFFSET_BEGINNING lookup on a 500 ms timer.
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in _partitions(consumer, topic)]
        )
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            records.append(
                Record(
                    msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                    msg.timestamp()[1], list(msg.headers() or []),
                )
            )
        if len(records) < count:
            raise TimeoutError(f"got {len(records)} of {count} records from {topic} in {timeout}s")
        return records
    finally:
        consumer.close()

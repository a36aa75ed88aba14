"""The transport floor: produce → consume latency of a plain librdkafka consumer.

Runs in its own process (spawned, not forked: librdkafka must not be forked), so the
harness's producer and probes, which share one Python interpreter, never delay it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time


def _consume(brokers: str, topic: str, prefix: str, fetch_wait_ms: int, ready, stop, out) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-floor", "enable.auto.commit": False,
                  "fetch.wait.max.ms": fetch_wait_ms})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
              for p in parts])
    c.poll(0.5)
    ready.set()
    latencies: list[float] = []
    needle = prefix.encode()
    while not stop.is_set():
        msg = c.poll(0.05)
        if msg is None or msg.error() or not (msg.key() or b"").startswith(needle):
            continue
        latencies.append(time.time() * 1000.0 - json.loads(msg.value())["produced_at"])
    c.close()
    out.put(latencies)


class FloorConsumer:
    """Start before producing records whose keys start with `prefix`; `finish()` returns
    each one's produce → consume latency in ms. `fetch_wait_ms` is the consumer's
    fetch.wait.max.ms (freshet ships 10; librdkafka's default is 500)."""

    def __init__(self, brokers: str, topic: str, prefix: str, fetch_wait_ms: int = 10):
        ctx = mp.get_context("spawn")
        self.ready, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.process = ctx.Process(target=_consume,
                                   args=(brokers, topic, prefix, fetch_wait_ms, self.ready, self.stop, self.out),
                                   daemon=True)
        self.process.start()
        if not self.ready.wait(30):
            raise RuntimeError("floor consumer did not start")

    def finish(self) -> list[float]:
        self.stop.set()
        latencies = self.out.get(timeout=60)
        self.process.join(10)
        return latencies

"""Notification delay of subscriptions: from a record becoming searchable to the
`notifications/resources/updated` that announces it, at a steady produce rate.

    .venv/bin/python bench/notify_delay.py [--rate 100] [--seconds 30] [--every 10]

Starts Apache Kafka (scripts/kafka.sh; or uses FRESHET_TEST_BROKERS) and `freshet serve`
($FRESHET_BIN, default target/release/freshet), subscribes one MCP client (Python SDK,
2025-11-25 session over streamable HTTP) to the collection's change feed and to every
`--every`-th document, then produces `--rate` new documents per second for `--seconds`.

Per notification it records, from the notification's `_meta` and the client's clock:
- searchable → sent: `freshet/sent_at` − `freshet/indexed_at` (the server's own delay);
- searchable → received: client receive time − `freshet/indexed_at`;
- produced → received (document subscriptions): receive time − the record's produce time.
Writes bench/results/notify-<time>.json and prints percentiles and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))

import httpx2  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

import kafka_util  # noqa: E402
from freshet_util import FreshetServer, freshet_bin, write_config  # noqa: E402

FEED = "freshet://bench/changes"


def ms_of(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    s = sorted(values)
    pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))], 2)  # noqa: E731
    return {"n": len(s), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(s[-1], 2)}


class Notes:
    """Every `notifications/resources/updated`: (uri, _meta, received at ms)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict, float]] = []

    async def __call__(self, message) -> None:
        message = getattr(message, "root", message)
        if getattr(message, "method", None) == "notifications/resources/updated":
            received = time.time() * 1000
            meta = getattr(message.params, "meta", None) or {}
            if not isinstance(meta, dict):
                meta = meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(meta)
            self.seen.append((message.params.uri, meta, received))


def produce(brokers: str, topic: str, rate: float, seconds: float, produced: dict[str, float]) -> None:
    """New documents at a steady rate, the way an application produces (default batching)."""
    p = Producer({"bootstrap.servers": brokers})
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        doc_id = f"d{i}"
        at = time.time() * 1000
        produced[doc_id] = at
        doc = {"id": doc_id, "body": f"event {i} for the notification benchmark", "produced_at": int(at)}
        p.produce(topic, key=doc_id, value=json.dumps(doc).encode())
        p.poll(0)
        wait = start + (i + 1) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    p.flush(10)


async def run(args, brokers: str, work: Path) -> dict:
    topic = kafka_util.unique_topic("notify")
    kafka_util.create_topic(brokers, topic, partitions=1)
    config = write_config(work / "freshet.toml",
                          {"kafka": {"brokers": brokers}, "server": {"data_dir": str(work / "data")}},
                          [{"name": "bench", "topics": [topic], "format": "json", "id_field": "id",
                            "text_fields": ["body"], "event_time_field": "produced_at"}])
    server = FreshetServer(config, work)
    notes = Notes()
    produced: dict[str, float] = {}
    try:
        server.wait_ready()
        watched = [f"d{i}" for i in range(0, int(args.rate * args.seconds), args.every)]
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=600)) as http:
            async with Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy",
                              message_handler=notes) as client:
                await client.subscribe_resource(FEED)
                for doc_id in watched:
                    await client.subscribe_resource(f"freshet://bench/{doc_id}")
                load_before = os.getloadavg()
                producer = threading.Thread(target=produce, args=(brokers, topic, args.rate, args.seconds, produced))
                producer.start()
                while producer.is_alive():
                    await asyncio.sleep(0.1)
                # Let the last notifications arrive.
                deadline = time.monotonic() + 10
                want = {f"freshet://bench/{d}" for d in watched}
                while time.monotonic() < deadline and not want <= {u for u, _, _ in notes.seen}:
                    await asyncio.sleep(0.1)
                load_after = os.getloadavg()
    finally:
        server.stop()
    sent, received, end_to_end = [], [], []
    for uri, meta, at in notes.seen:
        if "freshet/indexed_at" not in meta:
            continue
        indexed = ms_of(meta["freshet/indexed_at"])
        if uri == FEED:
            sent.append(ms_of(meta["freshet/sent_at"]) - indexed)
            received.append(at - indexed)
        else:
            doc_id = uri.rsplit("/", 1)[1]
            if doc_id in produced:
                end_to_end.append(at - produced[doc_id])
    return {
        "rate_per_s": args.rate, "seconds": args.seconds, "records": len(produced),
        "feed_notifications": len(sent), "document_subscriptions": len(watched),
        "document_notifications": len(end_to_end),
        "searchable_to_sent_ms": percentiles(sent),
        "searchable_to_received_ms": percentiles(received),
        "produced_to_received_ms": percentiles(end_to_end),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--every", type=int, default=10, help="subscribe to every n-th document")
    args = ap.parse_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = ROOT / ".tools" / "bench" / f"notify-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("FRESHET_TEST_BROKERS", "").strip()
    broker = None if external else kafka_util.start_kafka(work / "kafka")
    try:
        brokers = external or broker.bootstrap
        result = asyncio.run(run(args, brokers, work))
    finally:
        if broker is not None:
            broker.stop()
    result.update({
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "binary": str(freshet_bin()), "cpus": os.cpu_count(),
        "broker": "external" if external else "Apache Kafka (scripts/kafka.sh, single node)",
    })
    out = ROOT / "bench" / "results" / f"notify-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streams the sample knowledge base into a Kafka topic: an initial load, then a steady mix of
updates, new documents and deletes (tombstones) at a chosen rate.

    python examples/producer.py --brokers 127.0.0.1:9092 --topic articles --docs 200 --rate 5 --duration 60
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_data import embed, make_doc  # noqa: E402


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="articles")
    ap.add_argument("--docs", type=int, default=200, help="documents in the initial load")
    ap.add_argument("--rate", type=float, default=5.0, help="changes per second after the load (0: stop after it)")
    ap.add_argument("--duration", type=float, default=0, help="seconds of changes (0: until interrupted)")
    ap.add_argument("--dim", type=int, default=64, help="vector dimensions")
    ap.add_argument("--delete-share", type=float, default=0.1, help="share of changes that are deletes")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    revisions: dict[int, int] = {}

    def send(i: int, deleted: bool = False) -> None:
        key = f"doc-{i:04d}"
        if deleted:
            producer.produce(args.topic, key=key, value=None)
            revisions.pop(i, None)
            return
        rev = revisions.get(i, -1) + 1
        revisions[i] = rev
        doc = make_doc(i, rng, rev)
        doc["updated_at"] = now_iso()
        doc["embedding"] = embed(f"{doc['title']} {doc['body']}", args.dim)
        producer.produce(args.topic, key=key, value=json.dumps(doc).encode())

    for i in range(args.docs):
        send(i)
        producer.poll(0)
    producer.flush(10)
    print(f"loaded {args.docs} documents into {args.topic}", file=sys.stderr, flush=True)
    if args.rate <= 0:
        return 0

    next_id = args.docs
    deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    interval = 1.0 / args.rate
    changes = 0
    try:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < args.delete_share and revisions:
                send(rng.choice(list(revisions)), deleted=True)
            elif roll < args.delete_share + 0.2:
                send(next_id)
                next_id += 1
            elif revisions:
                send(rng.choice(list(revisions)))
            changes += 1
            producer.poll(0)
            if changes % max(1, int(args.rate * 10)) == 0:
                print(f"streamed {changes} changes", file=sys.stderr, flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    producer.flush(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

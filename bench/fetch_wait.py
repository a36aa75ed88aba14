"""Freshness on Apache Kafka with the consumer's fetch wait at librdkafka's default (500 ms)
and lowered (freshet's default, 10 ms): the plain-consumer floor and freshet side by side.

    .venv-bench/bin/python bench/fetch_wait.py [--rates 100,1000] [--seconds 20] [--waits 500,10]

Needs the release binary (cargo build --release) and .venv-bench (bench/run.sh makes it).
Writes bench/results/fetchwait-<time>.json and prints one line per (wait, rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))

import kafka_util  # noqa: E402
from freshet_util import FreshetServer, write_config  # noqa: E402
from harness import (DIM, Corpus, FreshetTarget, apply_stage_totals, freshet_stamps, git_commit,  # noqa: E402
                     phase_freshness, print_freshness, produce_all, stage_means)


def config(work: Path, brokers: str, topics: list[str], fetch_wait_ms: int) -> Path:
    collection = {"name": "bench", "topics": topics, "format": "json", "id_field": "id", "title_field": "title",
                  "text_fields": ["title", "body"], "event_time_field": "produced_at", "vector_field": "embedding",
                  "embedding": {"provider": "precomputed", "dimensions": DIM}}
    return write_config(work / f"fetch{fetch_wait_ms}.toml",
                        {"kafka": {"brokers": brokers, "properties": {"fetch.wait.max.ms": str(fetch_wait_ms)}},
                         "snapshot": {"interval_ms": 0},
                         "server": {"data_dir": str(work / f"data-{fetch_wait_ms}")}},
                        [collection])


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--waits", default="500,10", help="fetch.wait.max.ms values to compare")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--docs", type=int, default=2000, help="backlog indexed before measuring")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    waits = [int(w) for w in args.waits.split(",")]
    work = ROOT / ".tools" / "bench" / ("fetchwait-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    work.mkdir(parents=True, exist_ok=True)
    broker = kafka_util.start_kafka(work / "kafka")
    result = {"commit": git_commit(), "broker": "Apache Kafka (scripts/kafka.sh, single node)",
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": args.seconds, "runs": []}
    corpus = Corpus(args.docs, "clustered")
    try:
        for wait in waits:
            backlog = f"backlog{wait}"
            kafka_util.create_topic(broker, backlog, partitions=2)
            produce_all(broker.bootstrap, backlog, corpus, args.docs)
            topics = {rate: f"fresh{wait}x{rate}" for rate in rates}
            for name in topics.values():
                kafka_util.create_topic(broker, name, partitions=2)
            server = FreshetServer(config(work, broker.bootstrap, [backlog, *topics.values()], wait), work,
                                   env={"FRESHET_LOG": "warn"})
            target = FreshetTarget(server, "bench")
            try:
                server.wait_ready(timeout=600)
                for rate in rates:
                    before, clock = await apply_stage_totals(target), asyncio.get_running_loop().time()
                    fr = await phase_freshness(broker.bootstrap, topics[rate], corpus, rate, args.seconds,
                                               {"polled_get_document_ms": target.has_document},
                                               floor_fetch_wait_ms=wait)
                    fr["apply_stages"] = stage_means(before, await apply_stage_totals(target),
                                                     asyncio.get_running_loop().time() - clock)
                    fr.update(await freshet_stamps(target, fr["ids"]))
                    del fr["ids"]
                    fr["fetch.wait.max.ms"] = wait
                    print_freshness(f"fetch.wait.max.ms={wait}", fr)
                    result["runs"].append(fr)
            finally:
                await target.aclose()
                server.stop()
    finally:
        broker.stop()
    out = ROOT / "bench" / "results" / f"fetchwait-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

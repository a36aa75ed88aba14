"""Freshness of two freshet binaries back to back on one broker: an A/B under the same load,
for changes to the ingest path (issue 18). Each round runs every binary in turn, in memory
(`snapshot.interval_ms = 0`, as bench/run.sh's freshness phase) and/or persisted (the
defaults), and measures the harness's freshness phase at each rate, side by side with the
plain consumer's floor in the same phase.

    .venv-bench/bin/python bench/freshness_ab.py --bins before=.tools/ab/freshet-before,after=target/release/freshet \
        [--rates 100,1000] [--seconds 20] [--rounds 2] [--modes memory,persisted] [--docs 10000]

With `--latency-seconds N` each binary also serves `bm25` and `hybrid` queries (1 and 4
closed-loop clients, N seconds each) idle and while 200 updates/s arrive, after the
freshness phase.

Writes bench/results/ab-<time>.json and prints one line per (round, binary, mode, rate) with
the load average when it started.
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

import kafka_util  # noqa: E402
from freshet_util import FreshetServer  # noqa: E402
from harness import (Corpus, FreshetTarget, SteadyProducer, freshet_config, freshet_freshness,  # noqa: E402
                     git_commit, latency_matrix, produce_all)

#: `snapshot.interval_ms` per mode: 0 keeps the collection in memory; the default persists it.
MODES = {"memory": 0, "persisted": 30_000}


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bins", required=True, help="name=path,name=path")
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="memory,persisted")
    ap.add_argument("--docs", type=int, default=10_000, help="documents indexed before measuring")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--latency-seconds", type=float, default=0, help="0: no query latency cells")
    ap.add_argument("--load-rate", type=float, default=200, help="updates/s while measuring loaded latency")
    args = ap.parse_args()
    bins = dict(item.split("=", 1) for item in args.bins.split(","))
    rates = [int(r) for r in args.rates.split(",") if r]
    modes = args.modes.split(",")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = ROOT / ".tools" / "bench" / f"ab-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    broker = kafka_util.start_kafka(work / "kafka")
    result = {"commit": git_commit(), "bins": bins, "broker": "Apache Kafka (scripts/kafka.sh, single node)",
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "docs": args.docs,
              "seconds": args.seconds, "runs": []}
    corpus = Corpus(args.docs, "clustered")
    backlog = "backlog"
    kafka_util.create_topic(broker, backlog, partitions=args.partitions)
    produce_all(broker.bootstrap, backlog, corpus, args.docs)
    try:
        for round_no in range(args.rounds):
            for name, path in bins.items():
                for mode in modes:
                    tag = f"r{round_no}{name}{mode}"
                    topics = {rate: f"fresh{tag}x{rate}" for rate in rates}
                    for topic in topics.values():
                        kafka_util.create_topic(broker, topic, partitions=args.partitions)
                    os.environ["FRESHET_BIN"] = str(Path(path).resolve())
                    config = freshet_config(work, broker.bootstrap, [backlog, *topics.values()], tag,
                                            persist_ms=MODES[mode])
                    server = FreshetServer(config, work, env={"FRESHET_LOG": "warn"})
                    target = FreshetTarget(server, tag)
                    try:
                        server.wait_ready(timeout=1800)
                        load = load_average()
                        for fr in await freshet_freshness(target, broker.bootstrap, backlog, topics.get, corpus,
                                                          rates, args.seconds, f"{name} {mode} round {round_no}"):
                            fr.update({"bin": name, "mode": mode, "round": round_no, "load_average": load})
                            result["runs"].append(fr)
                            print(f"  load average at start {load}", flush=True)
                        if args.latency_seconds:
                            result.setdefault("latency", []).extend(
                                await latency_cells(args, broker, backlog, corpus, target, name, mode, round_no))
                    finally:
                        await target.aclose()
                        server.stop()
    finally:
        broker.stop()
    out = ROOT / "bench" / "results" / f"ab-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


async def latency_cells(args, broker, topic: str, corpus: Corpus, target: FreshetTarget, name: str, mode: str,
                        round_no: int) -> list[dict]:
    """Idle, then loaded (`args.load_rate` updates/s to `topic`) query latency rows."""
    rows = []
    for loaded in (0, args.load_rate):
        steady = SteadyProducer(broker.bootstrap, topic, corpus, args.docs, loaded) if loaded else None
        if steady:
            steady.start()
        load = load_average()
        try:
            cells = latency_matrix(lambda m, c: target.latency(corpus, m, c, args.latency_seconds),
                                   ["bm25", "hybrid"], [1, 4], f"{name} {mode} round {round_no}",
                                   loaded_rate=loaded)
        finally:
            if steady:
                steady.stop_flag.set()
                steady.join()
        for row in cells:
            row.update({"bin": name, "mode": mode, "round": round_no, "load_average": load})
        rows += cells
    return rows


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

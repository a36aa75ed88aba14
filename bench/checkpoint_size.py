"""Checkpoint size per interval (issue 14, item 4) on a data_dir a `bench/run.sh` run left.

    .venv-bench/bin/python bench/checkpoint_size.py .tools/bench/<run> [SECONDS] [DOCS]

Restarts that run's broker and freshet (its `bench.toml`, release binary), lets a producer
update documents at 200/s for SECONDS (default 30), and divides the bytes freshet wrote
(`/proc/<pid>/io`) and the data_dir's growth by the checkpoints taken meanwhile
(`freshet_apply_stage_seconds_count{stage="checkpoint"}`). Prints one JSON line."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
import httpx
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import kafka_util
from harness import SteadyProducer, Corpus
run = Path(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
docs = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
toml = (run / "bench.toml").read_text()
port = int(re.search(r'brokers = "127.0.0.1:(\d+)"', toml).group(1))
data = Path(re.search(r'data_dir = "([^"]+)"', toml).group(1))
cfg = run / "checkpoint-size.toml"; cfg.write_text(toml.replace('[server]\n', '[server]\nhttp_addr = "127.0.0.1:18556"\n'))
broker = kafka_util.start_kafka(run / "kafka", port)
binary = os.environ.get("FRESHET_BIN", str(ROOT / "target" / "release" / "freshet"))
proc = subprocess.Popen([binary, "serve", "--config", str(cfg)],
                        stdout=open(run / "checkpoint-size.log", "w"), stderr=subprocess.STDOUT)
def ready():
    try: return httpx.get("http://127.0.0.1:18556/readyz").status_code == 200
    except Exception: return False
def metric(name, stage):
    t = httpx.get("http://127.0.0.1:18556/metrics").text
    for line in t.splitlines():
        if line.startswith(name) and f'stage="{stage}"' in line: return float(line.split()[-1])
    return 0.0
def written(): return int(re.search(r"write_bytes: (\d+)", Path(f"/proc/{proc.pid}/io").read_text()).group(1))
def du(): return sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
try:
    while not ready(): time.sleep(0.5)
    time.sleep(15)  # graph backlog, first checkpoint after start
    corpus = Corpus(docs)
    c0, w0, d0 = metric("freshet_apply_stage_seconds_count", "checkpoint"), written(), du()
    steady = SteadyProducer(broker.bootstrap, "bench", corpus, docs, 200); steady.start()
    time.sleep(seconds); steady.stop_flag.set(); steady.join()
    time.sleep(3)
    c1, w1, d1 = metric("freshet_apply_stage_seconds_count", "checkpoint"), written(), du()
    n = c1 - c0
    out = {"seconds": seconds, "rate": 200, "checkpoints": n, "bytes_written": w1 - w0,
           "bytes_written_per_checkpoint": (w1 - w0) / max(n, 1), "data_dir_growth": d1 - d0,
           "data_dir_growth_per_checkpoint": (d1 - d0) / max(n, 1), "data_dir_bytes": d1}
    print(json.dumps(out))
finally:
    proc.terminate(); proc.wait(60); broker.stop()
